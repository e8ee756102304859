"""``seqapp serve``: a run behind an HTTP JSON API (FastAPI on uvicorn).

The command checks its settings, takes the port and loads the run before it serves, so a
wrong flag, a busy port or a damaged run is one error line and exit 2, never a half-started
server. The loaded run, its limits and the warm-up live in :mod:`seqapp.serve_service`, the
routes in :mod:`seqapp.serve_app`, the worker thread and the micro-batching in
:mod:`seqapp.serve_batching`, the timeouts, caps and quiet log that face untrusted clients in
:mod:`seqapp.serve_guard`, the ``/metrics`` page in :mod:`seqapp.serve_metrics`; this module is
the command and uvicorn.

FastAPI and uvicorn are the ``serve`` extra and are imported only here, when the command
runs, so ``seqapp --help`` stays fast and works without them.
"""

from __future__ import annotations

import contextlib
import errno
import importlib.util
import ipaddress
import logging
import os
import signal
import socket
import sys
import threading
from pathlib import Path
from typing import Annotated, Any

import typer

from seqapp.engines import check_engine
from seqapp.errors import SeqappError
from seqapp.serve_service import Exposure, Limits, Service, load

EXTRA_MISSING = 'seqapp serve needs the serve extra: pip install "seqapp[serve]"'
# file descriptors kept beside the connections: the model, its libraries and the logs (about 50-100), and
# the sockets accepted in a burst before the connections past the cap are closed (a few ACCEPT_BURSTs)
FILE_RESERVE = 256
ACCEPT_BURST = 32  # connections accepted in one turn of the event loop (asyncio: the listen backlog)
LISTEN_BACKLOG = 2048  # connections the kernel holds until they are accepted
DEFAULT_MAX_CONNECTIONS = 1000
MAX_TIMEOUT_S = 3600.0
log = logging.getLogger("seqapp")


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
    token: Annotated[str | None, typer.Option(
        "--token", envvar="SEQAPP_TOKEN", show_default=False,
        help="A secret that /predict and /generate require as 'Authorization: Bearer TOKEN'. Prefer the "
             "SEQAPP_TOKEN variable: a flag shows in the process list.")] = None,
    info_paths: Annotated[bool, typer.Option(
        "--info-paths/--no-info-paths", help="Show the run's absolute path and the config's paths in /info "
                                             "(by default: file and folder names only).")] = False,
    header_timeout: Annotated[float, typer.Option(
        "--header-timeout", help="Seconds a client has to send a whole request head (408 after).")] = 10.0,
    body_timeout: Annotated[float, typer.Option(
        "--body-timeout", help="Seconds a client has to send a request body after its head (408 after).")] = 10.0,
    keep_alive_timeout: Annotated[float, typer.Option(
        "--keep-alive-timeout", help="Seconds an idle kept-alive connection stays open.")] = 5.0,
    max_connections: Annotated[int | None, typer.Option(
        "--max-connections", show_default=False,
        help=f"Most open connections (default {DEFAULT_MAX_CONNECTIONS}, less where the file limit is lower); "
             "past it the oldest idle one is closed.")] = None,
    max_in_flight: Annotated[int, typer.Option(
        "--max-in-flight", help="Most requests answered at once (/health and /metrics aside); 503 past it.")] = 128,
    shutdown_timeout: Annotated[float, typer.Option(
        "--shutdown-timeout", help="Seconds requests in flight get to finish after SIGTERM or Ctrl-C; then the "
                                   "server exits, without waiting for a model call.")] = 5.0,
) -> None:
    """Serve a run over HTTP: POST /predict, POST /generate (streamed), GET /health, GET /info, GET /metrics,
    docs at /docs."""
    limits = Limits(max_inputs, max_chars, max_tokens)
    check_settings(limits, port, batch_wait_ms, max_batch, engine)
    check_exposure(token, {"--header-timeout": header_timeout, "--body-timeout": body_timeout,
                           "--keep-alive-timeout": keep_alive_timeout}, shutdown_timeout, max_connections,
                   max_in_flight)
    require_extra()
    exposure = Exposure(token, info_paths, header_timeout, body_timeout, keep_alive_timeout, shutdown_timeout,
                        connection_cap(max_connections, raise_file_limit()), max_in_flight)
    listener = listen(host, port)
    warn_if_open(listener, exposure)
    previous = signal.signal(signal.SIGTERM, stop_on_sigterm)  # while loading; uvicorn's own while serving
    service = None
    try:
        service = load(run_dir, out, limits, engine, batching=batching, wait_s=batch_wait_ms / 1000,
                       max_batch=max_batch)
        run_server(service, listener, exposure)
    except KeyboardInterrupt:
        typer.echo("seqapp serve stopped", err=True)
    finally:
        signal.signal(signal.SIGTERM, previous)
        listener.close()
    if service is not None and service.worker.busy:
        exit_now("seqapp serve: a model call was still running at shutdown; exiting without waiting for it")


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


