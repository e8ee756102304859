"""The textgen network: a language model, and its single-step twin for generation.

Used by the task (training, sampling, LiteRT) and by its export (:mod:`seqapp.tasks.textgen_serving`).
"""

from __future__ import annotations

from typing import Any

from seqapp.layers import apply_stack, output_head, recurrent_stack, stateful_step


def language_model(vocab_size: int, model_cfg: Any, step: bool = False) -> Any:
    """Embedding -> recurrent stack -> Dense logits over the vocabulary.

    With ``step=True`` the same architecture takes the recurrent states as extra inputs
    and returns the last position's logits and the new states: the single-step model
    for stateful generation. Both variants create their layers in the same order, so
    ``step_model.set_weights(model.get_weights())`` shares the trained weights.
    """
    import keras

    tokens = keras.Input((None,), dtype="int32", name="tokens")
    unit_normal = keras.initializers.RandomNormal(stddev=1.0)  # Keras's own +-0.05 starts the LSTM on near-zero
    x = keras.layers.Embedding(vocab_size, model_cfg.embedding_dim, embeddings_initializer=unit_normal,
                               name="embedding")(tokens)  # inputs: 2.12 -> 1.81 val loss after 60 s (docs/tasks.md)
    stack = recurrent_stack(model_cfg.cell, model_cfg.units, model_cfg.layers, model_cfg.dropout,
                            return_sequences=True, return_state=step, name="lm")
    head = output_head(vocab_size, name="next_token_logits")
    if not step:
        x, _ = apply_stack(stack, x)
        return keras.Model(tokens, head(x), name="language_model")
    x, state_inputs, states = stateful_step(stack, x, model_cfg.cell, model_cfg.units, model_cfg.layers)
    return keras.Model([tokens, *state_inputs], [head(x[:, -1, :]), *states], name="language_model_step")


def step_model(run: Any) -> Any:
    """A fresh single-step language model for the run's settings (weights not yet copied)."""
    return language_model(len(run.preprocessing["tokenizer"]["vocab"]), run.config.model, step=True)
