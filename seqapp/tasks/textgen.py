"""Text generation: a character- or word-level recurrent language model.

Training reads a corpus, splits it by position (train, then validation, then test, so no
window of the held-out text is ever trained on), cuts the training part into windows of
``seq_len`` tokens and learns to predict every next token. Generation is stateful: the
seed is fed once, then one token per step while the recurrent state is carried along.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from seqapp import datafiles, litert, sampling
from seqapp.config import Config, setting
from seqapp.errors import SeqappError
from seqapp.files import COUNT, INTEGER, TEXT, list_of
from seqapp.runs import Run
from seqapp.tasks.base import (
    METRIC,
    RANDOM_SEED,
    TOKENIZER_FIELDS,
    Objective,
    PredictOption,
    Splits,
    Task,
    baseline_metrics,
    figure,
    log,
    split_metrics,
    worst_first,
)
from seqapp.tasks.textgen_model import language_model, step_model
from seqapp.text import (
    END_ID,
    LEVELS,
    PAD_ID,
    SPECIALS,
    START_ID,
    SUBWORD_MODEL_HELP,
    SUBWORD_MODELS,
    SUBWORD_VOCAB_HELP,
    SUBWORD_VOCAB_RANGE,
    SUBWORD_VOCAB_SIZE,
    Tokenizer,
)

DEFAULT_CORPUS = "corpus.txt"
CHUNK = 64  # tokens sampled per compiled call (16 ran at half the steady-state speed at batch 1)
# The text generated after each epoch for TensorBoard (Task.epoch_sample): characters (a quarter as many other
# tokens), two sampler calls of CHUNK; at the default settings about 0.05 s an epoch of about 2 s.
EPOCH_TOKENS, EPOCH_TEMPERATURE = 2 * CHUNK, 0.8


@dataclass
class TextGenDataConfig:
    """Where the corpus comes from and how it is cut into training windows."""

    path: str | None = setting(None, "UTF-8 text file to learn from; null: the bundled corpus")
    text: str | None = setting(None, "an inline corpus used instead of a file (tiny examples); null: read a file")
    level: str = setting("char", "what a token is: one character, one word or punctuation mark, or a "
                         "SentencePiece subword (see data.vocab_size)", choices=LEVELS)
    lower: bool = setting(False, "lowercase the corpus before tokenizing")
    max_vocab: int | None = setting(None, "most tokens in the vocabulary, the 4 special tokens included; "
                                          "null: every token of the training text (level char and word)", min=5)
    vocab_size: int = setting(SUBWORD_VOCAB_SIZE, SUBWORD_VOCAB_HELP, **SUBWORD_VOCAB_RANGE)
    subword_model: str = setting("unigram", SUBWORD_MODEL_HELP, choices=SUBWORD_MODELS)
    seq_len: int = setting(100, "tokens per training window", min=1)
    stride: int | None = setting(None, "tokens between the starts of consecutive windows; "
                                       "null: seq_len (windows side by side)", min=1)
    val_fraction: float = setting(0.05, "share of the corpus, after the training part, used for validation",
                                  min=0.0, max=0.5, high_open=True)
    test_fraction: float = setting(0.05, "share at the end of the corpus held out for testing",
                                   min=0.0, max=0.5, high_open=True)


class TextGen(Task):
    """Next-token language model; ``seqapp generate`` continues a seed text."""

    name: ClassVar[str] = "textgen"
    summary: ClassVar[str] = "language model over characters or words; generate text from a seed"
    DataConfig: ClassVar[type] = TextGenDataConfig
    predict_options: ClassVar[tuple[PredictOption, ...]] = (
        RANDOM_SEED,
        PredictOption("stop", str, "End each text right after the first place its generated part holds this text."),
        PredictOption("no_repeat_ngram", int, "Never repeat an n-gram of N tokens within one output."),
    )
    generates: ClassVar[bool] = True
    preprocessing_fields: ClassVar[dict] = {"tokenizer": TOKENIZER_FIELDS, "seq_len": COUNT,
                                            "unigram_counts": list_of(INTEGER), "default_seed?": TEXT}
    metrics_fields: ClassVar[dict] = {**split_metrics({"loss": METRIC}),
                                      "baseline_unigram?": baseline_metrics("loss")}
    tiny: ClassVar[dict] = {
        "set": ["model.units=16", "model.embedding_dim=8", "data.seq_len=20", "train.batch_size=16"],
        "inputs": ["hello"],
        "options": {"random_seed": 1},
    }

    @classmethod
    def data_values(cls, path: Path) -> dict:
        """``--data`` replaces a template's inline ``data.text`` as well as its path."""
        return {**super().data_values(path), "data.text": None}

    @classmethod
    def validate_config(cls, cfg: Config) -> None:
        if cfg.model.bidirectional:
            raise SeqappError("model.bidirectional=true cannot be used for textgen: a language model "
                              "must not see the future; set model.bidirectional=false")

    # -- data -------------------------------------------------------------------------
    def load_data(self, cfg: Config) -> Splits:
        """The corpus cut by position into train / val / test texts."""
        data = cfg.data
        if data.text is not None:
            if not data.text.strip():
                raise SeqappError("data.text is empty; give some text or a file with data.path / --data")
            text = data.text
        else:
            text = datafiles.read_text(data.path or datafiles.bundled(DEFAULT_CORPUS))
        return split_by_position(text, data.val_fraction, data.test_fraction)

    def fit_preprocessing(self, cfg: Config, splits: Splits) -> dict:
        data = cfg.data
        tokenizer = Tokenizer(data.level, lower=data.lower, subword_model=data.subword_model).fit(
            [splits.train], max_size=data.vocab_size if data.level == "subword" else data.max_vocab)
        train_ids = tokenizer.encode_array(splits.train)
        if len(train_ids) < 2:
            raise SeqappError("the training text has fewer than 2 tokens; give a longer corpus")
        counts = np.bincount(train_ids, minlength=tokenizer.vocab_size)
        return {
            "tokenizer": tokenizer.to_dict(),
            "seq_len": min(cfg.data.seq_len, len(train_ids) - 1),
            "unigram_counts": counts.tolist(),
            "default_seed": default_seed(tokenizer, counts),
        }

    def datasets(self, cfg: Config, prep: dict, splits: Splits) -> tuple[Any, Any]:
        from seqapp.pipeline import make_dataset

        tokenizer = Tokenizer.from_dict(prep["tokenizer"])
        stride = cfg.data.stride or prep["seq_len"]
        x, y = windows(tokenizer.encode_array(splits.train), prep["seq_len"], stride)
        train = make_dataset(x, y, cfg.train.batch_size, shuffle=True, seed=cfg.train.random_seed)
        val_x, val_y = windows(tokenizer.encode_array(splits.val), prep["seq_len"], prep["seq_len"])
        val = make_dataset(val_x, val_y, cfg.train.batch_size, shuffle=False) if len(val_x) else None
        return train, val

    # -- model ------------------------------------------------------------------------
    def build_model(self, cfg: Config, prep: dict) -> Any:
        return language_model(len(prep["tokenizer"]["vocab"]), cfg.model)

    def objective(self, cfg: Config, prep: dict) -> Objective:
        import keras

        return Objective(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))

    # -- evaluation -------------------------------------------------------------------
    def evaluate(self, run: Any, splits: Splits, engine: str = "tf", errors: int = 0) -> dict:
        """Loss, perplexity and bits per token on val and test, beside a unigram baseline; the
        ``errors`` windows of the main split with the highest loss."""
        tokenizer = Tokenizer.from_dict(run.preprocessing["tokenizer"])
        seq_len = run.preprocessing["seq_len"]
        unit = {"char": "bits_per_char", "word": "bits_per_word"}.get(tokenizer.level, "bits_per_token")
        unigram = unigram_log_probs(run.preprocessing["unigram_counts"])
        metrics: dict[str, Any] = {}
        baseline: dict[str, Any] = {}
        held_out = {"val": splits.val, "test": splits.test}
        if not any(len(tokenizer.split(text)) > 1 for text in held_out.values()):
            held_out = {"train": splits.train}  # nothing held out: say so, report on train
        worst: list[dict] = []
        for split, text in held_out.items():
            x, y = windows(tokenizer.encode_array(text), seq_len, seq_len)
            if not len(x):
                continue
            losses = position_losses(run, x, y, engine)
            metrics[split] = loss_figures(float(losses.mean()), unit)
            baseline[split] = loss_figures(float(-unigram[y].mean()), unit)
            if errors:
                worst = worst_windows(tokenizer, x, y, losses, seq_len, errors)
        metrics["baseline_unigram"] = baseline
        parts = {"test": splits.test} if splits.source else {"train": splits.train, "val": splits.val,
                                                              "test": splits.test}
        metrics["tokens"] = {split: len(tokenizer.split(text)) for split, text in parts.items()}
        return {**metrics, "worst": worst} if errors else metrics

    def new_data(self, run: Any, path: Path) -> Splits:
        """The whole text file as the test split."""
        text = datafiles.read_text(path)
        tokens = Tokenizer.from_dict(run.preprocessing["tokenizer"]).split(text)
        if len(tokens) < 2:
            raise SeqappError(f"data file {path} has {len(tokens)} token(s); a language model is scored on the "
                              "tokens that follow others, so give a text of at least 2 tokens")
        return Splits(train="", val="", test=text, source=str(path))

    def format_worst(self, records: list[dict]) -> list[str]:
        return [f"loss {record['loss']:.4f}  at token {record['start']}: {record['text']!r}" for record in records]

    def headline(self, metrics: dict) -> str:
        split = "test" if "test" in metrics else next((s for s in ("val", "train") if s in metrics), None)
        if split is None:
            return ""
        base = metrics.get("baseline_unigram", {}).get(split, {}).get("loss")
        base_text = f" (unigram {base:.3f})" if base is not None else ""
        return f"{split} loss {figure(metrics[split]['loss'], '.3f')}{base_text}"

    # -- generation -------------------------------------------------------------------
    def check_inputs(self, inputs: list[str], stop: str | None = None, no_repeat_ngram: int | None = None,
                     **opts: Any) -> None:
        sampling.check_stops([stop] if isinstance(stop, str) else stop)
        sampling.check_no_repeat_ngram(no_repeat_ngram)

    def predict(self, run: Any, inputs: list[str], **opts: Any) -> Iterator[str]:
        """``seqapp predict`` on a textgen run: each input is a seed to continue."""
        for seed in inputs or [""]:
            yield from generate_texts(run, seed, **opts)

    def generate(self, run: Any, seed: str, **opts: Any) -> Iterator[list[str]]:
        """Stream generation: the seed text first, then per step the text each sample adds."""
        return generate_pieces(run, seed, **opts)

    def engine(self, run: Any, requested: str) -> str:
        return litert.choose(run.path, "step", requested)

    def export(self, run: Any, folder: Path) -> None:
        export_step(run, folder)

    def epoch_sample(self, cfg: Config, prep: dict, splits: Splits) -> Any:
        """A short text generated from the default seed after each epoch, at EPOCH_TEMPERATURE with
        the training's random seed: the same draws every epoch, so the texts differ by the weights
        alone. The step model is built once; each call copies the trained weights into it."""
        run = Run(Path(), cfg, prep)
        step = sampling.StepFunction(step_model(run), jit_compile=False)  # XLA's compiling: 1-2 s, 30 samples' time
        length = EPOCH_TOKENS if prep["tokenizer"]["level"] == "char" else EPOCH_TOKENS // 4

        def sample(model: Any) -> str:
            step.step_model.set_weights(model.get_weights())
            text = generate_texts(run, "", length=length, temperature=EPOCH_TEMPERATURE,
                                  random_seed=cfg.train.random_seed, step=step)[0]
            return "\n".join("    " + line for line in text.split("\n"))  # a Markdown code block: shown as is

        return sample

    def serving_module(self, run: Any) -> Any:
        """``seqapp export``: a seed in, generated text out (see ``textgen_serving``)."""
        from seqapp.tasks.textgen_serving import TextGenServing

        return TextGenServing(run)


