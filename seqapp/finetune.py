"""Fine-tuning: a new run that starts from a trained one, on new data (``seqapp train --from RUN --data NEW``).

The new run keeps the run's preprocessing as it is (vocabularies, labels, lengths,
normalisation), builds the run's model and starts from its trained weights (the optimizer
starts afresh), and trains on the new data with the run's settings: ``--set`` may change
how it trains (``train.*``) and how the data is read, never the model's shape or the
tokenizer. The old run is only read. What the new data holds that the run's vocabulary
lacks is reported in one line (a count and a few examples): those words read as ``<unk>``.

Nothing here knows a task: vocabularies are the tokenizers and ``*vocab`` lists of
``preprocessing.json``, label sets its other lists of texts (``classes``, ``tags``).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from seqapp.config import Config
from seqapp.drafts import edited_settings, settings_of
from seqapp.errors import SeqappError
from seqapp.runs import Run

log = logging.getLogger("seqapp")

# The recurrent stack every task builds (config.ModelConfig): a change to one of these always
# changes the weights' shapes, so it is refused before TensorFlow starts; any other change
# that does is found when the model is built (:func:`start_from`).
SHAPE_SETTINGS = ("model.cell", "model.units", "model.layers", "model.bidirectional")
TOKENIZER_SETTINGS = {"level": None, "lower": False, "strip_punctuation": False, "subword_model": "unigram"}
EXAMPLES = 5


def check_settings(base: Run, cfg: Config) -> None:
    """Refuse settings of ``cfg`` that change the recurrent stack of ``base`` (cheap: no TensorFlow)."""
    edits = [edit for edit in edited_settings(settings_of(base.config), cfg) if edit.split(":")[0] in SHAPE_SETTINGS]
    if edits:
        raise SeqappError(f"--from keeps the model of {base.path}, and {edits[0]} changes its shape; drop that "
                          f"--set, or train a new run with those settings: seqapp train {base.path / 'config.yaml'} "
                          "--data FILE --set ...")


def carried_preprocessing(base: Run, fitted: dict) -> dict:
    """The preprocessing of ``base``, for a run fine-tuned on data whose own preprocessing (fitted
    with the new settings) is ``fitted``: refused when its tokenizer settings differ or the data
    holds labels ``base`` does not know; the words its vocabularies lack are logged in one line."""
    kept = dict(base.preprocessing)
    for key, old in vocabularies(kept).items():
        changed = tokenizer_changes(old, fitted.get(key))
        if changed:
            raise SeqappError(f"--from keeps the tokenizer of {base.path}, and the settings given change its "
                              f"{key} ({', '.join(changed)}); drop them, or train a new run")
    for key, known in label_sets(kept).items():
        unknown = [label for label in fitted.get(key) or [] if label not in set(known)]
        if unknown:
            raise SeqappError(f"the new data has {key} that {base.path} was not trained on ({shown(unknown)}); a run "
                              f"fine-tuned --from it keeps its {key} ({shown(known)}): map the new ones to those, or "
                              "train a new run on the new data")
    report_unknown(base.path, kept, fitted)
    return kept


def tokenizer_changes(old: Any, new: Any) -> list[str]:
    """How the settings of tokenizer ``new`` differ from ``old``'s (both saved tokenizers), as ``name: old -> new``."""
    if not (isinstance(old, dict) and isinstance(new, dict)):
        return []
    before = {name: old.get(name, default) for name, default in TOKENIZER_SETTINGS.items()}
    after = {name: new.get(name, default) for name, default in TOKENIZER_SETTINGS.items()}
    return [f"{name}: {before[name]!r} -> {after[name]!r}" for name in before if before[name] != after[name]]


def vocabularies(prep: dict) -> dict[str, Any]:
    """The vocabularies of a preprocessing: tokenizers (objects with a ``vocab``) and ``*vocab`` lists."""
    return {key: value for key, value in prep.items()
            if (isinstance(value, dict) and isinstance(value.get("vocab"), list))
            or (key.endswith("vocab") and isinstance(value, list))}


def label_sets(prep: dict) -> dict[str, list[str]]:
    """The other lists of texts of a preprocessing: the labels its model predicts (``classes``, ``tags``)."""
    return {key: value for key, value in prep.items() if key not in vocabularies(prep) and isinstance(value, list)
            and value and all(isinstance(item, str) for item in value)}


def tokens_of(vocabulary: Any) -> list[str]:
    return list(vocabulary["vocab"] if isinstance(vocabulary, dict) else vocabulary)


def report_unknown(base: Path, kept: dict, fitted: dict) -> None:
    """One line: per vocabulary, how many tokens of the new data's own vocabulary the run's lacks, and a few."""
    from seqapp.text import SPECIALS

    parts, missing = [], 0
    for key, old in vocabularies(kept).items():
        new = fitted.get(key)
        if new is None or (isinstance(old, dict) and old.get("level") == "subword"):
            continue  # subword pieces: any text is spelled with the run's pieces (byte fallback)
        known = set(tokens_of(old))
        tokens = [token for token in tokens_of(new) if token not in SPECIALS]
        unknown = [token for token in tokens if token not in known]
        missing += len(unknown)
        parts.append(f"{key} {len(unknown)} of {len(tokens)}" + (f" ({shown(unknown)})" if unknown else ""))
    if parts:
        (log.warning if missing else log.info)(
            f"starting from {base}: tokens of the new data's vocabulary that the run's lacks (read as <unk>): "
            + "; ".join(parts))


def shown(items: list[str]) -> str:
    """A few items, quoted, and how many more."""
    more = f" and {len(items) - EXAMPLES} more" if len(items) > EXAMPLES else ""
    return ", ".join(repr(item) for item in items[:EXAMPLES]) + more


def start_from(model: Any, base: Run, cfg: Config) -> None:
    """Give ``model`` (built for ``cfg`` with the base's preprocessing) the trained weights of ``base``;
    refused in one line when the settings gave it other shapes."""
    theirs = base.model.get_weights()
    ours = [tuple(weight.shape) for weight in model.weights]
    if ours != [tuple(weight.shape) for weight in theirs]:
        edits = edited_settings(settings_of(base.config), cfg)
        edits = [edit for edit in edits if edit.startswith("model.")] or [  # else data settings, --data's aside
            edit for edit in edits if edit.startswith("data.") and not edit.startswith("data.path:")]
        why = f" ({', '.join(edits[:3])})" if edits else ""
        raise SeqappError(f"--from keeps the model of {base.path}, and the settings given change its shape{why}; "
                          "drop them, or train a new run with them", resumable=False)
    model.set_weights(theirs)


def base_of(info: dict) -> Run | None:
    """The run a training fine-tunes, as its ``draft.json`` (``info``) records it; None for another training."""
    from seqapp.tasks import load_run

    path = info.get("from")
    if not isinstance(path, str):
        return None
    if not Path(path).is_dir():
        raise SeqappError(f"this training fine-tunes {path}, which is gone; put it back, or start a new training",
                          resumable=False)
    return load_run(Path(path))
