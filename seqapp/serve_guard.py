"""What keeps ``seqapp serve`` answering when clients misbehave: timeouts, caps and a quiet log.

uvicorn (0.29 to 0.x, its h11 protocol) bounds idle keep-alive connections but not the time a
client takes to send its request head or body, nor the number of connections; a client
sending one byte a second, or thousands of idle connections, would hold the server's file
descriptors. :class:`GuardedProtocol` is uvicorn's h11 protocol with:

- a **header timeout**: a new connection, or the next request on a kept-alive one once its
  first byte arrives, must complete its head within ``header_timeout`` seconds, else it is
  answered 408 (closed silently if it never sent a byte);
- a **body timeout**: the body must be complete ``body_timeout`` seconds after the head, else
  408 and the request is abandoned;
- a **connection cap** (:class:`Gate`): past ``max_connections`` the oldest connection waiting
  for a request head is closed to make room (an idle or slow client never locks out a new
  one, so ``/health`` keeps answering), and a new connection is refused with 503 only when
  every open one is busy with a request;
- a throttled log: a misbehaving client costs a counter in ``/metrics``, and the log gets at
  most one line a minute for each kind of event (:class:`Throttle`), never a traceback.

:class:`Guard` is the ASGI side: the cap on requests in flight (503 with one JSON line past
it), the request counters and latencies of ``GET /metrics``, and quiet endings: a client that
went away, or a request cut off at shutdown, leaves no traceback in the log.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import logging
import os
import time
import traceback
from collections.abc import Callable
from typing import Any

from starlette.requests import ClientDisconnect
from uvicorn.protocols.http.h11_impl import H11Protocol

from seqapp.serve_metrics import Metrics, method_label, route_label
from seqapp.serve_service import Exposure

log = logging.getLogger("seqapp")
NOTE_INTERVAL_S = 60.0  # the least time between two log lines about the same kind of event
RESOURCE_ERRORS = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)
UNCAPPED_ROUTES = ("/health", "/metrics")  # probes and scrapers answer even when the cap is reached
TIMEOUT_KEY = "seqapp.timeout"  # set in a request's scope["extensions"] when the protocol timed it out
REASONS = {400: "Bad Request", 408: "Request Timeout", 503: "Service Unavailable"}


class Throttle:
    """At most one log line per ``interval`` seconds for each kind of event; the next line says how
    many were left out. A thousand misbehaving clients make one line, not a thousand."""

    def __init__(self, logger: logging.Logger, interval: float = NOTE_INTERVAL_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.logger, self.interval, self.clock = logger, interval, clock
        self.last: dict[str, float] = {}
        self.missed: dict[str, int] = {}

    def note(self, kind: str, message: str) -> bool:
        """Log ``message`` (a warning) unless a ``kind`` line was logged less than ``interval`` ago."""
        now = self.clock()
        last = self.last.get(kind)
        if last is not None and now - last < self.interval:
            self.missed[kind] = self.missed.get(kind, 0) + 1
            return False
        missed = self.missed.pop(kind, 0)
        self.last[kind] = now
        self.logger.warning(message + (f" ({missed} more since the last such line)" if missed else ""))
        return True


def raw_response(status: int, message: str, *headers: str) -> bytes:
    """A whole HTTP/1.1 response with a one-line JSON body that closes the connection, for the
    protocol to write itself (no request, or none the app may still answer)."""
    body = json.dumps({"error": message}, separators=(",", ":")).encode()
    head = [f"HTTP/1.1 {status} {REASONS.get(status, '')}", "content-type: application/json",
            f"content-length: {len(body)}", "connection: close", *headers]
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body


class Gate:
    """What every connection of one server shares: the settings, the open connections and those
    waiting for a request head (oldest first), the counters and the log throttle."""

    def __init__(self, exposure: Exposure, metrics: Metrics, throttle: Throttle | None = None) -> None:
        self.exposure = exposure
        self.metrics = metrics
        self.throttle = throttle or Throttle(log)
        self.open: set[Any] = set()
        self.idle: dict[Any, None] = {}  # insertion-ordered: the first is the oldest

    def admit(self, connection: Any) -> bool:
        """Make room for a new connection: past the cap the oldest idle one is closed; False when
        every open connection is busy with a request."""
        if len(self.open) >= self.exposure.max_connections:
            if not self.idle:
                self.metrics.closed["refused"] += 1
                self.throttle.note("refused", f"{len(self.open)} connections open, each busy with a request "
                                   "(--max-connections): new connections are refused with 503")
                return False
            oldest = next(iter(self.idle))
            self.release(oldest)
            oldest.evict()
            self.metrics.closed["idle_evicted"] += 1
            self.throttle.note("evicted", f"{self.exposure.max_connections} connections open (--max-connections): "
                               "closing the oldest idle ones to take new ones")
        self.open.add(connection)
        return True

    def release(self, connection: Any) -> None:
        self.open.discard(connection)
        self.idle.pop(connection, None)

    def loop_exception(self, loop: asyncio.AbstractEventLoop, context: dict) -> None:
        """The event loop's error handler: running out of file descriptors on accept() is one line
        (throttled) and a counter, not a traceback a second; anything else as asyncio logs it."""
        exc = context.get("exception")
        if isinstance(exc, OSError) and exc.errno in RESOURCE_ERRORS and "accept" in context.get("message", ""):
            self.metrics.accept_errors += 1
            self.throttle.note("accept", f"cannot accept connections: {os.strerror(exc.errno)} "
                               f"({errno.errorcode.get(exc.errno, exc.errno)}) with {len(self.open)} open; "
                               "retrying every second; lower --max-connections or raise ulimit -n")
            return
        if isinstance(exc, (ConnectionError, TimeoutError)):  # a client reset its connection
            return
        loop.default_exception_handler(context)


class QuietLogger:
    """uvicorn's per-request warnings (an invalid request, an unsupported upgrade) through the
    throttle; everything else (its errors) as uvicorn logs it."""

    def __init__(self, logger: logging.Logger, throttle: Throttle) -> None:
        self.logger, self.throttle = logger, throttle

    def warning(self, message: str, *args: Any, **kwargs: Any) -> None:
        text = message % args if args else message
        self.throttle.note(f"uvicorn: {message}", f"a client: {text}")

    def __getattr__(self, name: str) -> Any:
        return getattr(self.logger, name)


class GuardedProtocol(H11Protocol):
    """uvicorn's h11 protocol with the header and body timeouts and the connection cap (module
    docstring). Subclassed per server by :func:`protocol_class`, which sets :attr:`gate`."""

    gate: Gate

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.logger = QuietLogger(self.logger, self.gate.throttle)  # type: ignore[assignment]
        self.head_timer: asyncio.TimerHandle | None = None
        self.body_timer: asyncio.TimerHandle | None = None
        self.body_cycle: Any = None  # the request the body timer was armed for
        self.head_cycle: Any = None  # the latest request whose head was complete
        self.head_started = False  # bytes of the next request head have arrived
        self.served = 0  # requests whose head was complete on this connection

    # -- the connection's life -----------------------------------------------------------------
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if not self.gate.admit(self):
            transport.write(raw_response(503, "the server has as many connections open as it takes, all busy; "
                                              "try again shortly", "retry-after: 1"))
            transport.close()
            return
        self.watch()

    def connection_lost(self, exc: Exception | None) -> None:
        self.gate.release(self)
        self.cancel_timers()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if not self.busy():
            self.head_started = True
        super().data_received(data)
        self.watch()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self.watch()

    def busy(self) -> bool:
        """A request's head has arrived and its response is not complete."""
        return self.cycle is not None and not self.cycle.response_complete

    def watch(self) -> None:
        """Arm or cancel the timers for the connection's state: waiting for a head (idle, evictable)
        or busy with a request (its body still coming, or being answered)."""
        if self.transport is None or self.transport.is_closing():
            return
        loop = self.loop
        if self.busy():
            if self.cycle is not self.head_cycle:  # a new request's head is complete
                self.head_cycle = self.cycle
                self.gate.idle.pop(self, None)
                self.cancel_head_timer()
                self.head_started = False
                self.served += 1
            cycle = self.cycle
            if cycle.more_body and not cycle.disconnected:
                if self.body_cycle is not cycle:
                    self.cancel_body_timer()
                    self.body_cycle = cycle
                    self.body_timer = loop.call_later(self.gate.exposure.body_timeout, self.body_late, cycle)
            else:
                self.cancel_body_timer()
            return
        self.cancel_body_timer()
        if self not in self.gate.idle and self in self.gate.open:
            self.gate.idle[self] = None
        if self.head_timer is None and (self.served == 0 or self.head_started):
            self.head_timer = loop.call_later(self.gate.exposure.header_timeout, self.head_late)

    def cancel_head_timer(self) -> None:
        if self.head_timer is not None:
            self.head_timer.cancel()
            self.head_timer = None

    def cancel_body_timer(self) -> None:
        if self.body_timer is not None:
            self.body_timer.cancel()
            self.body_timer = None

    def cancel_timers(self) -> None:
        self.cancel_head_timer()
        self.cancel_body_timer()

    # -- closing -------------------------------------------------------------------------------
    def close_with(self, response: bytes = b"") -> None:
        self.gate.release(self)
        self.cancel_timers()
        if response:
            self.transport.write(response)
        self.transport.close()

    def evict(self) -> None:
        """Closed to make room for a new connection (see :meth:`Gate.admit`)."""
        if not self.transport.is_closing():
            self.close_with()

    def head_late(self) -> None:
        self.head_timer = None
        if self.transport.is_closing() or self.busy():
            return
        self.gate.metrics.closed["header_timeout"] += 1
        timeout = self.gate.exposure.header_timeout
        self.gate.throttle.note("header_timeout", f"closed a connection whose request head was not complete "
                                f"within {timeout:g} s (--header-timeout)")
        if not self.head_started:  # a connection that never said anything: closed as keep-alive closes
            self.close_with()
            return
        self.close_with(raw_response(408, f"the request head was not complete within {timeout:g} s; send the "
                                          "whole head at once"))

    def body_late(self, cycle: Any) -> None:
        self.body_timer = None
        if cycle is not self.cycle or not cycle.more_body or cycle.disconnected or self.transport.is_closing():
            return
        self.gate.metrics.closed["body_timeout"] += 1
        timeout = self.gate.exposure.body_timeout
        self.gate.throttle.note("body_timeout", f"abandoned a request whose body was not complete within "
                                f"{timeout:g} s of its head (--body-timeout)")
        cycle.scope.setdefault("extensions", {})[TIMEOUT_KEY] = "body"
        response = b"" if cycle.response_started else raw_response(
            408, f"the request body was not complete within {timeout:g} s of its head; send it at once, with a "
                 "Content-Length that matches it")
        cycle.disconnected = True  # the app reads a disconnect and stops; nothing more is written
        cycle.message_event.set()
        self.close_with(response)

    def send_400_response(self, msg: str) -> None:
        """A request that is not valid HTTP: one JSON line (uvicorn's own answer is plain text)."""
        self.gate.metrics.closed["bad_http"] += 1
        self.close_with(raw_response(400, "the request is not valid HTTP/1.1 (its request line or headers); "
                                          "check the client"))


