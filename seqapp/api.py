"""seqapp from Python: :func:`load` a run, then ``predict`` or ``generate`` with it.

::

    from seqapp.api import load

    model = load("runs")                       # the latest run under runs/, or a run folder
    model.predict(["what a lovely film"])             # sentiment, translate, tagging, sine runs
    model.generate("ROMEO:", length=200, temperature=0.8)   # textgen runs

The run is loaded once, on the engine ``seqapp predict`` and ``generate`` choose (its LiteRT
graphs when it has them: no TensorFlow), and stays loaded for every later call. The answers
are plain Python data, the records ``seqapp predict --json`` and ``seqapp generate --json``
print. Options are checked as the command line checks them; a bad one raises
:class:`seqapp.errors.SeqappError` with the command's one-line message.

The option checks shared with the command line live here too (:func:`check_predict`,
:func:`check_generate`, :func:`generation_options`), so the two can never differ.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from seqapp import runs, sampling
from seqapp.engines import check_engine, start_engine
from seqapp.errors import SeqappError

GENERATE_LENGTH = 300  # the length of ``seqapp generate`` when none is given
KIND_WORDS = {bool: "True or False", int: "an integer", float: "a number", str: "a text", Path: "a path"}


def default_out() -> Path:
    """The folder of runs when none is given: ``$SEQAPP_RUNS``, else ``./runs`` (as ``--out``)."""
    return Path(os.environ.get("SEQAPP_RUNS") or "runs")


def load(run: str | os.PathLike | None = None, *, task: str | None = None, engine: str = "auto") -> LoadedRun:
    """A run loaded for answering: ``run`` is a run folder, or a folder of runs (its latest run,
    of ``task`` when given; a task's folder such as ``runs/sentiment`` works too); None: the
    folder ``seqapp`` commands use (``$SEQAPP_RUNS``, else ``./runs``). ``engine``: auto (the
    run's LiteRT graphs when it has them), litert or tf, as ``--engine``."""
    from seqapp.tasks import REGISTRY, find_run, get_task

    check_engine(engine)
    if task is not None:
        get_task(task)
    path = Path(run) if run is not None else default_out()
    tasks = [task] if task else None
    if any((path / name).exists() for name in runs.REQUIRED) or (run is not None and not path.exists()):
        found = find_run(path, path.parent, tasks)  # a run folder (one named that does not exist: it says so)
    elif path.name in REGISTRY and not any((path / name).is_dir() for name in REGISTRY):
        if task is not None and task != path.name:
            raise SeqappError(f"{path} holds {path.name} runs, not {task} ones; drop task= or give another folder")
        found = find_run(None, path.parent, [path.name])
    else:
        found = find_run(None, path, tasks)
    return LoadedRun(found, engine)


class LoadedRun:
    """A run with its model loaded, answering like ``seqapp predict`` and ``seqapp generate``.

    ``path``: the run folder; ``task``: its task's name; ``engine``: ``litert`` or ``tf``;
    ``run``: the :class:`seqapp.runs.Run` (config, preprocessing, metrics); ``implementation``:
    the task object that answers (:class:`seqapp.tasks.base.Task`).
    """

    def __init__(self, run: runs.Run, engine: str = "auto") -> None:
        from seqapp.tasks import get_task

        self.run = run
        self.implementation = get_task(run.task)()
        self.engine = start_engine(self.implementation, run, engine)

    @property
    def path(self) -> Path:
        return self.run.path

    @property
    def task(self) -> str:
        return self.run.task

    @property
    def generates(self) -> bool:
        """True for runs that continue seeds (:meth:`generate`), False for those that :meth:`predict`."""
        return self.implementation.generates

    @property
    def predict_options(self) -> dict[str, type]:
        """The options :meth:`predict` takes for this run, by name, with their types (none for a run that generates)."""
        if self.generates:
            return {}
        return {option.name: option.type for option in self.implementation.predict_options if option.name != "json"}

    def __repr__(self) -> str:
        return f"<seqapp {self.task} run {self.path} on {self.engine}>"

    # -- predict -----------------------------------------------------------------------------
    def predict(self, texts: str | Iterable[str] | None = None, **options: Any) -> list[dict]:
        """The records ``seqapp predict --json`` prints for ``texts`` (one text or several; none
        for a run that takes no inputs), one per output line, with ``options`` the command's
        task options by their Python names (``beam=5``, ``n_best=3``, ``horizon=50``, ...)."""
        if self.generates:
            raise SeqappError(f"a {self.task} run continues seeds; use .generate(seed) (seqapp generate)")
        inputs = as_texts(texts)
        if "json" in options:
            raise SeqappError("predict() always gives the records of 'seqapp predict --json'; drop json=")
        given = check_predict(self.implementation, self.run, inputs, self.checked_options(options))
        if self.json_records:
            return [json.loads(line) for line in self.lines(inputs, {**given, "json": True})]
        return [{"text": line} for line in self.lines(inputs, given)]

    @property
    def json_records(self) -> bool:
        """True when the task prints JSON records with ``--json`` (else each line is ``{"text": line}``)."""
        return any(option.name == "json" and option.type is bool for option in self.implementation.predict_options)

    def lines(self, texts: list[str], given: dict) -> Iterator[str]:
        """The output lines of ``seqapp predict`` for options already checked (:func:`check_predict`)."""
        extra = {"engine": "litert"} if self.engine == "litert" else {}
        return iter(self.implementation.predict(self.run, texts, **given, **extra))

    def checked_options(self, options: dict) -> dict:
        """``options`` of :meth:`predict` after their types are checked (a path may be a text)."""
        from seqapp.tasks import REGISTRY

        declared = {option.name: option.type for option in self.implementation.predict_options}
        elsewhere = {option.name for cls in REGISTRY.values() for option in cls.predict_options}
        for name, value in options.items():
            if name in declared:
                options[name] = checked("--" + name.replace("_", "-"), value, declared[name], optional=True)
            elif name not in elsewhere:  # another task's option is refused by check_predict, as by the command
                known = ", ".join(sorted(self.predict_options)) or "none"
                raise SeqappError(f"{name}= is not an option of seqapp predict (a {self.task} run takes: {known}); "
                                  "see 'seqapp predict --help'")
        return options

    # -- generate ----------------------------------------------------------------------------
    def generate(self, seed: str = "", *, length: int = GENERATE_LENGTH, temperature: float = 1.0,
                 top_k: int | None = None, top_p: float | None = None, num_samples: int = 1,
                 random_seed: int | None = None, stop: str | Sequence[str] | None = None,
                 no_repeat_ngram: int | None = None) -> list[dict]:
        """The records ``seqapp generate --json`` prints: one per sample, each ``{"seed", "text",
        "generated"}`` (``text`` is the seed and what follows it, ``generated`` only what follows),
        with the command's options (``--seed`` is ``seed``; ``stop`` one text or several)."""
        return generated_records(self.stream(seed, length=length, temperature=temperature, top_k=top_k, top_p=top_p,
                                             num_samples=num_samples, random_seed=random_seed, stop=stop,
                                             no_repeat_ngram=no_repeat_ngram))

    def stream(self, seed: str = "", *, length: int = GENERATE_LENGTH, temperature: float = 1.0,
               top_k: int | None = None, top_p: float | None = None, num_samples: int = 1,
               random_seed: int | None = None, stop: str | Sequence[str] | None = None,
               no_repeat_ngram: int | None = None) -> Iterator[list[str]]:
        """The generation as it comes: first the seed, then per step the text each sample adds
        (a list with one piece per sample), with :meth:`generate`'s options."""
        if not self.generates:
            raise SeqappError(f"a {self.task} run does not generate text; use .predict(texts) (seqapp predict)")
        seed = checked("--seed", seed, str)
        stops = [stop] if isinstance(stop, str) else stop
        if stops is not None and (isinstance(stops, (bytes, dict)) or not isinstance(stops, Iterable)):
            raise SeqappError(f"--stop {stop!r} must be a text or a list of texts")
        stops = [checked("--stop", text, str) for text in stops] if stops is not None else None
        options = generation_options(
            length=checked("--length", length, int), temperature=checked("--temperature", temperature, float),
            top_k=checked("--top-k", top_k, int, optional=True), top_p=checked("--top-p", top_p, float, optional=True),
            num_samples=checked("--num-samples", num_samples, int),
            random_seed=checked("--random-seed", random_seed, int, optional=True), stop=stops,
            no_repeat_ngram=checked("--no-repeat-ngram", no_repeat_ngram, int, optional=True), engine=self.engine)
        return self.implementation.generate(self.run, seed, **options)


# -- checks shared with the command line ------------------------------------------------------
def check_predict(task: Any, run: runs.Run, texts: list[str], options: dict) -> dict:
    """The options of ``seqapp predict`` that were given (not None, not False), after the checks
    the command makes: each applies to the run's task, and the task accepts the inputs and options."""
    given = {key: value for key, value in options.items() if value is not None and value is not False}
    supported = {option.name for option in task.predict_options}
    unsupported = sorted(set(given) - supported)
    if unsupported:
        option = "--" + unsupported[0].replace("_", "-")
        raise SeqappError(f"{option} does not apply to a {run.task} run; see 'seqapp predict --help'")
    task.check_inputs(texts, **given)
    task.check_run_options(run, **given)
    return given


def check_generate(length: int, temperature: float, top_k: int | None, top_p: float | None, num_samples: int,
                   stop: Sequence[str] | None, no_repeat_ngram: int | None) -> None:
    """The checks of ``seqapp generate``'s options, before anything is loaded."""
    sampling.check_options(temperature, top_k, top_p)
    sampling.check_counts(length, num_samples)
    sampling.check_stops(stop)
    sampling.check_no_repeat_ngram(no_repeat_ngram)


def generation_options(*, length: int, temperature: float, top_k: int | None, top_p: float | None, num_samples: int,
                       random_seed: int | None, stop: Sequence[str] | None, no_repeat_ngram: int | None,
                       engine: str) -> dict:
    """The keywords of ``Task.generate`` for ``seqapp generate``'s options, checked (:func:`check_generate`)."""
    check_generate(length, temperature, top_k, top_p, num_samples, stop, no_repeat_ngram)
    options = {"length": length, "temperature": temperature, "top_k": top_k, "top_p": top_p,
               "num_samples": num_samples, "random_seed": random_seed, "engine": engine}
    return options | {key: value for key, value in (("stop", stop), ("no_repeat_ngram", no_repeat_ngram)) if value}


def generated_records(stream: Iterator[list[str]]) -> list[dict]:
    """One ``{"seed", "text", "generated"}`` record per sample of a ``Task.generate`` stream."""
    seeds = next(stream)
    texts = list(seeds)
    for pieces in stream:
        texts = [text + piece for text, piece in zip(texts, pieces)]
    return [{"seed": seed, "text": text, "generated": text[len(seed):]} for seed, text in zip(seeds, texts)]


def as_texts(texts: str | Iterable[str] | None) -> list[str]:
    """``predict``'s inputs as a list of texts: one text, several, or none."""
    if texts is None:
        return []
    if isinstance(texts, str):
        return [texts]
    if isinstance(texts, (bytes, dict)) or not isinstance(texts, Iterable):
        raise SeqappError(f"the inputs must be a text or a list of texts, not {type(texts).__name__}")
    found = list(texts)
    for i, text in enumerate(found):
        if not isinstance(text, str):
            raise SeqappError(f"input {i} is {type(text).__name__}; each input must be a text")
    return found


def checked(flag: str, value: Any, kind: type, optional: bool = False) -> Any:
    """``value`` if it is of the option's ``kind`` (an int for a float, a text for a path; None
    when ``optional``), else a SeqappError naming the option."""
    if value is None and optional:
        return None
    fits = {bool: lambda: isinstance(value, bool),
            int: lambda: isinstance(value, int) and not isinstance(value, bool),
            float: lambda: isinstance(value, (int, float)) and not isinstance(value, bool),
            Path: lambda: isinstance(value, (str, os.PathLike))}.get(kind, lambda: isinstance(value, kind))
    if not fits():
        raise SeqappError(f"{flag} {value!r} must be {KIND_WORDS.get(kind, kind.__name__)}, not "
                          f"{type(value).__name__}")
    if kind is Path:
        return Path(value)
    return float(value) if kind is float else value
