"""The small protocol every task implements.

The CLI and the training loop only ever talk to a task through these methods and class
attributes, so they never branch on a task's name: what a task can do (``generates``,
``predict_options``, how ``--data`` reaches it) is declared here, not discovered. Tasks
never print: warnings go to the ``seqapp`` logger (:data:`log`), which the CLI shows as
``warning: ...`` lines on stderr. Methods that need Keras import it themselves, which
keeps ``seqapp --help`` and ``seqapp tasks`` free of TensorFlow.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from seqapp.config import Config, ModelConfig
from seqapp.errors import SeqappError
from seqapp.files import FLAG, INTEGER, NUMBER, TEXT, Kind, is_number, list_of, nullable, one_of
from seqapp.runs import Schema
from seqapp.text import LEVELS, SPECIALS, SUBWORD_MODELS

if TYPE_CHECKING:
    import keras
    import tensorflow as tf

    from seqapp.runs import Run
    from seqapp.serving import Serving

log = logging.getLogger("seqapp")


@dataclass(frozen=True)
class PredictOption:
    """An extra ``seqapp predict`` option a task understands, declared on the task.

    The CLI builds ``--<name>`` (underscores become dashes) from this, with ``type`` and
    ``help``; tasks that share a name (e.g. ``json``) must agree on its type.
    """

    name: str
    type: type
    help: str


JSON_OUTPUT = PredictOption("json", bool, "Print one JSON object per line.")
RANDOM_SEED = PredictOption("random_seed", int, "Random seed, where prediction samples.")

# How a saved Tokenizer (Tokenizer.to_dict) looks in preprocessing.json.
TOKENIZER_FIELDS = {"level": one_of(*LEVELS), "lower?": FLAG, "strip_punctuation?": FLAG,
                    "vocab": list_of(TEXT, least=len(SPECIALS)),
                    "subword_model?": one_of(*SUBWORD_MODELS), "sentencepiece?": TEXT}
METRIC = nullable(NUMBER)  # a figure in metrics.json: NaN and infinities were saved as null
# What train.calibrate adds to preprocessing.json (Task.calibrate); runs without it are at temperature 1.
CALIBRATION_FIELDS = {"temperature": Kind("a number > 0", lambda value: is_number(value) and value > 0)}


def split_metrics(figures: dict) -> dict:
    """A metrics.json spec: ``figures`` under each optional split (train, val, test)."""
    return {f"{split}?": figures for split in ("train", "val", "test")}


def baseline_metrics(figure: str) -> dict:
    """A metrics.json spec of a baseline read with ``.get``: an object of optional splits holding ``figure``."""
    return split_metrics({f"{figure}?": METRIC})


@dataclass
class Objective:
    """What a task's model optimises: Keras ``compile``'s loss and metrics, without the optimizer.

    The training flow (:func:`seqapp.training.compile_model`) adds the optimizer, which only
    it can build right (the batches per epoch, the distribution strategy, the precision).
    Made fresh for each model: Keras metric objects belong to the model they are compiled into.
    """

    loss: Any
    metrics: list = field(default_factory=list)
    weighted_metrics: list = field(default_factory=list)
    loss_weights: Any = None


@dataclass
class Splits:
    """Train, validation and test parts of a data set, in whatever form the task uses."""

    train: Any
    val: Any
    test: Any
    # The file ``seqapp evaluate --data`` read as the test split (all of it); None: the run's own
    # data. ``train`` then holds the run's training split where its baselines need one (or is empty).
    source: str | None = None


class Task:
    """Base class of the tasks in ``seqapp.tasks.REGISTRY``."""

    name: ClassVar[str]
    summary: ClassVar[str]
    DataConfig: ClassVar[type]
    ModelConfig: ClassVar[type] = ModelConfig
    # The extra ``seqapp predict`` options this task understands (passed as keywords).
    predict_options: ClassVar[tuple[PredictOption, ...]] = ()
    # True for tasks that stream text with ``seqapp generate`` (see :meth:`generate`).
    generates: ClassVar[bool] = False
    # What the task reads from a run's preprocessing.json and metrics.json (specs of
    # seqapp.files.check_fields): checked when a run is loaded, and whenever its metrics are
    # read, so a damaged file is one error line naming the field, never a KeyError later.
    preprocessing_fields: ClassVar[dict] = {}
    metrics_fields: ClassVar[dict] = {}
    # A seconds-long version of the task for the shared test suite: ``set`` holds
    # ``--set`` overrides for the task's own template, ``inputs`` some predict inputs,
    # ``options`` predict options that make the output deterministic.
    tiny: ClassVar[dict] = {}
    # True for tasks whose model ends in class probabilities that ``train.calibrate`` can
    # scale (see :meth:`calibrate`); the config of any other task refuses the setting.
    calibrates: ClassVar[bool] = False
    # True for tasks whose ``predict`` forecasts from a history of numbers: ``seqapp predict
    # --data FILE`` and the ``history`` of ``seqapp serve``'s ``/predict`` reach it as the
    # ``history`` keyword (a list of numbers, checked by :meth:`check_run_options`).
    takes_history: ClassVar[bool] = False

    @classmethod
    def validate_config(cls, cfg: Config) -> None:
        """Reject settings that are valid one by one but not together (SeqappError)."""

    @classmethod
    def check_sources(cls, cfg: Config) -> None:
        """Cheap checks of the files a new training of ``cfg`` reads besides its data (pretrained
        vectors, another run): ``seqapp train`` calls this before TensorFlow starts. Never called
        when a run is loaded, since a saved run needs none of them."""

    @classmethod
    def schema(cls) -> Schema:
        """The fields of :attr:`preprocessing_fields` and :attr:`metrics_fields`, plus those every
        run has (the task's name; the epochs trained, which ``seqapp runs`` shows)."""
        return Schema(preprocessing={"task?": TEXT, **cls.preprocessing_fields},
                      metrics={"epochs_trained?": nullable(INTEGER), **cls.metrics_fields})

    @classmethod
    def data_values(cls, path: Path) -> dict:
        """The config values that make ``--data PATH`` the training data (``section.key`` keys)."""
        return {"data.path": os.path.abspath(path)}  # not resolve(): a link loop is read_text's to report

    def load_data(self, cfg: Config) -> Splits:
        """Read the data named in ``cfg.data`` and split it into train / val / test."""
        raise NotImplementedError

    def fit_preprocessing(self, cfg: Config, splits: Splits) -> dict:
        """Fit vocabularies or normalisation on the training split; JSON-ready."""
        raise NotImplementedError

    def build_model(self, cfg: Config, prep: dict) -> keras.Model:
        """The Keras model for ``cfg``, not compiled (training compiles it with :meth:`objective`)."""
        raise NotImplementedError

    def objective(self, cfg: Config, prep: dict) -> Objective:
        """The loss and metrics the model is trained with (new objects on each call)."""
        raise NotImplementedError

    def datasets(self, cfg: Config, prep: dict, splits: Splits) -> tuple[tf.data.Dataset, tf.data.Dataset | None]:
        """The training and validation ``tf.data`` pipelines (validation may be None)."""
        raise NotImplementedError

    def evaluate(self, run: Run, splits: Splits, engine: str = "tf", errors: int = 0) -> dict:
        """Metrics on the held-out split, with a naive baseline beside them, computed on
        ``engine`` (``tf``, or ``litert`` where :meth:`engine` allows it: the same figures without
        TensorFlow). With ``errors`` above 0 the result also holds ``worst``: that many of the
        main split's worst-scored examples, worst first (records :meth:`format_worst` shows)."""
        raise NotImplementedError

    def new_data(self, run: Run, path: Path) -> Splits:
        """``seqapp evaluate --data PATH``: the whole file as the test split, read the way the
        run's config reads its data (columns, format, labels it knows), without TensorFlow;
        ``source`` names the file. A file the run cannot be scored on is a SeqappError."""
        raise SeqappError(f"{self.name} runs cannot be evaluated on new data yet; drop --data")

    def format_worst(self, records: list[dict]) -> list[str]:
        """Human-readable lines for the ``worst`` records of :meth:`evaluate` (``--errors N``)."""
        return [", ".join(f"{key} {value}" for key, value in record.items()) for record in records]

    def calibrate(self, run: Run, splits: Splits) -> dict | None:
        """``train.calibrate`` (tasks with ``calibrates``): right after training, the run's
        ``calibration`` entry of preprocessing.json (a temperature fitted on the validation
        split, see :func:`temperature`), or None when there is nothing to fit it on."""
        raise NotImplementedError(f"{self.name} runs cannot be calibrated")

    def check_inputs(self, inputs: list[str], **opts: Any) -> None:
        """Refuse inputs or predict options that cannot work (SeqappError), cheaply: the CLI
        calls this before TensorFlow starts, so a wrong command answers at once."""

    def check_run_options(self, run: Run, **opts: Any) -> None:
        """Refuse predict options that do not fit ``run`` (e.g. past a limit it was trained with),
        from its files only: the CLI and the server call this after :meth:`check_inputs`, before
        TensorFlow starts."""

    def predict(self, run: Run, inputs: list[str], **opts: Any) -> Iterable[str]:
        """Lines of output for ``seqapp predict`` (after :meth:`check_inputs`). A task that
        generates continues each input as a seed and takes :meth:`generate`'s ``length``
        (``seqapp serve`` passes it, within ``--max-tokens``)."""
        raise NotImplementedError

    def generate(self, run: Run, seed: str, **opts: Any) -> Iterator[list[str]]:
        """Stream text for ``seqapp generate`` (tasks with ``generates = True``): the seed
        first, then per step the text each sample adds."""
        raise NotImplementedError(f"{self.name} does not generate text")

    def engine(self, run: Run, requested: str) -> str:
        """The inference engine for ``run``: ``litert`` when the task saved LiteRT graphs that
        can run (see :mod:`seqapp.litert`), else ``tf``; ``requested`` is auto, litert or tf."""
        if requested == "litert":
            raise SeqappError(f"{self.name} runs have no LiteRT engine yet; use --engine tf or auto")
        return "tf"

    def export(self, run: Run, folder: Path) -> None:
        """Write the task's fast inference graphs into the run ``folder`` (default: none)."""

    def serving_module(self, run: Run) -> Serving | None:
        """What ``seqapp export`` writes for ``run``: a :class:`seqapp.serving.Serving` whose
        graphs take raw inputs (tokenizer and decoding inside), or None when the task has no
        export yet. Kept in ``seqapp/tasks/<task>_serving.py``, imported only when exporting."""
        return None

    def headline(self, metrics: dict) -> str:
        """One short phrase summing up a run's metrics, for ``seqapp runs``."""
        return ""

    def format_metrics(self, metrics: dict) -> list[str]:
        """Human-readable lines for ``seqapp evaluate``."""
        return format_nested(metrics)

    def plots(self, run: Run, splits: Splits, folder: Any) -> None:
        """Write task-specific plots into ``folder`` (learning curves are written for all)."""

    def epoch_sample(self, cfg: Config, prep: dict, splits: Splits) -> Callable[[Any], str] | None:
        """What a training shows in TensorBoard's text tab after each epoch: a function of the
        model being trained that returns Markdown (built once, before the first epoch; it must
        leave the model untouched and take a fraction of a second), or None for nothing."""
        return None


def cut_notes(lengths: list[int], max_len: int, done: str, hint: str = "") -> list[str | None]:
    """Per input, a note when it has more than ``max_len`` tokens and only its first ``max_len``
    are ``done`` (None for the others); one warning line for them all, with ``hint``.

    Tasks whose model reads at most ``max_len`` tokens say so, rather than cut in silence; the
    notes go into the ``--json`` records (and so into ``seqapp serve``'s answers).
    """
    notes = [f"only the first {max_len} of its {length} tokens are {done} (the run's max_len)"
             if length > max_len else None for length in lengths]
    cut = [length for length in lengths if length > max_len]
    if len(lengths) == 1 and cut:
        log.warning(f"the input has {cut[0]} tokens, more than the run's max_len of {max_len}: only its first "
                    f"{max_len} are {done}{hint}")
    elif cut:
        log.warning(f"{len(cut)} of {len(lengths)} inputs have more than the run's max_len of {max_len} tokens (the "
                    f"longest {max(cut)}): only the first {max_len} of each are {done}{hint}")
    return notes


def temperature(preprocessing: dict) -> float:
    """The temperature a calibrated run divides its logits by; 1.0 for a run trained without
    ``train.calibrate`` (older runs included)."""
    return float(preprocessing.get("calibration", {}).get("temperature", 1.0))


def figure(value: float | None, spec: str) -> str:
    """A metric formatted with ``spec``; ``nan`` for one saved as null (a NaN or an infinity)."""
    return "nan" if value is None else format(value, spec)


def format_nested(metrics: dict, indent: str = "") -> list[str]:
    """Render a nested dict of numbers as aligned ``key: value`` lines."""
    lines = []
    width = max((len(str(key)) for key in metrics), default=0)
    for key, value in metrics.items():
        if isinstance(value, dict):
            lines.append(f"{indent}{key}:")
            lines.extend(format_nested(value, indent + "  "))
        elif isinstance(value, float):
            lines.append(f"{indent}{str(key).ljust(width)}  {value:.4f}")
        else:
            lines.append(f"{indent}{str(key).ljust(width)}  {value}")
    return lines


def held_out(splits: Splits) -> dict[str, Any]:
    """The non-empty splits to evaluate on, val and test; train when nothing is held out."""
    found = {name: part for name, part in (("val", splits.val), ("test", splits.test)) if len(part)}
    return found or {"train": splits.train}


def main_split(metrics: dict) -> str | None:
    """The split a run is judged on: test if present, else val, else train."""
    return next((split for split in ("test", "val", "train") if split in metrics), None)


def worst_first(scores: Iterable[float], count: int) -> list[int]:
    """The indices of the ``count`` highest ``scores``, highest first (equal scores in their order)."""
    found = list(scores)
    return sorted(range(len(found)), key=lambda i: -found[i])[:count]


def training_part(task: Task, run: Run, needed_for: str) -> Any | None:
    """``seqapp evaluate --data``: the run's own training split, read with its config, for what is
    fitted on it (``needed_for``: a baseline); None, with a warning, when that data cannot be read."""
    try:
        return task.load_data(run.config).train
    except SeqappError as exc:
        log.warning(f"the run's training data cannot be read ({exc}), so {needed_for} is left out")
        return None