def split_by_position(text: str, val_fraction: float, test_fraction: float) -> Splits:
    """Train is the beginning, then validation, then test; each cut moves to a line start."""
    n = len(text)

    def cut(position: float) -> int:
        """Move a cut to just after the next line break (or space) nearby."""
        position = int(position)
        for separator, reach in (("\n", 200), (" ", 50)):
            found = text.find(separator, position, position + reach)
            if found >= 0:
                return found + 1
        return position

    test_start = cut(n * (1 - test_fraction)) if test_fraction else n
    val_start = cut(n * (1 - test_fraction - val_fraction)) if val_fraction else test_start
    return Splits(train=text[:val_start], val=text[val_start:test_start], test=text[test_start:])


def windows(ids: np.ndarray, seq_len: int, stride: int) -> tuple[np.ndarray, np.ndarray]:
    """Inputs ``ids[i : i+seq_len]`` and targets shifted by one, every ``stride`` tokens.

    A text shorter than one window gives a single shorter window (or none below 2 tokens).
    """
    seq_len = min(seq_len, len(ids) - 1)
    if seq_len < 1:
        return np.zeros((0, 1), np.int32), np.zeros((0, 1), np.int32)
    starts = np.arange(0, len(ids) - seq_len, stride)
    offsets = np.arange(seq_len)
    x = ids[starts[:, None] + offsets]
    y = ids[starts[:, None] + offsets + 1]
    return x, y


