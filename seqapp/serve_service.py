"""What ``seqapp serve`` serves: the loaded run, what one request may ask for, and the warm-up.

:func:`load` finds the run and loads it once, on the engine the CLI would choose
(:func:`seqapp.engines.start_engine`: a run with LiteRT graphs is served without importing
TensorFlow), and calls it once so that the first request does not pay for loading and
compiling. :class:`Service` is what the routes (:mod:`seqapp.serve_app`) answer with.
"""

from __future__ import annotations

import json
import logging
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from seqapp import files, runs
from seqapp.engines import start_engine
from seqapp.errors import SeqappError

OPTION_TYPES = (bool, int, float, str)  # predict options a request may set (not paths: no files written)
MAX_BEAM = 16  # widest beam a request may ask for: a wider one would hold the model thread for seconds
MAX_HISTORY = 100_000  # most values in a series run's /predict history (the model reads only its last window)
GENERATE_LENGTH = 300  # the /generate length when none is given, as for 'seqapp generate'
# an absolute path inside a text: "/" not after a word, a point, a colon or another "/" (so not in a URL
# or a fraction), then folders; the last part (the file or folder name) is what is kept
ABSOLUTE_PATH = re.compile(r"(?<![\w.:/~-])(?:/[^/\s'\"]+)+/([^/\s'\"]*)")


@dataclass(frozen=True)
class Limits:
    """What one request may ask for; the server refuses more with a 4xx, never runs out of memory."""

    max_inputs: int
    max_chars: int
    max_tokens: int

    @property
    def max_body_bytes(self) -> int:
        # a JSON-escaped character takes at most 6 bytes (\uXXXX); 64 KiB for the rest of the body
        return self.max_inputs * (self.max_chars * 6 + 8) + 65536


@dataclass(frozen=True)
class Exposure:
    """How the server meets clients it cannot trust: the token, what ``/info`` shows, and the
    timeouts and caps that keep a slow, idle or crowded client from holding it (``seqapp serve``'s
    flags of the same names; seconds)."""

    token: str | None = field(default=None, repr=False)  # bearer token for /predict and /generate
    info_paths: bool = False  # /info shows the run's absolute path and the config's paths
    header_timeout: float = 10.0  # a request head must be complete this long after its first byte
    body_timeout: float = 10.0  # a request body must be complete this long after its head
    keep_alive_timeout: float = 5.0  # an idle connection is closed after this long
    shutdown_timeout: float = 5.0  # SIGTERM: requests in flight get this long to finish
    max_connections: int = 1000  # open connections; past it the oldest idle one is closed
    max_in_flight: int = 128  # requests being answered (/health and /metrics aside); past it 503


