"""``seqapp serve``: a run behind an HTTP JSON API (FastAPI on uvicorn).

The command checks its settings, takes the port and loads the run before it serves, so a
wrong flag, a busy port or a damaged run is one error line and exit 2, never a half-started
server. The loaded run, its limits and the warm-up live in :mod:`seqapp.serve_service`, the
routes in :mod:`seqapp.serve_app`, the worker thread and the micro-batching in
:mod:`seqapp.serve_batching`; this module is the command and uvicorn.

FastAPI and uvicorn are the ``serve`` extra and are imported only here, when the command
runs, so ``seqapp --help`` stays fast and works without them.
"""

from __future__ import annotations

import contextlib
import errno
import importlib.util
import signal
import socket
import sys
import threading
from pathlib import Path
from typing import Annotated, Any

import typer

from seqapp.engines import check_engine
from seqapp.errors import SeqappError
from seqapp.serve_service import Limits, Service, load

EXTRA_MISSING = 'seqapp serve needs the serve extra: pip install "seqapp[serve]"'


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
    check_engine(engine)


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