def unigram_log_probs(counts: list[int]) -> np.ndarray:
    """Add-one smoothed log-probability of each id (pad, start and end are never targets)."""
    smoothed = np.asarray(counts, np.float64) + 1
    smoothed[[PAD_ID, START_ID, END_ID]] = 0
    with np.errstate(divide="ignore"):
        return np.log(smoothed / smoothed.sum())


def default_seed(tokenizer: Tokenizer, counts: np.ndarray) -> str:
    """What ``generate`` starts from when no seed is given: a line break if the corpus has
    them, else its most frequent token."""
    if "\n" in tokenizer.index:
        return "\n"
    return tokenizer.decode([len(SPECIALS) + int(np.argmax(counts[len(SPECIALS):]))])


def loss_figures(loss: float, unit: str) -> dict:
    """Loss in nats per token, perplexity and bits per token."""
    return {"loss": round(loss, 5), "perplexity": round(math.exp(min(loss, 700)), 4),
            unit: round(loss / math.log(2), 5)}


def position_losses(run: Any, x: np.ndarray, y: np.ndarray, engine: str = "tf") -> np.ndarray:
    """The next-token cross-entropy (nats) at every position of the windows ``x`` (targets ``y``),
    each window read from a zero state: with the Keras model (``tf``), or token by token with the
    run's LiteRT step graph (``litert``, no TensorFlow)."""
    if engine == "litert":
        return litert_position_losses(step_function(run, "litert"), x, y)
    return keras_position_losses(run.model, x, y)