def protocol_class(gate: Gate) -> type[GuardedProtocol]:
    """:class:`GuardedProtocol` bound to ``gate``, for ``uvicorn.Config(http=...)``."""
    return type("SeqappProtocol", (GuardedProtocol,), {"gate": gate})


async def send_error(send: Callable, status: int, message: str, headers: tuple = ()) -> None:
    """A one-line JSON error as the response of an ASGI request."""
    body = json.dumps({"error": message}, separators=(",", ":")).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), *headers]})
    await send({"type": "http.response.body", "body": body})


class Guard:
    """ASGI wrapper around the app: the cap on requests in flight, the request metrics, and quiet
    endings (a client that went away; a request cut off at shutdown gets 503)."""

    def __init__(self, app: Any, gate: Gate) -> None:
        self.app = app
        self.gate = gate

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        metrics = self.gate.metrics
        route, method = route_label(scope.get("path", "")), method_label(scope.get("method", ""))
        capped = route not in UNCAPPED_ROUTES
        started_at = time.perf_counter()
        status = 0

        async def tracked(message: dict) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        if capped and metrics.in_flight >= self.gate.exposure.max_in_flight:
            await send_error(tracked, 503, f"the server is answering {metrics.in_flight} requests, as many as it "
                                           "takes at once (--max-in-flight); try again shortly",
                             ((b"retry-after", b"1"),))
            metrics.observe(route, method, status, time.perf_counter() - started_at)
            return
        metrics.in_flight += capped
        try:
            await self.app(scope, receive, tracked)
        except asyncio.CancelledError:  # the shutdown's grace period is over
            if not status:
                status = 503
                with contextlib.suppress(Exception):  # the connection is already gone
                    await send_error(send, 503, "the server is shutting down; try again later")
        except ClientDisconnect:
            status = status or 499
        except Exception as exc:  # a bug: one line (the traceback with SEQAPP_DEBUG=1), and a 500
            log.error(f"{method} {route} failed: {type(exc).__name__}: {str(exc).strip()[:300]}")
            if os.environ.get("SEQAPP_DEBUG", "") not in ("", "0"):
                traceback.print_exception(type(exc), exc, exc.__traceback__)
            if not status:
                status = 500
                with contextlib.suppress(Exception):
                    await send_error(send, 500, f"{method} {route} failed on the server; see the server's log")
        finally:
            metrics.in_flight -= capped
            if scope.get("extensions", {}).get(TIMEOUT_KEY):
                status = 408
            metrics.observe(route, method, status or 499, time.perf_counter() - started_at)
