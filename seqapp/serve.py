"""``seqapp serve``: a run behind an HTTP JSON API (FastAPI on uvicorn).

The command checks its settings, takes the port and loads the run before it serves, so a
wrong flag, a busy port or a damaged run is one error line and exit 2, never a half-started
server. The model is loaded and called once (a warm-up) at start-up, on the fast engine the
CLI would use (:func:`seqapp.cli.start_engine`): a run with LiteRT graphs is served without
importing TensorFlow. The routes live in :mod:`seqapp.serve_app`, the worker thread and the
micro-batching in :mod:`seqapp.serve_batching`.

FastAPI and uvicorn are the ``serve`` extra and are imported only here, when the command
runs, so ``seqapp --help`` stays fast and works without them.
"""

from __future__ import annotations

import contextlib
import errno
import importlib.util
import json
import logging
import signal
import socket
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated, Any

import typer

from seqapp import runs
from seqapp.errors import SeqappError

EXTRA_MISSING = 'seqapp serve needs the serve extra: pip install "seqapp[serve]"'
OPTION_TYPES = (bool, int, float, str)  # predict options a request may set (not paths: no files written)
MAX_BEAM = 16  # widest beam a request may ask for: a wider one would hold the model thread for seconds
GENERATE_LENGTH = 300  # the /generate length when none is given, as for 'seqapp generate'


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


def command(
    run_dir: Annotated[Path | None, typer.Option(
        "--run", help="A run folder; default: the latest run.")] = None,
    out: Annotated[Path, typer.Option(
        "--out", envvar="SEQAPP_RUNS", help="Folder that holds the runs.")] = Path("runs"),
    host: Annotated[str, typer.Option("--host", help="Address to listen on (0.0.0.0: every interface).")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="Port to listen on (0: any free port, printed).")] = 8000,
    max_inputs: Annotated[int, typer.Option("--max-inputs", help="Most inputs in one /predict request.")] = 64,
    max_chars: Annotated[int, typer.Option("--max-chars", help="Longest text (input or seed), in characters.")] = 2000,
    max_tokens: Annotated[int, typer.Option(
        "--max-tokens", help="Most tokens (or steps) one request may ask to generate.")] = 1000,
    batch_wait_ms: Annotated[float, typer.Option(
        "--batch-wait-ms", help="Longest a /predict request waits to share a model call with others.")] = 3.0,
    max_batch: Annotated[int, typer.Option("--max-batch", help="Most inputs merged into one model call.")] = 64,
    batching: Annotated[bool, typer.Option(
        "--batching/--no-batching", help="Merge concurrent /predict requests into one model call.")] = True,
    engine: Annotated[str, typer.Option(
        "--engine", help="auto: the run's LiteRT graphs when it has them, else tf; litert; or tf (Keras).")] = "auto",
) -> None:
    """Serve a run over HTTP: POST /predict, POST /generate (streamed), GET /health, GET /info, docs at /docs."""
    limits = Limits(max_inputs, max_chars, max_tokens)
    check_settings(limits, port, batch_wait_ms, max_batch, engine)
    require_extra()
    listener = listen(host, port)
    previous = signal.signal(signal.SIGTERM, stop_on_sigterm)  # while loading; uvicorn's own while serving
    try:
        service = load(run_dir, out, limits, engine, batching=batching, wait_s=batch_wait_ms / 1000,
                       max_batch=max_batch)
        run_server(service, listener)
    except KeyboardInterrupt:
        typer.echo("seqapp serve stopped", err=True)
    finally:
        signal.signal(signal.SIGTERM, previous)
        listener.close()


def check_settings(limits: Limits, port: int, batch_wait_ms: float, max_batch: int, engine: str) -> None:
    """Refuse impossible settings before anything is imported or loaded."""
    for flag, value in (("--max-inputs", limits.max_inputs), ("--max-chars", limits.max_chars),
                        ("--max-tokens", limits.max_tokens), ("--max-batch", max_batch)):
        if value < 1:
            raise SeqappError(f"{flag} {value} must be at least 1")
    if not 0 <= port <= 65535:
        raise SeqappError(f"--port {port} must be in 0..65535 (0 picks a free port)")
    if not 0 <= batch_wait_ms <= 1000:  # NaN fails this too
        raise SeqappError(f"--batch-wait-ms {batch_wait_ms} must be in 0..1000; a few milliseconds is typical")
    if engine not in ("auto", "litert", "tf"):
        raise SeqappError(f"--engine {engine!r} is not known; use auto, litert or tf")


