"""The translate task's network: an encoder-decoder, with optional attention, as Keras layers.

All layers are created once (:func:`seq2seq_layers`) and wired into three graphs that
share them: the teacher-forcing training model, the encoder, and the one-step decoder
that :class:`seqapp.tasks.translate_decoding.Translator` drives token by token. The last
two are also saved as LiteRT graphs (:func:`export_litert`) for prediction without TensorFlow.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from seqapp import litert
from seqapp.layers import apply_stack, flatten, output_head, recurrent_stack, state_inputs, state_size
from seqapp.text import PAD_ID


def decoder_units(model_cfg: Any) -> int:
    """The decoder's width: the encoder's output width (doubled when bidirectional)."""
    return model_cfg.units * (2 if model_cfg.bidirectional else 1)


def memory_count(model_cfg: Any) -> int:
    """How many arrays the encoder hands the decoder for attention: its outputs, and the
    attention keys where the attention projects them (Bahdanau, Luong "general"); 0 without."""
    if model_cfg.attention == "none":
        return 0
    return 1 if model_cfg.attention == "luong" and model_cfg.luong_score == "dot" else 2


def seq2seq_layers(model_cfg: Any, source_vocab: int, target_vocab: int) -> dict:
    """Every layer of the encoder-decoder, created once and shared by all its graphs.

    The training graph (teacher forcing) and the inference graphs (encoder, decoder step)
    are wired from the same layers, so they always compute the same thing.
    """
    import keras

    units = decoder_units(model_cfg)
    layers: dict[str, Any] = {
        "source_embedding": keras.layers.Embedding(source_vocab, model_cfg.embedding_dim, mask_zero=True,
                                                   name="source_embedding"),
        "encoder": recurrent_stack(model_cfg.cell, model_cfg.units, model_cfg.layers, model_cfg.dropout,
                                   model_cfg.bidirectional, return_sequences=True, return_state=True, name="encoder"),
        "target_embedding": keras.layers.Embedding(target_vocab, model_cfg.embedding_dim, mask_zero=True,
                                                   name="target_embedding"),
        "decoder": recurrent_stack(model_cfg.cell, units, model_cfg.layers, model_cfg.dropout,
                                   return_sequences=True, return_state=True, name="decoder"),
    }
    if model_cfg.bidirectional:
        layers["merge_states"] = [keras.layers.Concatenate(name=f"merge_state_{i}")
                                  for i in range(model_cfg.layers * state_size(model_cfg.cell))]
    if model_cfg.attention == "luong":
        layers["attention"] = keras.layers.Attention(score_mode="dot", name="luong_attention")
        if model_cfg.luong_score == "general":
            layers["keys"] = keras.layers.Dense(units, use_bias=False, name="attention_keys")
    elif model_cfg.attention == "bahdanau":
        layers["attention"] = keras.layers.AdditiveAttention(name="bahdanau_attention")
        layers["keys"] = keras.layers.Dense(units, use_bias=False, name="attention_keys")
        layers["query"] = keras.layers.Dense(units, use_bias=False, name="attention_query")
    if "attention" in layers:
        layers["join"] = keras.layers.Concatenate(name="context_and_output")
        layers["attentional"] = keras.layers.Dense(units, activation="tanh", name="attentional_output")
    layers["logits"] = output_head(target_vocab, name="logits")
    return layers


def encoder_graph(layers: dict, source: Any) -> tuple[list, list[list]]:
    """Source ids -> (memory for attention: [outputs(, keys)], the decoder's initial states per layer)."""
    x = layers["source_embedding"](source)
    outputs, layer_states = apply_stack(layers["encoder"], x)
    if "merge_states" in layers:
        merges = iter(layers["merge_states"])
        # Bidirectional returns the forward states, then the backward ones: join them pairwise.
        layer_states = [[next(merges)([forward, backward]) for forward, backward in
                         zip(states[: len(states) // 2], states[len(states) // 2:])] for states in layer_states]
    memory = []
    if "attention" in layers:
        memory = [outputs] + ([layers["keys"](outputs)] if "keys" in layers else [])
    return memory, layer_states


def decoder_graph(layers: dict, target: Any, initial_states: list, memory: list, source_mask: Any) -> tuple:
    """Target ids (teacher forcing, or one step) -> (logits, new states per layer, attention weights)."""
    x = layers["target_embedding"](target)
    outputs, states = apply_stack(layers["decoder"], x, initial_states)
    weights = None
    if "attention" in layers:
        values, keys = memory[0], memory[-1]
        query = layers["query"](outputs) if "query" in layers else outputs
        context, weights = layers["attention"]([query, values, keys], mask=[None, source_mask],
                                               return_attention_scores=True)
        outputs = layers["attentional"](layers["join"]([context, outputs]))
    return layers["logits"](outputs), states, weights


def training_model(layers: dict) -> Any:
    """The teacher-forcing model: ``{source, target_in}`` -> logits for every target position."""
    import keras

    source = keras.Input((None,), dtype="int32", name="source")
    target_in = keras.Input((None,), dtype="int32", name="target_in")
    memory, states = encoder_graph(layers, source)
    source_mask = keras.ops.not_equal(source, PAD_ID) if memory else None
    logits, _, _ = decoder_graph(layers, target_in, states, memory, source_mask)
    return keras.Model({"source": source, "target_in": target_in}, logits, name="seq2seq")


def inference_models(layers: dict, model_cfg: Any) -> tuple[Any, Any]:
    """The encoder model and the one-step decoder model, sharing ``layers``."""
    import keras

    units = decoder_units(model_cfg)
    source = keras.Input((None,), dtype="int32", name="source")
    memory, states = encoder_graph(layers, source)
    encoder = keras.Model(source, [*memory, *flatten(states)], name="translate_encoder")

    tokens = keras.Input((None,), dtype="int32", name="tokens")
    memory_inputs = [keras.Input((None, units), name=f"memory_{i}") for i in range(len(memory))]
    mask_inputs = [keras.Input((None,), dtype="bool", name="source_mask")] if memory else []
    initial_states = state_inputs(model_cfg.cell, units, model_cfg.layers)
    logits, new_states, weights = decoder_graph(layers, tokens, initial_states, memory_inputs,
                                                mask_inputs[0] if mask_inputs else None)
    outputs = [logits[:, -1, :], *flatten(new_states)] + ([weights[:, -1, :]] if weights is not None else [])
    step = keras.Model([tokens, *memory_inputs, *mask_inputs, *flatten(initial_states)], outputs,
                       name="translate_decoder_step")
    return encoder, step


LITERT_ENCODER, LITERT_STEP = "translate_encoder", "translate_step"
LITERT_BATCH = 32  # rows (sentences, beam hypotheses) per LiteRT call; see export_litert


def export_litert(encoder: Any, step: Any, folder: Path) -> bool:
    """Save the encoder and the decoder step as LiteRT graphs in ``folder`` (True when both are).

    The interpreter runs builtin ops only, which cannot express a free batch size through
    the masked recurrent layers, so both graphs take LITERT_BATCH rows (one sentence pays
    for 31 filler rows, a few milliseconds; 256 sentences decoded together take 8 calls per
    step, not 256). The source length stays free (resized per call), so a sentence of any length
    gives exactly what TensorFlow gives, padding masked as in training. The step graph
    returns the attention weights too, for ``--attention-plot``. The step graph is written
    last and is the one the engine choice looks for, so a run never has half a translator.
    """
    import tensorflow as tf

    source = tf.TensorSpec([LITERT_BATCH, None], tf.int32, name="source")
    step_specs = [tf.TensorSpec([LITERT_BATCH, *tensor.shape[1:]], tensor.dtype, name=tensor.name)
                  for tensor in step.inputs]
    return litert.export(folder, LITERT_ENCODER, encoder, [source]) and litert.export(folder, LITERT_STEP, step,
                                                                                      step_specs)


def vocab_sizes(prep: dict) -> tuple[int, int]:
    """Source and target vocabulary sizes (specials included)."""
    return len(prep["source_tokenizer"]["vocab"]), len(prep["target_tokenizer"]["vocab"])


def trained_inference_models(run: Any) -> tuple[Any, Any]:
    """The encoder and decoder-step models, sharing the run's trained weights."""
    layers = seq2seq_layers(run.config.model, *vocab_sizes(run.preprocessing))
    training_model(layers).set_weights(run.model.get_weights())
    return inference_models(layers, run.config.model)
