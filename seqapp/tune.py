"""``seqapp tune``: search a template's settings with KerasTuner, every trial an ordinary run.

KerasTuner's oracles (random search, Bayesian optimisation) choose each trial's values;
seqapp trains each trial as ``seqapp train`` would, with the values applied as ``--set``
overrides (:func:`seqapp.tasks.load_config`), and reports the objective back to the oracle::

    oracle.create_trial -> load_config(template, --set ..., trial's values) -> training.train
        -> objective (val_loss from history.csv, or val_accuracy from metrics.json)
        -> oracle.update_trial, oracle.end_trial

Trial 0 is the template's own settings. A search lives in ``<out>/<task>/tune-<time>/``:
``search.json`` (the command's settings and each finished trial: values, objective, time,
run folder) and ``oracle/`` (the oracle's state, which KerasTuner reloads). Trial runs are
named ``<time>-tune-<time>-trial<N>``, so a resumed search finds the run or the interrupted
draft of the trial it was on: a finished trial is never trained again, an interrupted one is
resumed from its saved training state (or started again when it saved none).

Specs are checked, and the search folder made, before TensorFlow starts; KerasTuner (which
imports Keras) only afterwards.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import logging
import math
import re
import time
import typing
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from seqapp import drafts, files
from seqapp.config import SECTIONS, Config
from seqapp.errors import SeqappError

METHODS = ("bayesian", "random")
OBJECTIVES = {"val_loss": "min", "val_accuracy": "max"}
STATE_FILE = "search.json"
PREFIX = "tune-"
TUNER_ID = "seqapp"  # the one worker that asks the oracle for trials
MAX_FAILURES = 3  # trials in a row whose training fails before the search stops
SPEC_HELP = ("use --search section.key=SPEC, SPEC a list (model.units=64,128,256) or a range, linear "
             "(model.dropout=0.1..0.5) or log (train.learning_rate=1e-4..1e-2:log)")

Say = Callable[[str], None]


# -- what to search -----------------------------------------------------------------------
@dataclass(frozen=True)
class Space:
    """One ``--search KEY=SPEC``: a list of values, or an int or float range (linear or log)."""

    key: str
    text: str
    values: tuple = ()
    low: int | float | None = None
    high: int | float | None = None
    log: bool = False

    def cast(self, value: Any) -> Any:
        """A value the oracle gave as a plain Python value of this space's type (KerasTuner
        gives NumPy scalars, and 1 or 0 for true or false)."""
        value = value.item() if hasattr(value, "item") else value
        return bool(value) if self.values and isinstance(self.values[0], bool) else value

    def add_to(self, hyperparameters: Any) -> None:
        """Declare this space in a KerasTuner ``HyperParameters``."""
        if self.values:
            hyperparameters.Choice(self.key, list(self.values))
        elif isinstance(self.low, int):
            hyperparameters.Int(self.key, self.low, self.high, sampling="log" if self.log else "linear")
        else:
            hyperparameters.Float(self.key, self.low, self.high, sampling="log" if self.log else "linear")


def check_spaces(texts: list[str], base: Callable[[list[str]], Config]) -> tuple[list[Space], list[str]]:
    """The ``--search`` texts as spaces, every value checked as ``--set`` checks it; and notes.

    ``base(extra)`` resolves the template with the command's ``--set`` plus ``extra``
    overrides (:func:`seqapp.tasks.load_config`), so a key, type or range that ``--set``
    refuses is refused here with the same words. The template's own value (trial 0) joins a
    list that lacks it, with a note saying so. Needs no TensorFlow.
    """
    if not texts:
        raise SeqappError("nothing to search; give one or more --search KEY=SPEC, e.g. --search model.units=64,128,256")
    template = base([])
    spaces, notes, seen = [], [], set()
    for text in texts:
        key, spec = split_search(text)
        if key in seen:
            raise SeqappError(f"--search {text}: {key} is searched twice; give one --search per setting")
        seen.add(key)
        try:
            space = parse_space(key, spec, text, base)
            space, note = with_template_value(space, current_value(template, key))
        except SeqappError as exc:
            raise SeqappError(f"--search {text}: {exc}") from None
        spaces.append(space)
        notes += [note] if note else []
    return spaces, notes


def split_search(text: str) -> tuple[str, str]:
    """``section.key`` and SPEC of one ``--search`` text (the syntax only)."""
    key, sep, spec = text.partition("=")
    parts = key.strip().split(".")
    if not sep or not spec.strip() or len(parts) != 2 or not all(parts):
        raise SeqappError(f"bad --search {text!r}; {SPEC_HELP}")
    if parts[0] not in SECTIONS:
        raise SeqappError(f"bad --search {text!r}: unknown section '{parts[0]}'; use one of {', '.join(SECTIONS)}")
    return key.strip(), spec.strip()


def parse_space(key: str, spec: str, text: str, base: Callable[[list[str]], Config]) -> Space:
    """A list or range SPEC of ``key``, each value typed and checked by the template's config."""
    def typed(value_text: str) -> Any:
        return current_value(base([f"{key}={value_text}"]), key)

    if ".." not in spec:
        items = [item.strip() for item in spec.split(",")]
        if not all(items):
            raise SeqappError(f"an empty item in the list; {SPEC_HELP}")
        values = [typed(item) for item in items]
        if len(values) < 2:
            raise SeqappError(f"one value is no search; list two or more, or fix the setting with --set {key}={spec}")
        if None in values:
            raise SeqappError("null cannot be searched; list values only")
        repeated = [value for index, value in enumerate(values) if value in values[:index]]
        if repeated:
            raise SeqappError(f"{repeated[0]!r} is listed twice; list each value once")
        return Space(key, text, values=tuple(values))
    bounds, _, scale = spec.partition(":")
    if scale not in ("", "log", "linear"):
        raise SeqappError(f"unknown scale ':{scale}'; end a range with :log for a log scale, or nothing")
    ends = bounds.split("..")
    if len(ends) != 2 or not all(end.strip() for end in ends):
        raise SeqappError(f"a range is low..high; {SPEC_HELP}")
    if number_type(base([]), key) is None:
        raise SeqappError(f"{key} is not a number setting, so it has no range; list its values instead")
    low, high = (typed(end.strip()) for end in ends)  # an integer setting refuses 1.5, as --set does
    if low >= high:
        raise SeqappError(f"the range {low}..{high} is empty; write it low..high with low < high")
    if scale == "log" and low <= 0:
        raise SeqappError(f"a log range must lie above zero, and {low}..{high} does not; start it above 0 "
                          "or drop :log")
    return Space(key, text, low=low, high=high, log=scale == "log")