def require_extra() -> None:
    """One clear line when FastAPI or uvicorn is not installed."""
    if any(importlib.util.find_spec(name) is None for name in ("fastapi", "uvicorn")):
        raise SeqappError(EXTRA_MISSING)


def listen(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port``, taken before the model loads: a busy port fails at once."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                             flags=socket.AI_PASSIVE)[0]
    except (socket.gaierror, UnicodeError) as exc:
        raise SeqappError(f"--host {host!r} is not a known address ({exc}); use e.g. 127.0.0.1 or 0.0.0.0") from None
    listener = socket.socket(family, kind, proto)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listener.bind(address)
        listener.listen(2048)
    except OSError as exc:
        listener.close()
        if exc.errno == errno.EADDRINUSE:
            raise SeqappError(f"port {port} on {host} is in use; stop what listens there or choose another "
                              "--port") from None
        raise SeqappError(f"cannot listen on {host}:{port} ({exc.strerror or exc}); choose another --host or "
                          "--port") from None
    return listener


def stop_on_sigterm(signum: int, frame: Any) -> None:
    """SIGTERM while loading: stop as Ctrl-C would, with exit 0."""
    raise KeyboardInterrupt


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
        self.metrics = runs.finite(run.metrics)
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

    def info(self) -> dict:
        """What ``GET /info`` shows besides the live counters."""
        prep = self.run.preprocessing
        return {
            "task": self.run.task, "summary": self.task.summary, "run": str(self.run.path), "engine": self.engine,
            "config": self.run.config.to_dict(), "metrics": self.metrics, "vocabulary_size": vocabulary_sizes(prep),
            "predict_options": {name: kind.__name__ for name, kind in self.predict_options.items()},
            "takes_inputs": self.takes_inputs, "generates": self.task.generates,
            "limits": {**asdict(self.limits), "max_beam": MAX_BEAM, "max_body_bytes": self.limits.max_body_bytes},
            "batching": {"enabled": self.batcher.enabled, "wait_ms": self.batcher.wait_s * 1000,
                         "max_batch": self.batcher.max_batch},
            "load_seconds": round(self.load_seconds, 3),
        }


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
    from seqapp.cli import start_engine
    from seqapp.tasks import get_task

    started = time.perf_counter()
    run = runs.find(run_dir, out)
    task = get_task(run.task)()
    service = Service(run, task, start_engine(task, run, engine), limits, **batching)
    service.worker.executor.submit(service.warm_up).result()  # on the thread that will make every call
    service.load_seconds = time.perf_counter() - started
    return service


def run_server(service: Service, listener: socket.socket) -> None:
    """Serve until SIGTERM or Ctrl-C, then shut down gracefully (exit 0)."""
    import uvicorn

    from seqapp.serve_app import QuietCancel, build_app

    class Server(uvicorn.Server):
        """uvicorn's server, except that a stopping signal ends it quietly: uvicorn re-raises the signal
        after its graceful shutdown, which would make SIGTERM exit 143 and Ctrl-C a KeyboardInterrupt."""

        @contextlib.contextmanager
        def capture_signals(self) -> Any:
            if threading.current_thread() is not threading.main_thread():
                yield
                return
            stops = (signal.SIGINT, signal.SIGTERM)
            previous = {sig: signal.signal(sig, self.handle_exit) for sig in stops}
            try:
                yield
            finally:
                for sig, handler in previous.items():
                    signal.signal(sig, handler)

    host, port = listener.getsockname()[:2]
    url = f"http://{f'[{host}]' if ':' in host else host}:{port}"
    config = uvicorn.Config(QuietCancel(build_app(service, url)), log_level="warning", access_log=False,
                            timeout_graceful_shutdown=5, lifespan="on")
    Server(config).run(sockets=[listener])
    sys.stderr.flush()