def mean_cross_entropy(model: Any, x: np.ndarray, y: np.ndarray, batch_size: int = 256) -> float:
    """Mean next-token cross-entropy (nats) of ``model`` over all positions of ``x``."""
    return float(keras_position_losses(model, x, y, batch_size).mean())


def keras_position_losses(model: Any, x: np.ndarray, y: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """:func:`position_losses` with the Keras language model, ``batch_size`` windows a call."""
    import tensorflow as tf

    parts = []
    for start in range(0, len(x), batch_size):
        logits = model(x[start:start + batch_size], training=False)
        parts.append(np.asarray(tf.nn.sparse_softmax_cross_entropy_with_logits(
            labels=y[start:start + batch_size], logits=logits), np.float64))
    return np.concatenate(parts)


def litert_position_losses(step: litert.StepGraph, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """:func:`position_losses` on the LiteRT step graph: one token a call (the graph's shape), the
    state carried; the interpreter is driven directly, as this loop runs once per token."""
    graph = step.graph
    interpreter = graph.interpreter
    token_at = graph.inputs[step.token_name]["index"]
    state_at = [graph.inputs[name]["index"] for name in step.state_names]
    logits_at, *new_state_at = [graph.output_index[name] for name in graph.outputs]
    losses = np.zeros(x.shape, np.float64)
    tokens = x.astype(np.int32)[:, :, None, None]
    for row in range(len(x)):
        for index, state in zip(state_at, step.zero_states(1)):
            interpreter.set_tensor(index, state)
        logits = []
        for token in tokens[row]:
            interpreter.set_tensor(token_at, token)
            interpreter.invoke()
            logits.append(interpreter.get_tensor(logits_at)[0])
            for index, new_index in zip(state_at, new_state_at):
                interpreter.set_tensor(index, interpreter.get_tensor(new_index))
        logits = np.asarray(logits, np.float64)
        top = logits.max(axis=1, keepdims=True)
        log_norm = top[:, 0] + np.log(np.exp(logits - top).sum(axis=1))
        losses[row] = log_norm - logits[np.arange(len(logits)), y[row]]
    return losses


def worst_windows(tokenizer: Tokenizer, x: np.ndarray, y: np.ndarray, losses: np.ndarray, stride: int,
                  count: int) -> list[dict]:
    """``evaluate --errors``: the ``count`` windows with the highest mean loss, worst first: where
    each starts (in tokens), its loss and its text."""
    means = losses.mean(axis=1)
    return [{"start": int(i) * stride, "loss": round(float(means[i]), 5),
             "text": tokenizer.decode([*x[i].tolist(), int(y[i][-1])])} for i in worst_first(means.tolist(), count)]


def step_function(run: Any, engine: str = "tf") -> Any:
    """The run's single-step model: compiled Keras sharing the trained weights (``tf``), or the
    LiteRT graph saved with the run (``litert``, see :mod:`seqapp.litert`). Built once per run
    object, so that later calls in the same process reuse its traced graphs."""
    key = ("textgen.step", engine)
    if key not in run.cache:
        if engine == "litert":
            run.cache[key] = litert.StepGraph(litert.load(run.path, "step"))
        else:
            run.cache[key] = sampling.StepFunction.sharing_weights(step_model(run), run.model)
    return run.cache[key]


def export_step(run: Any, folder: Path) -> None:
    """Save the single-step model as a LiteRT graph in ``folder`` (batch 1, one token a step)."""
    import tensorflow as tf

    model = step_model(run)
    model.set_weights(run.model.get_weights())
    sizes = [int(state.shape[-1]) for state in model.inputs[1:]]
    specs = [tf.TensorSpec([1, 1], tf.int32, name="tokens")]
    specs += [tf.TensorSpec([1, size], tf.float32, name=f"state_{i}") for i, size in enumerate(sizes)]
    litert.export(folder, "step", model, specs)


def generate_tokens(
    run: Any,
    seed: str,
    length: int = 300,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    num_samples: int = 1,
    random_seed: int | None = None,
    step: sampling.StepFunction | None = None,
    engine: str = "tf",
    no_repeat_ngram: int | None = None,
) -> Iterator[list[str | None]]:
    """Yield ``length`` steps of new tokens (a list with one token per sample).

    The seed is encoded (unknown tokens become ``<unk>``, with a warning), fed through the
    network once, and then each sampled token is fed back alone while the state is
    carried; the whole window is never re-run. Tokens are sampled ``CHUNK`` at a time in
    one compiled call and yielded one step at a time; with ``no_repeat_ngram``, one at a
    time (see :func:`tokens_without_repeats`, where a sample may end early: None).
    """
    sampling.check_options(temperature, top_k, top_p)
    sampling.check_counts(length, num_samples)
    sampling.check_no_repeat_ngram(no_repeat_ngram)
    tokenizer = Tokenizer.from_dict(run.preprocessing["tokenizer"])
    seed = seed or run.preprocessing.get("default_seed", "\n")
    unknown = tokenizer.unknown_tokens(seed)
    if unknown:
        shown = ", ".join(repr(token) for token in unknown[:10])
        log.warning(f"seed has {len(unknown)} token(s) not in the vocabulary ({shown}); they are read as <unk>")
    seed_ids = tokenizer.encode(seed)
    if not seed_ids:
        raise SeqappError("the seed text has no tokens after standardisation; give another --seed")
    if random_seed is None:
        random_seed = int(np.random.default_rng().integers(2**31 - 1))
    step = step or step_function(run, engine)
    tokens = np.tile(np.asarray(seed_ids, np.int32), (num_samples, 1))
    logits, states = step(tokens, step.zero_states(num_samples))
    if no_repeat_ngram:
        sampler = step.sampler(1, temperature, top_k, top_p, banned=tokenizer.never_generated())
        yield from tokens_without_repeats(sampler, logits, states, length, random_seed, no_repeat_ngram, tokenizer)
        return
    chunk = max(1, min(CHUNK, length))
    sampler = step.sampler(chunk, temperature, top_k, top_p, banned=tokenizer.never_generated())
    for start in range(0, length, chunk):
        ids, logits, states = sampler(logits, states, np.int64(random_seed), np.int64(start))
        for row in np.asarray(ids)[: length - start]:
            yield [tokenizer.vocab[i] for i in row]


def tokens_without_repeats(sampler: Any, logits: Any, states: Any, length: int, random_seed: int, size: int,
                           tokenizer: Tokenizer) -> Iterator[list[str | None]]:
    """``length`` steps of new tokens drawn one compiled call at a time, each after the logits of
    the tokens that would repeat an n-gram of ``size`` generated tokens (seed excluded) are set to
    -inf. Step ``i`` draws with ``(random_seed, i)``. A sample left with no token to draw ends:
    None from then on (all ended: the stream ends)."""
    samples = len(np.asarray(logits))
    produced = np.zeros((samples, 0), np.int32)
    ended = np.zeros(samples, bool)
    for position in range(length):
        logits = np.array(logits, np.float32)
        mask = sampling.repeated_ngram_mask(produced, size, logits.shape[-1])
        mask[:, :len(SPECIALS)] = True
        ended |= mask.all(axis=-1)
        if ended.all():
            return
        logits[mask & ~ended[:, None]] = -np.inf
        ids, logits, states = sampler(logits, states, np.int64(random_seed), np.int64(position))
        ids = np.asarray(ids)[0]
        produced = np.concatenate([produced, ids[:, None].astype(np.int32)], axis=1)
        yield [None if end else tokenizer.vocab[i] for i, end in zip(ids, ended)]


def generate_pieces(run: Any, seed: str, stop: str | Sequence[str] | None = None, **opts: Any) -> Iterator[list[str]]:
    """Stream text: first the seed as given, then per step the text each sample adds. With
    ``stop`` (a text or several), a sample ends right after the first place its generated text
    (seed excluded) holds one of them; the stream ends when every sample has."""
    tokenizer = Tokenizer.from_dict(run.preprocessing["tokenizer"])
    seed_text = seed or run.preprocessing.get("default_seed", "\n")
    num_samples = opts.get("num_samples", 1)
    stops = [stop] if isinstance(stop, str) else list(stop or [])
    sampling.check_stops(stops)
    yield [seed_text] * num_samples
    previous = (tokenizer.split(seed_text)[-1:] or [None]) * num_samples
    generated, stopped = [""] * num_samples, [False] * num_samples
    for step_tokens in generate_tokens(run, seed, **opts):
        pieces = ["" if token is None or done else tokenizer.piece(prev, token)
                  for prev, token, done in zip(previous, step_tokens, stopped)]
        if stops:
            for i, piece in enumerate(pieces):
                if piece:
                    pieces[i], stopped[i] = cut_at_stop(generated[i], piece, stops)
                    generated[i] += pieces[i]
        yield pieces
        previous = [prev if token is None else token for prev, token in zip(previous, step_tokens)]
        if stops and all(stopped):
            return


def cut_at_stop(before: str, piece: str, stops: Sequence[str]) -> tuple[str, bool]:
    """``piece`` up to the end of the first stop text that ``before + piece`` holds (``before``
    holds none), and whether one was found."""
    text = before + piece
    ends = [found + len(stop) for stop in stops
            if (found := text.find(stop, max(0, len(before) - len(stop) + 1))) >= 0]
    if not ends:
        return piece, False
    return text[len(before):min(ends)], True


def generate_texts(run: Any, seed: str, **opts: Any) -> list[str]:
    """Whole generated texts (seed included), one per sample."""
    texts = [""] * opts.get("num_samples", 1)
    for pieces in generate_pieces(run, seed, **opts):
        texts = [text + piece for text, piece in zip(texts, pieces)]
    return texts