def current_value(cfg: Config, key: str) -> Any:
    """The value of ``section.key`` in a resolved config."""
    section, name = key.split(".")
    return getattr(getattr(cfg, section), name)


def number_type(cfg: Config, key: str) -> type | None:
    """``int`` or ``float`` when ``section.key`` holds a number (optional or not), else None."""
    section, name = key.split(".")
    hint = typing.get_type_hints(type(getattr(cfg, section)))[name]
    kinds = [arg for arg in (typing.get_args(hint) or (hint,)) if arg is not type(None)]
    return kinds[0] if kinds in ([int], [float]) else None


def with_template_value(space: Space, value: Any) -> tuple[Space, str | None]:
    """``space`` able to hold the template's ``value`` (trial 0), and a note when a list had to
    take it in; the oracles must place every trial's values in the space."""
    if value is None:
        raise SeqappError(f"the template's {space.key} is null, so trial 0 has no value of it to try; give it "
                          f"one with --set {space.key}=VALUE")
    if space.values and value not in space.values:
        values = tuple(sorted((*space.values, value))) if isinstance(value, (int, float)) and not isinstance(
            value, bool) else (*space.values, value)
        note = (f"note: the template's {space.key}={value!r} is not in the list; trial 0 tries it, and so may "
                "other trials")
        return dataclasses.replace(space, values=values), note
    if space.log and value <= 0:
        raise SeqappError(f"the template's {space.key}={value!r} lies outside a log range (above zero), so trial 0 "
                          f"cannot be placed in it; give trial 0 a value above zero with --set {space.key}=VALUE, "
                          "or search a linear range")
    return space, None