def without_paths(value: Any) -> Any:
    """``value`` (JSON-like) with every absolute path in its texts cut to its last part (a file name)."""
    if isinstance(value, str):
        return ABSOLUTE_PATH.sub(r"\1", value)
    if isinstance(value, dict):
        return {key: without_paths(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [without_paths(item) for item in value]
    return value


class Service:
    """The loaded run and what the routes need to answer with it."""

    def __init__(self, run: runs.Run, task: Any, engine: str, limits: Limits, *, batching: bool, wait_s: float,
                 max_batch: int) -> None:
        from seqapp.serve_batching import Batcher, Worker

        self.run, self.task, self.engine, self.limits = run, task, engine, limits
        declared = {option.name: option.type for option in task.predict_options}
        self.json_output = declared.get("json") is bool
        self.predict_options = {name: kind for name, kind in declared.items()
                                if kind in OPTION_TYPES and name != "json"}
        self.needs_inputs = refusal(task, []) is not None
        self.takes_inputs = refusal(task, ["text"]) is None
        self.worker = Worker()
        # a task that generates decodes its inputs one by one: merging them would only make each wait longer
        self.batcher = Batcher(self.predict_outputs, self.worker, enabled=batching and not task.generates,
                               wait_s=wait_s, max_batch=max_batch)
        self.metrics = files.finite(run.metrics)
        self.load_seconds = 0.0

    def predict_outputs(self, inputs: list[str], options: dict) -> list:
        """``task.predict`` as records (one per output line), on the worker thread."""
        extra: dict[str, Any] = {"json": True} if self.json_output else {}
        if self.task.generates:  # each input is a seed: as long as a /generate without a length
            extra["length"] = min(GENERATE_LENGTH, self.limits.max_tokens)
        if self.engine == "litert":
            extra["engine"] = "litert"
        lines = list(self.task.predict(self.run, inputs, **options, **extra))
        if self.json_output:
            return [json.loads(line) for line in lines]
        return [{"text": line} for line in lines]

    def generation(self, seed: str, options: dict) -> Any:
        """The ``task.generate`` stream of one sample (call and advance it on the worker thread)."""
        extra = {"engine": "litert"} if self.engine == "litert" else {}
        return self.task.generate(self.run, seed, **options, **extra)

    def warm_up(self) -> None:
        """One small call, so that the first request does not pay for loading and compiling."""
        logger = logging.getLogger("seqapp")
        disabled, logger.disabled = logger.disabled, True  # no unknown-word warnings for the dummy input
        try:
            if self.task.generates:
                from seqapp.serve_batching import pull_text

                pull_text(self.generation("", {"length": 1, "random_seed": 0}), least=2)
            else:
                self.predict_outputs(["hello"] if self.takes_inputs else [], {})
        finally:
            logger.disabled = disabled

    def info(self, paths: bool = False) -> dict:
        """What ``GET /info`` shows besides the live counters: the run by its folder name and the
        config without absolute paths, unless ``paths`` (``seqapp serve --info-paths``)."""
        prep = self.run.preprocessing
        shown = {
            "task": self.run.task, "summary": self.task.summary,
            "run": str(self.run.path) if paths else self.run.path.name, "engine": self.engine,
            "config": self.run.config.to_dict(), "metrics": self.metrics, "vocabulary_size": vocabulary_sizes(prep),
            "predict_options": {name: kind.__name__ for name, kind in self.predict_options.items()},
            "takes_inputs": self.takes_inputs, "takes_history": self.task.takes_history,
            "generates": self.task.generates,
            "limits": {**asdict(self.limits), "max_beam": MAX_BEAM, "max_history": MAX_HISTORY,
                       "max_body_bytes": self.limits.max_body_bytes},
            "batching": {"enabled": self.batcher.enabled, "wait_ms": self.batcher.wait_s * 1000,
                         "max_batch": self.batcher.max_batch},
            "load_seconds": round(self.load_seconds, 3),
        }
        return shown if paths else without_paths(shown)


def refusal(task: Any, inputs: list[str]) -> str | None:
    """The task's message when it refuses ``inputs`` (with no options), else None: how the server
    learns, without knowing task names, whether a task needs inputs or takes none."""
    try:
        task.check_inputs(inputs)
    except SeqappError as exc:
        return str(exc)
    return None


def vocabulary_sizes(prep: dict) -> dict[str, int]:
    """Sizes of the vocabularies in a run's preprocessing: ``tokenizer``-like entries and ``*vocab`` lists."""
    sizes = {}
    for key, value in prep.items():
        if isinstance(value, dict) and isinstance(value.get("vocab"), list):
            sizes[key] = len(value["vocab"])
        elif key.endswith("vocab") and isinstance(value, list):
            sizes[key] = len(value)
    return sizes


def load(run_dir: Path | None, out: Path, limits: Limits, engine: str, **batching: Any) -> Service:
    """Find and load the run, choose the engine (TensorFlow only when it is tf) and warm the model up."""
    from seqapp.tasks import find_run, get_task  # the faces' import: the registry loads every task

    started = time.perf_counter()
    run = find_run(run_dir, out)
    task = get_task(run.task)()
    service = Service(run, task, start_engine(task, run, engine), limits, **batching)
    service.worker.executor.submit(service.warm_up).result()  # on the thread that will make every call
    service.load_seconds = time.perf_counter() - started
    return service