def check_exposure(token: str | None, timeouts: dict[str, float], shutdown_timeout: float,
                   max_connections: int | None, max_in_flight: int) -> None:
    """Refuse a token that cannot travel in a header, and impossible timeouts and caps."""
    if token is not None and (not token or any(not 33 <= ord(char) <= 126 for char in token)):
        raise SeqappError("--token (or SEQAPP_TOKEN) must be printable ASCII without spaces; make one with: "
                          "python -c 'import secrets; print(secrets.token_urlsafe(32))'")
    for flag, seconds in timeouts.items():
        if not 0 < seconds <= MAX_TIMEOUT_S:  # NaN fails this too
            raise SeqappError(f"{flag} {seconds} must be a number of seconds in (0, {MAX_TIMEOUT_S:g}]; "
                              "a few seconds is typical")
    if not 0 <= shutdown_timeout <= MAX_TIMEOUT_S:
        raise SeqappError(f"--shutdown-timeout {shutdown_timeout} must be in 0..{MAX_TIMEOUT_S:g} seconds")
    for flag, value in (("--max-connections", max_connections), ("--max-in-flight", max_in_flight)):
        if value is not None and value < 1:
            raise SeqappError(f"{flag} {value} must be at least 1")


def raise_file_limit() -> int:
    """Raise this process's soft limit on open files to its hard limit (each connection takes one);
    the limit now in force."""
    try:
        import resource
    except ImportError:  # not a Unix system: assume the common default
        return 512
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = hard if hard != resource.RLIM_INFINITY else 1 << 20
    if soft == resource.RLIM_INFINITY or soft >= wanted:
        return wanted if soft == resource.RLIM_INFINITY else soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    except (ValueError, OSError):
        return soft
    return wanted


def connection_cap(requested: int | None, file_limit: int) -> int:
    """The most connections to keep open: ``requested`` (default :data:`DEFAULT_MAX_CONNECTIONS`),
    within the file limit less :data:`FILE_RESERVE`, so that accepting never runs out of descriptors."""
    room = file_limit - FILE_RESERVE
    if room < 1:
        raise SeqappError(f"the limit on open files ({file_limit}, ulimit -n) leaves no room for connections "
                          f"beside the {FILE_RESERVE} kept for the model and the logs; raise ulimit -n")
    if requested is None:
        return min(DEFAULT_MAX_CONNECTIONS, room)
    if requested > room:
        raise SeqappError(f"--max-connections {requested} needs more open files than this process may have "
                          f"(ulimit -n {file_limit}, of which {FILE_RESERVE} are kept for the model and the logs); "
                          f"use at most {room}, or raise ulimit -n")
    return requested


def warn_if_open(listener: socket.socket, exposure: Exposure) -> None:
    """One line when the server listens beyond this machine without a token."""
    address = listener.getsockname()[0]
    try:
        loopback = ipaddress.ip_address(address.split("%")[0]).is_loopback
    except ValueError:
        loopback = False
    if not loopback and exposure.token is None:
        log.warning(f"listening on {address}, beyond this machine, without a token: anyone who can reach the "
                    "port can use the model; set SEQAPP_TOKEN (docs/exposure.md)")


def exit_now(message: str) -> None:
    """Leave at once with exit 0, after the log: a model call cannot be interrupted, and waiting for its
    thread (what the interpreter does at exit) could take minutes."""
    sys.stderr.write(message + "\n")
    sys.stdout.flush()
    sys.stderr.flush()
    logging.shutdown()
    os._exit(0)


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
        listener.listen(LISTEN_BACKLOG)
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


def run_server(service: Service, listener: socket.socket, exposure: Exposure) -> None:
    """Serve until SIGTERM or Ctrl-C, then shut down gracefully (exit 0): requests in flight get
    ``exposure.shutdown_timeout`` seconds, then they are cut off (503)."""
    import uvicorn

    from seqapp.serve_app import build_app
    from seqapp.serve_guard import Gate, Guard, protocol_class
    from seqapp.serve_metrics import Metrics

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

        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            await super().startup(sockets)
            for sock in sockets or []:  # asyncio listens with the accept burst as backlog: widen the queue again
                sock.listen(LISTEN_BACKLOG)

    host, port = listener.getsockname()[:2]
    url = f"http://{f'[{host}]' if ':' in host else host}:{port}"
    gate = Gate(exposure, Metrics())
    config = uvicorn.Config(Guard(build_app(service, url, exposure, gate), gate), log_level="warning",
                            access_log=False, lifespan="on", http=protocol_class(gate), ws="none",
                            backlog=ACCEPT_BURST,
                            timeout_keep_alive=exposure.keep_alive_timeout,  # type: ignore[arg-type]
                            timeout_graceful_shutdown=exposure.shutdown_timeout)  # type: ignore[arg-type]
    Server(config).run(sockets=[listener])
    sys.stderr.flush()
