"""What ``seqapp serve`` counts, and ``GET /metrics`` in the Prometheus text exposition format.

No client library: the format is a few lines of text per value (``# HELP``, ``# TYPE``, then
``name{label="value"} number``; a histogram is its cumulative ``_bucket`` lines with an
``le`` label, ``_sum`` and ``_count``), written here in plain Python. Labels take only values
the server chooses (known routes and methods, status codes, reasons), so a client sending
random paths cannot grow the page. Everything here is plain data, updated on the event loop
(the model thread updates only its own histogram, one ``+=`` at a time).
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)  # seconds
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)  # inputs in one model call
ROUTES = ("/predict", "/generate", "/health", "/info", "/metrics", "/docs", "/openapi.json")
METHODS = ("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS")
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def route_label(path: str) -> str:
    """The ``route`` label of a request path: one of :data:`ROUTES`, else ``other``."""
    return path if path in ROUTES else "other"


def method_label(method: str) -> str:
    return method if method in METHODS else "other"


def error_kind(status: int) -> str | None:
    """How ``/metrics`` files a response status among the errors; None for a success."""
    if status < 400:
        return None
    return {401: "unauthorized", 408: "timeout", 413: "too_large", 499: "disconnect",
            503: "unavailable"}.get(status, "client" if status < 500 else "server")


class Histogram:
    """Counts of observed values per bucket (upper bounds, ``le``), their sum and count."""

    def __init__(self, buckets: Sequence[float]) -> None:
        self.buckets = tuple(sorted(buckets))
        self.counts = [0] * (len(self.buckets) + 1)  # the last one: above every bound (+Inf)
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.buckets, value)] += 1
        self.sum += value
        self.count += 1

    def samples(self, name: str, labels: Mapping[str, str] | None = None) -> list[str]:
        """The ``_bucket`` (cumulative), ``_sum`` and ``_count`` lines of this histogram."""
        labels = dict(labels or {})
        lines, total = [], 0
        for bound, count in zip([*self.buckets, math.inf], self.counts):
            total += count
            lines.append(sample(f"{name}_bucket", {**labels, "le": number(bound)}, total))
        lines.append(sample(f"{name}_sum", labels, self.sum))
        lines.append(sample(f"{name}_count", labels, self.count))
        return lines


class Metrics:
    """The HTTP side of the server: requests by route, method and status, their latency, requests
    in flight, and what became of connections the server closed itself."""

    def __init__(self) -> None:
        self.requests: Counter[tuple[str, str, int]] = Counter()
        self.latency: dict[str, Histogram] = {}
        self.in_flight = 0
        self.closed: Counter[str] = Counter()  # connections the server closed, by reason
        self.accept_errors = 0  # accept() failures for want of file descriptors or memory

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        self.requests[route, method, status] += 1
        self.latency.setdefault(route, Histogram(LATENCY_BUCKETS)).observe(seconds)


def number(value: float) -> str:
    """A sample value as the format writes it: integers without a point, ``+Inf``, ``NaN``."""
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


def escape(value: str) -> str:
    """A label value: backslash, double quote and newline escaped."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def sample(name: str, labels: Mapping[str, str], value: float) -> str:
    if not labels:
        return f"{name} {number(value)}"
    inside = ",".join(f'{key}="{escape(str(text))}"' for key, text in labels.items())
    return f"{name}{{{inside}}} {number(value)}"


def family(name: str, kind: str, help_text: str, lines: Iterable[str]) -> list[str]:
    """One metric family: its ``# HELP`` and ``# TYPE`` lines, then its samples."""
    help_text = help_text.replace("\\", "\\\\").replace("\n", "\\n")
    return [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}", *lines]


def exposition(metrics: Metrics, *, connections: int, batch: Mapping[str, int], batch_sizes: Histogram,
               model_seconds: Histogram, info: Mapping[str, str]) -> str:
    """The whole ``/metrics`` page: ``metrics``, the open ``connections``, the batching counters
    (``Stats.as_dict()``), the batch-size and model-call histograms, and an info line."""
    errors: Counter[tuple[str, str]] = Counter()
    for (route, _, status), count in metrics.requests.items():
        kind = error_kind(status)
        if kind:
            errors[route, kind] += count
    out: list[str] = []
    out += family("seqapp_info", "gauge", "The served run's task and engine, and the seqapp version.",
                  [sample("seqapp_info", info, 1)])
    out += family("seqapp_http_requests_total", "counter", "HTTP requests answered, by route, method and status.",
                  [sample("seqapp_http_requests_total", {"route": route, "method": method, "status": str(status)},
                          count) for (route, method, status), count in sorted(metrics.requests.items())])
    out += family("seqapp_http_errors_total", "counter",
                  "HTTP requests answered with an error status, by route and kind (client, unauthorized, "
                  "too_large, timeout, disconnect, unavailable, server).",
                  [sample("seqapp_http_errors_total", {"route": route, "kind": kind}, count)
                   for (route, kind), count in sorted(errors.items())])
    out += family("seqapp_http_request_duration_seconds", "histogram",
                  "Time from the request head to the end of the response, by route.",
                  [line for route, histogram in sorted(metrics.latency.items())
                   for line in histogram.samples("seqapp_http_request_duration_seconds", {"route": route})])
    out += family("seqapp_http_requests_in_flight", "gauge", "Requests being answered now (/health and /metrics "
                  "aside), the number --max-in-flight caps.", [sample("seqapp_http_requests_in_flight", {},
                                                                       metrics.in_flight)])
    out += family("seqapp_http_connections", "gauge", "Open client connections (--max-connections caps them).",
                  [sample("seqapp_http_connections", {}, connections)])
    out += family("seqapp_http_connections_closed_total", "counter",
                  "Connections the server closed itself, by reason (header_timeout, body_timeout, idle_evicted, "
                  "refused, bad_http).",
                  [sample("seqapp_http_connections_closed_total", {"reason": reason}, count)
                   for reason, count in sorted(metrics.closed.items())])
    out += family("seqapp_accept_errors_total", "counter", "Connections not accepted for want of file "
                  "descriptors or memory (EMFILE, ENFILE, ENOBUFS, ENOMEM).",
                  [sample("seqapp_accept_errors_total", {}, metrics.accept_errors)])
    for key, kind, text in (("requests", "counter", "/predict requests that reached the model."),
                            ("model_calls", "counter", "Model calls made for /predict requests."),
                            ("merged_requests", "counter", "/predict requests answered by a call shared with "
                                                           "others."),
                            ("largest_batch", "gauge", "Most inputs in one model call so far.")):
        name = f"seqapp_predict_{key}" + ("_total" if kind == "counter" else "")
        out += family(name, kind, text, [sample(name, {}, batch.get(key, 0))])
    out += family("seqapp_batch_size", "histogram", "Inputs in each /predict model call.",
                  batch_sizes.samples("seqapp_batch_size"))
    out += family("seqapp_model_call_duration_seconds", "histogram",
                  "Time of each call on the model thread (a /predict batch, or one chunk of /generate).",
                  model_seconds.samples("seqapp_model_call_duration_seconds"))
    return "\n".join(out) + "\n"