def check_objective(objective: str, task: Any) -> None:
    """Refuse an objective the task's runs do not record (cheap: from the task's metrics schema)."""
    if objective not in OBJECTIVES:
        raise SeqappError(f"--objective {objective!r} is not known; use one of {', '.join(OBJECTIVES)}")
    if objective == "val_accuracy" and "accuracy" not in task.schema().metrics.get("val?", {}):
        raise SeqappError(f"--objective val_accuracy: {task.name} runs have no validation accuracy; "
                          "use --objective val_loss")


def check_method(method: str) -> None:
    """Refuse an unknown --method, or one whose packages are missing (the ``[tune]`` extra)."""
    if method not in METHODS:
        raise SeqappError(f"--method {method!r} is not known; use one of {', '.join(METHODS)}")
    needed = {"keras_tuner": "KerasTuner"} | ({"scipy": "SciPy", "sklearn": "scikit-learn"}
                                              if method == "bayesian" else {})
    missing = [name for module, name in needed.items() if importlib.util.find_spec(module) is None]
    if missing:
        raise SeqappError(f"seqapp tune --method {method} needs {' and '.join(missing)}; install them with: "
                          "pip install 'seqapp[tune]'")


# -- a search folder -----------------------------------------------------------------------
@dataclass
class Search:
    """A search folder and its ``search.json``: the command's settings and the finished trials."""

    path: Path
    settings: dict
    trials: dict = field(default_factory=dict)  # trial number (str) -> record
    spent_s: float = 0.0
    status: str = "searching"  # searching | done (no trial left) | budget (its time budget reached)
    _lock: Any = field(default=None, repr=False)

    @property
    def out(self) -> Path:
        return self.path.parent.parent

    @property
    def task(self) -> str:
        return self.settings["task"]

    def save(self) -> None:
        files.write_json(self.path / STATE_FILE, {"settings": self.settings, "status": self.status,
                                                  "spent_s": round(self.spent_s, 3), "trials": self.trials})

    def lock(self) -> None:
        self._lock = files.hold_lock(self.path / ".lock", f"the search in {self.path} is running in another "
                                     "seqapp process; wait for it or stop it first")

    def unlock(self) -> None:
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    def trial_name(self, number: int) -> str:
        """The ``--name`` of trial ``number``'s run (its folder: ``<time>-<name>``)."""
        return f"{self.path.name}-trial{number}"

    def run_path(self, record: dict) -> Path:
        return self.out / self.task / record["run"]


def create(out: Path, task: str, settings: dict) -> Search:
    """A new search folder ``<out>/<task>/tune-<time>`` (``-2``... within the same second), locked."""
    task_dir = drafts.task_folder(out, task)
    stem = PREFIX + time.strftime("%Y%m%d-%H%M%S")
    for counter in range(1, 1000):
        path = task_dir / (stem if counter == 1 else f"{stem}-{counter}")
        try:
            path.mkdir()
            break
        except FileExistsError:
            continue
    search = Search(path, settings)
    search.lock()
    search.save()
    return search


