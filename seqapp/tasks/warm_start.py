"""Outside knowledge for a text classifier: pretrained word vectors, or a textgen run.

Two model settings start a classifier from what was learnt elsewhere instead of from random:

- ``model.pretrained_embeddings: FILE``: the embedding rows of the vocabulary's words start
  from a GloVe or word2vec text file (:mod:`seqapp.embeddings` streams it and keeps only
  those words);
- ``model.init_from: RUN``: a word-level textgen run trained on unlabelled text (semi-supervised
  sequence learning, ULMFiT): the embedding rows of the tokens both vocabularies share and
  the recurrent layers' weights are copied. A bidirectional classifier gets them in its
  forward direction; the backward one starts fresh, since the language model only ever read
  text left to right.

Rows no source covers start random with the covered rows' statistics
(:func:`seqapp.embeddings.fill_matrix`); ``model.freeze_embeddings`` keeps the embedding fixed.
The source is read once, when the preprocessing is fitted (the coverage is logged and saved
in preprocessing.json under ``pretrained``); the weights then live in model.keras, so a run
never reads the file or the textgen run again. The cheap checks (:func:`check`) run before
TensorFlow starts.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from seqapp import config, embeddings, runs
from seqapp.errors import SeqappError
from seqapp.files import COUNT, FLAG, INTEGER, TEXT, one_of
from seqapp.layers import is_recurrent
from seqapp.tasks.base import log
from seqapp.text import OOV_ID, SPECIALS

PREP_KEY = "pretrained"
# How the coverage looks in preprocessing.json (optional: runs without outside knowledge lack it).
PRETRAINED_FIELDS = {"kind": one_of("vectors", "textgen_run"), "source": TEXT, "dim": COUNT, "words": INTEGER,
               "found": INTEGER, "frozen": FLAG, "recurrent_layers?": INTEGER}
INIT_FROM = "model.init_from"


@dataclass
class Outside:
    """What a source offers a vocabulary: matched embedding rows, and recurrent weights (init_from)."""

    kind: str
    source: str
    dim: int
    matcher: embeddings.Matcher
    recurrent: list[list[np.ndarray]] = field(default_factory=list)
    unknown: np.ndarray | None = None  # the textgen run's <unk> row


_CACHE: dict[tuple, Outside] = {}  # the last source read, so that rebuilding the model reads it once


# -- checks -----------------------------------------------------------------------------
def validate_settings(cfg: config.Config) -> None:
    """Refuse settings that cannot go together (config only: no file is read)."""
    model, data = cfg.model, cfg.data
    for name in ("pretrained_embeddings", "init_from"):
        if getattr(model, name) == "":
            raise SeqappError(f"model.{name} is empty; give a path, or null for none")
    if model.pretrained_embeddings and model.init_from:
        raise SeqappError("model.pretrained_embeddings and model.init_from both start the embedding; set only one "
                          "of them (the other to null)")
    source = model.pretrained_embeddings or model.init_from
    if model.embedding_dim is None and not source:
        raise SeqappError("model.embedding_dim=null takes the size of model.pretrained_embeddings or "
                          "model.init_from, and neither is set; give a size, e.g. model.embedding_dim=64")
    if model.freeze_embeddings and not source:
        raise SeqappError("model.freeze_embeddings=true keeps pretrained vectors fixed, but neither "
                          "model.pretrained_embeddings nor model.init_from is set; set one, or freeze_embeddings=false")
    if model.pretrained_embeddings and data.level != "word":
        raise SeqappError(f"model.pretrained_embeddings holds word vectors, but data.level={data.level}; "
                          "set data.level=word")


def check_outside_files(cfg: config.Config) -> int | None:
    """The cheap checks of the source a training reads (the file's first lines, the textgen
    run's settings), before TensorFlow starts; its embedding size, or None without a source."""
    model = cfg.model
    if model.pretrained_embeddings:
        path = model.pretrained_embeddings
        dim = embeddings.file_dimension(path)
        if model.embedding_dim is not None and model.embedding_dim != dim:
            raise SeqappError(f"model.embedding_dim={model.embedding_dim} but the vectors in {path} have {dim} "
                              f"dimensions; set model.embedding_dim={dim} or null")
        return dim
    if model.init_from:
        run = textgen_run(model.init_from)
        check_compatible(run, cfg)
        return run.config.model.embedding_dim
    return None


def textgen_run(folder: str) -> runs.Run:
    """The textgen run in ``folder`` (config and preprocessing; its model is loaded on demand)."""
    from seqapp.tasks.textgen import TextGen

    def read_config(path: Path) -> config.Config:
        raw = config.read_yaml(path, what="run config")
        task = config.task_name(raw, f"run config {path}")
        if task != TextGen.name:
            raise SeqappError(f"{path.parent} is a {task} run, not a textgen run; give the folder of a word-level "
                              "textgen run (e.g. seqapp train textgen-words --data TEXT)")
        return config.build(raw, TextGen, source=f"run config {path}")

    try:
        return runs.load(Path(folder), read_config, lambda _task: TextGen.schema())
    except SeqappError as exc:
        raise SeqappError(f"{INIT_FROM}: {exc}") from None


def check_compatible(run: runs.Run, cfg: config.Config) -> None:
    """Refuse a textgen run whose tokens or layers cannot start this classifier, naming the setting to change."""
    source, model = run.config.model, cfg.model
    where = f"{INIT_FROM}={run.path}"
    level = run.preprocessing["tokenizer"]["level"]
    if level != cfg.data.level:
        raise SeqappError(f"{where} is a {level}-level textgen run but this classifier has data.level="
                          f"{cfg.data.level}; give a textgen run trained with data.level={cfg.data.level}")
    for name in ("cell", "units", "layers"):
        theirs, ours = getattr(source, name), getattr(model, name)
        if theirs != ours:
            raise SeqappError(f"{where} has model.{name}={theirs} but this classifier model.{name}={ours}; "
                              f"set model.{name}={theirs} to start from it")
    if model.embedding_dim is not None and model.embedding_dim != source.embedding_dim:
        raise SeqappError(f"{where} has model.embedding_dim={source.embedding_dim} but this classifier "
                          f"model.embedding_dim={model.embedding_dim}; set model.embedding_dim="
                          f"{source.embedding_dim} or null")


# -- reading the source -------------------------------------------------------------------
def load(cfg: config.Config, vocab: list[str]) -> Outside | None:
    """The rows (and recurrent weights) the configured source offers ``vocab``; None without a
    source. Checked first (:func:`check`); the last source read is kept for rebuilds of the model."""
    model = cfg.model
    if not (model.pretrained_embeddings or model.init_from):
        return None
    check_outside_files(cfg)
    path = Path(model.pretrained_embeddings or Path(model.init_from) / "model.keras")
    info = os.stat(path)
    key = (str(path.resolve()), info.st_size, info.st_mtime_ns, hash(tuple(vocab)))
    if key not in _CACHE:
        _CACHE.clear()
        _CACHE[key] = (read_vectors(model.pretrained_embeddings, vocab) if model.pretrained_embeddings
                       else read_textgen(model.init_from, vocab))
    return _CACHE[key]


def read_vectors(path: str, vocab: list[str]) -> Outside:
    """The vectors of a GloVe / word2vec text file for ``vocab``."""
    dim, matcher = embeddings.read_vectors(path, vocab)
    return Outside("vectors", str(path), dim, matcher)


def read_textgen(folder: str, vocab: list[str]) -> Outside:
    """The embedding rows (matched by token) and the recurrent layers' weights of a textgen run."""
    run = textgen_run(folder)
    model = run.model
    matrix = embedding_layer(model).get_weights()[0]
    tokens = run.preprocessing["tokenizer"]["vocab"]
    matcher = embeddings.match_pairs(vocab, ((token, matrix[i]) for i, token in enumerate(tokens)
                                             if i >= len(SPECIALS)))
    recurrent = [layer.get_weights() for layer in model.layers if is_recurrent(layer)]
    return Outside("textgen_run", str(folder), int(matrix.shape[1]), matcher, recurrent, matrix[OOV_ID])


def embedding_layer(model: Any) -> Any:
    """The model's (first) Embedding layer."""
    import keras

    return next(layer for layer in model.layers if isinstance(layer, keras.layers.Embedding))


# -- the task's hooks ---------------------------------------------------------------------
def coverage_fields(cfg: config.Config, vocab: list[str]) -> dict:
    """``{"pretrained": {...}}`` for preprocessing.json (empty without a source): the source read
    for ``vocab``, its coverage logged; no word found at all is an error."""
    outside = load(cfg, vocab)
    if outside is None:
        return {}
    matcher = outside.matcher
    what = ("pretrained embeddings" if outside.kind == "vectors" else "init_from")
    where = outside.source if outside.kind == "vectors" else f"the textgen run {outside.source}"
    if not matcher.rows:
        fix = ("check that its words are of the same language and tokenized alike" if outside.kind == "vectors"
               else "train it on text of the same language, with the same data.lower")
        raise SeqappError(f"none of the {matcher.words:,} words of the vocabulary is in {where}; {fix}",
                          resumable=False)
    line = embeddings.coverage_line(what, len(matcher.rows), matcher.words, where)
    if outside.recurrent:
        direction = " (forward direction; the backward one starts fresh)" if cfg.model.bidirectional else ""
        line += f"; its {len(outside.recurrent)} {cfg.model.cell} layer(s) start the encoder{direction}"
    log.info(line)
    info = {"kind": outside.kind, "source": outside.source, "dim": outside.dim, "words": matcher.words,
            "found": len(matcher.rows), "frozen": cfg.model.freeze_embeddings}
    if outside.recurrent:
        info["recurrent_layers"] = len(outside.recurrent)
    return {PREP_KEY: info}


def sized_model_config(model_cfg: Any, prep: dict) -> Any:
    """``model_cfg`` with ``embedding_dim`` set when it is null (the source's size, from ``prep``)."""
    if model_cfg.embedding_dim is not None or PREP_KEY not in prep:
        return model_cfg
    return dataclasses.replace(model_cfg, embedding_dim=prep[PREP_KEY]["dim"])


def start_weights(model: Any, cfg: config.Config, prep: dict) -> None:
    """Start ``model``'s embedding (and, from a textgen run, its recurrent layers) from the source
    of ``prep``; freeze the embedding if ``model.freeze_embeddings``. Nothing without a source."""
    import keras

    if PREP_KEY not in prep:
        return
    outside = load(cfg, prep["tokenizer"]["vocab"])
    layer = embedding_layer(model)
    rows = dict(outside.matcher.rows)
    if outside.unknown is not None:
        rows.setdefault(OOV_ID, outside.unknown)
    layer.set_weights([embeddings.fill_matrix(rows, layer.input_dim, layer.output_dim, cfg.train.random_seed)])
    targets = [target for target in model.layers if is_recurrent(target)]
    for target, weights in zip(targets, outside.recurrent):
        forward = target.forward_layer if isinstance(target, keras.layers.Bidirectional) else target
        forward.set_weights(weights)
    if cfg.model.freeze_embeddings:
        layer.trainable = False