def open_search(path: Path) -> Search:
    """The search saved in folder ``path``, locked for this process."""
    path = Path(path)
    if not (path / STATE_FILE).is_file():
        raise SeqappError(f"{path} is not a search folder (no {STATE_FILE}); a search is a {PREFIX}* folder beside "
                          "the runs of its task, e.g. runs/sentiment/tune-20261207-101500")
    try:
        saved = json.loads((path / STATE_FILE).read_text(encoding="utf-8"))
        search = Search(path, saved["settings"], saved["trials"], float(saved["spent_s"]), saved["status"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise SeqappError(f"{path / STATE_FILE} cannot be read ({exc}); start a new search") from None
    search.lock()
    return search


def newest(out: Path) -> Path:
    """The search under ``out`` that saved last, not finished and not running now."""
    found = [state.parent for state in Path(out).glob(f"*/{PREFIX}*/{STATE_FILE}")
             if not drafts.is_locked(state.parent) and saved_status(state) != "done"]
    if not found:
        raise SeqappError(f"no unfinished search in {out}; start one with 'seqapp tune TEMPLATE --search KEY=SPEC'")
    return max(found, key=lambda path: (path / STATE_FILE).stat().st_mtime_ns)


def saved_status(state: Path) -> str | None:
    try:
        return json.loads(state.read_text(encoding="utf-8")).get("status")
    except (OSError, ValueError, AttributeError):
        return None


def resume_command(search: Search) -> str:
    return f"seqapp tune --resume {search.path}"


# -- starting and resuming -----------------------------------------------------------------
@dataclass
class Plan:
    """What a search needs to train its trials: the config of given values, and the spaces."""

    config_of: Callable[[list[str]], Config]
    spaces: list[Space]


def planner(settings: dict) -> Callable[[list[str]], Config]:
    """``config_of(overrides)``: the template resolved as ``seqapp train`` resolves it, with the
    search's ``--epochs``, ``--random-seed`` and ``--set`` and then ``overrides`` (a trial's values)."""
    from seqapp.tasks import load_config

    fixed = [f"train.{key}={settings[key]}" for key in ("epochs", "random_seed") if settings.get(key) is not None]
    data = Path(settings["data"]) if settings.get("data") else None

    def config_of(overrides: list[str]) -> Config:
        return load_config(settings["template"], [*settings["overrides"], *fixed, *overrides], data_file=data)

    return config_of


def start(template: str, searches: list[str], *, trials: int, method: str, objective: str,
          max_minutes: float | None, data: Path | None, overrides: list[str], out: Path, epochs: int | None,
          random_seed: int | None) -> tuple[Search, Plan, list[str]]:
    """A new search, every option checked before TensorFlow starts: its folder, plan and notes."""
    from seqapp.tasks import get_task

    check_limits(trials, max_minutes)
    check_method(method)
    if Path(template).suffix in (".yaml", ".yml") or Path(template).is_file():
        template = str(Path(template).absolute())  # a resumed search may start elsewhere
    settings = {"template": template, "overrides": list(overrides),
                "data": str(Path(data).absolute()) if data else None, "epochs": epochs, "random_seed": random_seed,
                "searches": list(searches), "method": method, "objective": objective, "trials": trials,
                "max_minutes": max_minutes}
    config_of = planner(settings)
    cfg = config_of([])
    task = get_task(cfg.task)
    check_objective(objective, task)
    spaces, notes = check_spaces(searches, config_of)
    if data is not None and not data.is_dir():  # as seqapp train: a folder is the task's to accept or refuse
        from seqapp import datafiles

        datafiles.read_text(data)
    task.check_sources(cfg)
    settings |= {"task": cfg.task, "seed": cfg.train.random_seed, "base": drafts.settings_of(cfg)}
    return create(out, cfg.task, settings), Plan(config_of, spaces), notes


def reopen(path: Path | None, out: Path, trials: int | None, max_minutes: float | None) -> tuple[Search, Plan]:
    """The search in ``path`` (default: the newest unfinished one under ``out``), to go on with its
    saved settings; ``trials`` and ``max_minutes``, when given, replace the saved limits."""
    search = open_search(Path(path) if path else newest(out))
    try:
        settings = search.settings
        check_limits(trials or settings["trials"], max_minutes)
        done = len(search.trials)
        if trials is not None:
            if trials <= done:
                raise SeqappError(f"--trials {trials}: the search in {search.path} has {done} trials already; "
                                  "give more to go on")
            settings["trials"] = trials
        if max_minutes is not None:
            settings["max_minutes"] = max_minutes
        if search.status == "done" and trials is None:
            raise SeqappError(f"the search in {search.path} is finished ({done} trials); to go on, give more: "
                              f"{resume_command(search)} --trials N")
        check_method(settings["method"])
        config_of = planner(settings)
        edits = drafts.edited_settings(settings["base"], config_of([]))
        if edits:
            raise SeqappError(f"the template's settings changed since the search began ({', '.join(edits[:3])}); "
                              f"restore them, or start a new search")
        spaces, _ = check_spaces(settings["searches"], config_of)
        search.save()
    except BaseException:
        search.unlock()
        raise
    return search, Plan(config_of, spaces)


def check_limits(trials: int, max_minutes: float | None) -> None:
    if not 2 <= trials <= 10_000:
        raise SeqappError(f"--trials {trials} is out of range; give 2 to 10000 trials (trial 0 is the template's "
                          "own settings; one run alone is 'seqapp train')")
    if max_minutes is not None and not (math.isfinite(max_minutes) and max_minutes > 0):
        raise SeqappError(f"--max-minutes {max_minutes} is no time budget; give a number of minutes above 0")


# -- the oracle ----------------------------------------------------------------------------
def make_oracle(search: Search, spaces: list[Space], first: dict) -> Any:
    """KerasTuner's oracle for ``search``, its state reloaded from ``oracle/`` when there is one.

    Subclassed for three things: trial 0 takes the template's values ``first``; a Bayesian
    proposal already tried is replaced by an untried random one (a Gaussian process can
    propose the same point twice, which would train the same run again); and the oracle's
    files are written through a temporary name and a rename, so a kill never leaves half a file.
    """
    import keras_tuner

    settings = search.settings
    base = (keras_tuner.oracles.BayesianOptimizationOracle if settings["method"] == "bayesian"
            else keras_tuner.oracles.RandomSearchOracle)

    class Oracle(base):
        def populate_space(self, trial_id: str) -> dict:
            if not self.trials:
                return {"status": "RUNNING", "values": dict(first)}
            proposed = super().populate_space(trial_id)
            if proposed["status"] == "RUNNING" and self._duplicate(proposed["values"]):
                values = self._random_values()
                proposed = {"status": "RUNNING" if values else "STOPPED", "values": values}
            return proposed

        def save(self) -> None:
            files.write_json(Path(self._get_oracle_fname()), self.get_state())

        def _save_trial(self, trial: Any) -> None:
            files.write_json(Path(self._get_trial_dir(trial.trial_id)) / "trial.json", trial.get_state())

    hyperparameters = keras_tuner.HyperParameters()
    for space in spaces:
        space.add_to(hyperparameters)
    options: dict[str, Any] = {}
    if settings["method"] == "bayesian":  # random points first: half the trials, at most KerasTuner's 3 per dimension
        options["num_initial_points"] = max(2, min(3 * len(spaces), math.ceil(settings["trials"] / 2)))
    # KerasTuner reads a seed of 0 as "none" and draws one, so the template's seed is shifted by one
    oracle = Oracle(objective=keras_tuner.Objective(settings["objective"], OBJECTIVES[settings["objective"]]),
                    max_trials=settings["trials"], hyperparameters=hyperparameters, seed=settings["seed"] + 1,
                    max_consecutive_failed_trials=settings["trials"] + 1, **options)
    oracle.verbose = 0  # seqapp prints its own lines
    oracle._set_project_dir(str(search.path), "oracle")  # what KerasTuner's own tuners do with an oracle
    if (search.path / "oracle" / "oracle.json").exists():
        oracle.reload()  # an interrupted trial goes to the oracle's retry queue
        for trial in oracle.trials.values():  # killed between a trial's file and the oracle's own
            if trial.status == "RUNNING" and trial.trial_id not in oracle._retry_queue:
                oracle._retry_queue.append(trial.trial_id)
    return oracle


# -- running the search --------------------------------------------------------------------
def run(search: Search, plan: Plan, say: Say) -> None:
    """Run trials until the oracle has none left or the time budget is spent; each trial's
    start and end is one line through ``say``. Ctrl-C stops the training in progress, saved."""
    import gc

    first = {space.key: current_value(plan.config_of([]), space.key) for space in plan.spaces}
    oracle = make_oracle(search, plan.spaces, first)
    budget = search.settings.get("max_minutes")
    mark, failures = time.monotonic(), 0
    search.status = "searching"
    with quiet_retracing():
        while True:
            continuing = any(trial.status == "RUNNING" for trial in oracle.trials.values())
            spent = search.spent_s + time.monotonic() - mark
            if budget is not None and not continuing and spent >= budget * 60:
                search.status = "budget"
                say(f"time budget of {budget:g} min reached after {len(search.trials)} trials ({spent / 60:.1f} min); "
                    f"no new trial started. more time: {resume_command(search)} --max-minutes M")
                break
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # scikit-learn's convergence notes while fitting the process
                trial = oracle.create_trial(TUNER_ID)
            if trial.status == "STOPPED":
                search.status = "done"
                if len(oracle.trials) < search.settings["trials"]:
                    say(f"no untried values left after {len(oracle.trials)} trials")
                break
            record = run_trial(search, plan, trial, oracle, say)
            if record["status"] == "completed":
                failures = 0
                oracle.update_trial(trial.trial_id, {search.settings["objective"]: record["objective"]})
                trial.status = "COMPLETED"
            else:
                failures += 1
                trial.status, trial.message = "FAILED", record["error"]
            search.spent_s += time.monotonic() - mark
            mark = time.monotonic()
            search.save()
            oracle.end_trial(trial)
            gc.collect()
            if failures >= MAX_FAILURES:
                search.save()
                raise SeqappError(f"{failures} trials in a row failed (the last: {record['error']}); check the "
                                  f"searched ranges, then go on with: {resume_command(search)}")
    search.save()


def run_trial(search: Search, plan: Plan, trial: Any, oracle: Any, say: Say) -> dict:
    """Train (or resume, or find) the run of one trial and return its record (saved in search.json)."""
    from seqapp import training

    number, total = int(trial.trial_id), search.settings["trials"]
    if str(number) in search.trials:  # finished before an interruption, and recorded
        return search.trials[str(number)]
    values = {space.key: space.cast(trial.hyperparameters.values[space.key]) for space in plan.spaces}
    overrides = [f"{key}={json.dumps(value)}" for key, value in values.items()]
    cfg = plan.config_of(overrides)
    name = search.trial_name(number)
    shown = " ".join(f"{key}={show(value)}" for key, value in values.items())
    began = time.monotonic()
    published, draft = finished_run(search, name), interrupted_draft(search, name, cfg)
    try:
        if published is not None:
            say(f"trial {number}/{total - 1}: its run was saved before the interruption: {published}")
            path = published
        elif draft is not None:
            say(f"trial {number}/{total - 1}: resuming its interrupted training in {draft}")
            path = training.resume(draft, search.out, verbose=0, log=ignore).path
        else:
            say(f"trial {number}/{total - 1}: {shown}" + (" (the template's own settings)" if number == 0 else ""))
            path = training.train(cfg, search.out, name, verbose=0, log=ignore).path
        objective = objective_of(path, search.settings["objective"], cfg)
    except SeqappError as exc:
        if number == 0:
            raise  # the template itself does not train: nothing else would
        record = {"trial": number, "values": values, "status": "failed", "error": str(exc),
                  "seconds": round(time.monotonic() - began, 1)}
        say(f"trial {number}/{total - 1}: failed: {exc}")
    else:
        record = {"trial": number, "values": values, "status": "completed", "objective": objective,
                  "seconds": round(time.monotonic() - began, 1), "run": path.name}
        best = best_record(search, extra=record)
        say(f"trial {number}/{total - 1}: {search.settings['objective']} {objective:.4f} in "
            f"{record['seconds']:.0f} s (best so far {best['objective']:.4f}, trial {best['trial']}): {path}")
    search.trials[str(number)] = record
    return record


def finished_run(search: Search, name: str) -> Path | None:
    """The run folder a trial called ``name`` published, if it did (``<time>-<name>[-N]``)."""
    pattern = re.compile(rf"\d{{8}}-\d{{6}}-{re.escape(name)}(-\d+)?")
    from seqapp import runs

    found = [path for path in runs.run_dirs(search.out, search.task) if pattern.fullmatch(path.name)]
    return found[-1] if found else None


def interrupted_draft(search: Search, name: str, cfg: Config) -> Path | None:
    """The draft a trial called ``name`` left when it was interrupted, if it began with ``cfg``'s
    settings (a draft with other settings is left alone, and the trial trained anew)."""
    for path in reversed(drafts.find(search.out, search.task)):
        info = drafts.info_problem(path)[0]
        if info.get("name") == name and not drafts.is_locked(path):
            recorded = info.get("settings") or {}
            if recorded.get("sha256") == drafts.settings_of(cfg)["sha256"]:
                return path
    return None


def objective_of(run: Path, objective: str, cfg: Config) -> float:
    """The trial's objective: the validation loss of the weights the run kept (the best epoch's
    under early stopping, else the last's), or the validation accuracy in its metrics.json."""
    from seqapp import training

    if objective == "val_loss":
        losses = [float(row["val_loss"]) for row in training.read_history(run / "history.csv") if row.get("val_loss")]
        if not losses:
            raise SeqappError(f"{run} has no validation loss (no validation split); set a validation share "
                              "(data.val_fraction or the task's like) or choose another objective", resumable=False)
        return min(losses) if cfg.train.patience > 0 else losses[-1]
    accuracy = files.read_json(run / "metrics.json").get("val", {}).get("accuracy")
    if accuracy is None:
        raise SeqappError(f"{run} has no validation accuracy (no validation split); set a validation share "
                          "(data.val_fraction)", resumable=False)
    return float(accuracy)


def show(value: Any) -> str:
    """A setting's value, short: floats to 4 significant digits."""
    return f"{value:.4g}" if isinstance(value, float) else json.dumps(value) if isinstance(value, bool) else str(value)


def ignore(_: str) -> None:
    """Training's own progress lines: a search prints one line per trial instead."""


def best_record(search: Search, extra: dict | None = None) -> dict | None:
    """The completed trial with the best objective (the earlier one on a tie)."""
    records = [*search.trials.values(), *([extra] if extra else [])]
    done = sorted((record for record in records if record["status"] == "completed"), key=lambda r: r["trial"])
    if not done:
        return None
    sign = 1 if OBJECTIVES[search.settings["objective"]] == "min" else -1
    return min(done, key=lambda record: sign * record["objective"])


class RetracingNote(logging.Filter):
    """Drops TensorFlow's "triggered tf.function retracing" warning: every trial builds new
    models in the same process, which is what the warning counts, and nothing is wrong."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "tf.function retracing" not in record.getMessage()


class quiet_retracing:  # noqa: N801 (used as a context manager)
    def __enter__(self) -> None:
        self.filter = RetracingNote()
        logging.getLogger("tensorflow").addFilter(self.filter)

    def __exit__(self, *exc: Any) -> None:
        logging.getLogger("tensorflow").removeFilter(self.filter)


# -- the table at the end ------------------------------------------------------------------
def table(search: Search) -> list[str]:
    """The trials as aligned rows (trial, the searched settings, objective, time, run), then the best run."""
    keys = [text.partition("=")[0].strip() for text in search.settings["searches"]]
    objective = search.settings["objective"]
    header = ["trial", *keys, objective, "time", "run"]
    rows = []
    for record in sorted(search.trials.values(), key=lambda r: r["trial"]):
        result = f"{record['objective']:.4f}" if record["status"] == "completed" else "failed"
        run = str(search.run_path(record)) if record.get("run") else record.get("error", "")[:60]
        rows.append([str(record["trial"]), *(show(record["values"].get(key)) for key in keys), result,
                     f"{record['seconds']:.0f} s", run])
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header) - 1)]
    lines = ["  ".join([*(cell.ljust(width) for cell, width in zip(row[:-1], widths)), row[-1]]).rstrip()
             for row in [header, *rows]]
    best = best_record(search)
    if best is None:
        return [*lines, "no trial finished"]
    first = search.trials.get("0")
    against = (f"; trial 0, the template's settings: {first['objective']:.4f}"
               if first and first["status"] == "completed" and best["trial"] != 0 else "")
    lines += ["", f"best: trial {best['trial']}, {objective} {best['objective']:.4f}{against}",
              f"best run: {search.run_path(best)}",
              f"use it with --run, e.g. seqapp evaluate --run {search.run_path(best)}"]
    return lines
