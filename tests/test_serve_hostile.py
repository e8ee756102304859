"""``seqapp serve`` facing careless or hostile clients, and the pieces that make it hold.

``process`` tests start a real ``seqapp serve`` on a tiny run (the helpers and fixtures of
``test_serve.py``) and misbehave at it over raw sockets: a request head sent one byte a
second, thousands of idle connections under a low limit on open files, a body that never
comes, more requests than the server takes at once, SIGTERM during a model call that would
run for minutes, a missing token, lone surrogates and floats past float32. The server must
answer each with one JSON line (or close the connection) within the stated time, keep
answering ``/health``, count it in ``/metrics`` and keep its log short and free of
tracebacks. The pure pieces (the Prometheus text, the float and text checks, the log
throttle, the connection cap) are checked in the default suite, in milliseconds.
"""

from __future__ import annotations

import json
import logging
import re
import resource
import signal
import socket
import threading
import time
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

from conftest import Server, serving  # noqa: E402

from seqapp.errors import SeqappError  # noqa: E402
from seqapp.serve import FILE_RESERVE  # noqa: E402

TOKEN = "s3cret-token_for.tests"


@pytest.fixture(scope="module")
def textgen_run(tiny_runs) -> Path:
    return tiny_runs("textgen").path


# -- helpers --------------------------------------------------------------------------------
def address(server: Server) -> tuple[str, int]:
    host, port = server.url.removeprefix("http://").rsplit(":", 1)
    return host, int(port)


def read_until_closed(sock: socket.socket, timeout: float) -> bytes:
    """What the server sends until it closes the connection (or ``timeout`` passes)."""
    sock.settimeout(timeout)
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except (TimeoutError, ConnectionResetError):
        pass
    return data


def one_json_error(response: bytes, status: int) -> str:
    """The ``error`` line of a raw HTTP response that must have ``status`` and a one-line JSON body."""
    head, _, body = response.partition(b"\r\n\r\n")
    assert head.startswith(f"HTTP/1.1 {status}".encode()), response[:300]
    error = json.loads(body)["error"]
    assert isinstance(error, str) and error and "\n" not in error and b"\n" not in body.strip()
    return error


def metric_samples(text: str) -> dict[str, float]:
    """``name{labels}`` -> value of a Prometheus text page (labels as written)."""
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            samples[name] = float(value)
    return samples


def metrics(server: Server) -> dict[str, float]:
    status, text = server.call("/metrics")
    assert status == 200
    return metric_samples(text.decode())


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def new_lines(server: Server, before: int) -> list[str]:
    time.sleep(0.2)  # the drain thread's last lines
    return server.lines[before:]


# -- slow and idle clients ---------------------------------------------------------------------
@pytest.mark.process
def test_a_slow_request_head_is_answered_408_within_the_header_timeout(sentiment_run):
    """Three clients each send a request head one byte a second; --header-timeout 2.5 closes each
    with a 408 line after about 2.5 s (half a second from any byte), and the log gets at most one
    line for all three."""
    head = b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 100 + b"\r\n\r\n"
    with serving(sentiment_run, "--header-timeout", "2.5") as server:
        before = len(server.lines)
        results = []

        def slow_client() -> None:
            with socket.create_connection(address(server)) as sock:
                started = time.monotonic()
                sock.settimeout(1.0)
                data = b""
                for byte in head:  # one byte, then a second of waiting for an answer
                    try:
                        sock.sendall(bytes([byte]))
                        data = sock.recv(65536)
                    except TimeoutError:
                        continue
                    except OSError:
                        pass
                    break
                data += read_until_closed(sock, 5)
                results.append((time.monotonic() - started, data))

        threads = [threading.Thread(target=slow_client) for _ in range(3)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
        assert len(results) == 3
        for elapsed, data in results:
            assert 2.0 <= elapsed <= 4.5, f"closed after {elapsed:.2f} s, --header-timeout 2.5"
            assert "not complete within 2.5 s" in one_json_error(data, 408)
        lines = new_lines(server, before)
        assert len(lines) <= 1, lines
        assert metrics(server)['seqapp_http_connections_closed_total{reason="header_timeout"}'] == 3
        print(f"\nslow head: closed after {', '.join(f'{elapsed:.2f}' for elapsed, _ in results)} s "
              f"(--header-timeout 2.5); log lines: {len(lines)}")


@pytest.mark.process
def test_many_idle_connections_leave_health_answering(sentiment_run):
    """2,000 idle connections against a server whose file limit is 1,024 (its connection cap is then
    1,024 - 256 = 768): the oldest idle ones are closed to make room, /health answers within 1 s,
    the process never runs out of descriptors and the log stays a few lines."""
    count, files = 2000, 1024
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < count + 200:
        if hard != resource.RLIM_INFINITY and hard < count + 200:
            pytest.skip(f"this process may open {hard} files; the test needs {count + 200}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (count + 200, hard))
    with serving(sentiment_run, files=files) as server:
        before, rss_before = len(server.lines), rss_mb(server.process.pid)
        sockets = []
        try:
            started = time.monotonic()
            for _ in range(count):
                sockets.append(socket.create_connection(address(server), timeout=10))
            opened = time.monotonic() - started
            time.sleep(0.5)  # the server accepts its backlog
            started = time.monotonic()
            status, _ = server.call("/health")
            latency = time.monotonic() - started
            assert status == 200 and latency < 1.0, f"/health took {latency:.3f} s beside {count} idle connections"
            rss_after = rss_mb(server.process.pid)
            samples = metrics(server)
        finally:
            for sock in sockets:
                sock.close()
        cap = files - FILE_RESERVE
        assert samples["seqapp_http_connections"] <= cap
        assert samples['seqapp_http_connections_closed_total{reason="idle_evicted"}'] >= count - cap
        assert samples["seqapp_accept_errors_total"] == 0
        lines = new_lines(server, before)
        assert len(lines) <= 3 and "Traceback" not in "".join(lines), lines
        time.sleep(0.5)
        assert server.call("/health")[0] == 200
        code, stderr = server.stop()
    assert code == 0 and "Traceback" not in stderr
    print(f"\n{count} idle connections (server ulimit -n {files}) opened in {opened:.2f} s: /health in "
          f"{latency * 1000:.1f} ms, server RSS {rss_before:.0f} -> {rss_after:.0f} MB, "
          f"{len(lines)} log lines ({sum(map(len, lines))} bytes)")


# -- bodies, the in-flight cap, /metrics -------------------------------------------------------
@pytest.mark.process
def test_the_in_flight_cap_the_body_timeout_and_metrics(sentiment_run):
    with serving(sentiment_run, "--max-in-flight", "1", "--body-timeout", "2") as server:
        assert server.json("/predict", {"inputs": ["works great"]})[0] == 200
        with socket.create_connection(address(server)) as stalled:  # a body that never comes: 1 in flight
            started = time.monotonic()
            stalled.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"inputs\": ")
            time.sleep(0.3)
            status, text = server.call("/predict", {"inputs": ["fine"]})
            assert status == 503 and "--max-in-flight" in json.loads(text)["error"]
            began = time.monotonic()
            assert server.call("/health")[0] == 200 and time.monotonic() - began < 1.0
            head = server.call("/health", method="HEAD")
            assert head == (200, b"")
            answer = read_until_closed(stalled, 10)
            elapsed = time.monotonic() - started
        assert 1.5 <= elapsed <= 4.0 and "body was not complete" in one_json_error(answer, 408)
        deadline = time.monotonic() + 10  # the timed-out request leaves its slot a moment after its 408
        while metrics(server)["seqapp_http_requests_in_flight"] > 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        with socket.create_connection(address(server)) as gone:  # a client that leaves mid-body
            gone.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"inputs\": ")
            time.sleep(0.3)
        with socket.create_connection(address(server)) as garbled:  # not HTTP at all
            garbled.sendall(b"HELLO THERE\r\n\r\n")
            assert "not valid HTTP" in one_json_error(read_until_closed(garbled, 5), 400)
        time.sleep(0.3)
        status, _ = server.call("/nowhere")
        assert status == 404
        samples = metrics(server)
        requests = {key: value for key, value in samples.items() if key.startswith("seqapp_http_requests_total")}
        assert requests['seqapp_http_requests_total{route="/predict",method="POST",status="200"}'] == 1
        assert requests['seqapp_http_requests_total{route="/predict",method="POST",status="503"}'] == 1
        assert requests['seqapp_http_requests_total{route="/predict",method="POST",status="408"}'] == 1
        assert requests['seqapp_http_requests_total{route="/health",method="HEAD",status="200"}'] == 1
        assert requests['seqapp_http_requests_total{route="other",method="GET",status="404"}'] == 1
        assert requests['seqapp_http_requests_total{route="/predict",method="POST",status="499"}'] == 1
        assert samples['seqapp_http_errors_total{route="/predict",kind="disconnect"}'] == 1
        assert samples['seqapp_http_connections_closed_total{reason="bad_http"}'] == 1
        assert samples['seqapp_http_errors_total{route="/predict",kind="timeout"}'] == 1
        assert samples['seqapp_http_errors_total{route="/predict",kind="unavailable"}'] == 1
        assert samples['seqapp_http_connections_closed_total{reason="body_timeout"}'] == 1
        assert samples['seqapp_http_request_duration_seconds_count{route="/predict"}'] == 4
        assert samples["seqapp_http_requests_in_flight"] == 0
        assert samples["seqapp_predict_requests_total"] == 1 and samples["seqapp_batch_size_count"] == 1
        code, stderr = server.stop()
    assert code == 0 and "Traceback" not in stderr
    print(f"\nbody timeout: 408 after {elapsed:.2f} s (--body-timeout 2)")


# -- shutdown -----------------------------------------------------------------------------------
@pytest.mark.process
def test_sigterm_with_a_long_model_call_in_flight_exits_within_the_bound(sine_run):
    """A sine forecast of a million steps holds the model thread for minutes; SIGTERM still ends the
    server within --shutdown-timeout (1 s) plus 2 s, with exit 0 and a 503 for the request."""
    with serving(sine_run, "--max-tokens", "1000000", "--shutdown-timeout", "1") as server:
        answers = []
        client = threading.Thread(target=lambda: answers.append(
            server.call("/predict", {"options": {"horizon": 1_000_000}})))
        client.start()
        deadline = time.monotonic() + 30
        while metrics(server)["seqapp_http_requests_in_flight"] < 1 and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(1.0)  # well inside the model call
        assert not answers, "the forecast ended before SIGTERM; it must be longer for this test"
        started = time.monotonic()
        code, stderr = server.stop(signal.SIGTERM)
        took = time.monotonic() - started
        client.join(timeout=10)
    assert code == 0, stderr
    assert took < 1 + 2, f"SIGTERM took {took:.2f} s with --shutdown-timeout 1"
    assert "a model call was still running" in stderr and "Traceback" not in stderr
    assert answers and answers[0][0] == 503 and b"shutting down" in answers[0][1]
    print(f"\nSIGTERM with a model call in flight: exit 0 after {took:.2f} s (--shutdown-timeout 1)")


# -- token, /info, text and numbers -------------------------------------------------------------
@pytest.mark.process
def test_a_token_guards_predict_and_info_shows_no_path(sentiment_run, monkeypatch):
    with serving(sentiment_run, env={"SEQAPP_TOKEN": TOKEN}) as server:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"}):
            status, text = server.call("/predict", {"inputs": ["fine"]}, headers=headers)
            assert status == 401 and "Bearer" in json.loads(text)["error"], headers
        status, body = server.json("/predict", {"inputs": ["fine"]}, headers={"Authorization": f"Bearer {TOKEN}"})
        assert status == 200 and body["outputs"][0]["text"] == "fine"
        assert server.call("/health")[0] == 200  # probes need no token
        status, text = server.call("/info")
        info = json.loads(text)
        assert status == 200 and info["run"] == sentiment_run.name
        assert str(sentiment_run.parent) not in text.decode() and not re.search(r'"/[^"]*/', text.decode())
        assert TOKEN not in text.decode() and TOKEN not in "".join(server.lines)
        assert metrics(server)['seqapp_http_errors_total{route="/predict",kind="unauthorized"}'] == 3
    with serving(sentiment_run, "--info-paths") as server:
        status, info = server.json("/info")
        assert status == 200 and info["run"] == str(sentiment_run)


@pytest.mark.process
def test_lone_surrogates_and_floats_past_float32_are_400(textgen_run):
    auth = {"Authorization": f"Bearer {TOKEN}"}
    with serving(textgen_run, "--token", TOKEN, "--max-tokens", "50") as server:
        assert server.call("/generate", {"seed": "hello"})[0] == 401
        cases = [("/generate", b'{"seed": "he\\ud800llo"}', "lone surrogate"),
                 ("/generate", b'{"seed": "a", "options": {"temperature": 1e39}}', "32-bit float"),
                 ("/generate", b'{"seed": "a", "options": {"temperature": 1e-40}}', "32-bit float"),
                 ("/generate", b'{"seed": "a", "options": {"top_p": 1e-45}}', "32-bit float"),
                 ("/generate", b'{"seed": "a", "options": {"temperature": 1' + b"0" * 400 + b'}}', "32-bit float"),
                 ("/predict", b'{"inputs": ["fine", "\\udfff"]}', "inputs[1] holds a lone surrogate")]
        for path, raw, words in cases:
            status, text = server.call(path, raw=raw, headers=auth)
            assert status == 400 and words in json.loads(text)["error"], (raw[:60], status, text[:200])
        status, text = server.call("/generate", {"seed": "hello", "options": {"length": 5}}, headers=auth)
        assert status == 200 and text
        with socket.create_connection(address(server)) as gone:  # a client that leaves mid-stream
            body = b'{"seed": "hello", "options": {"length": 50}}'
            gone.sendall(b"POST /generate HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + TOKEN.encode()
                         + b"\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
            assert gone.recv(12).startswith(b"HTTP/1.1 200")
        time.sleep(0.5)
        assert server.call("/health")[0] == 200
        code, stderr = server.stop()
    assert code == 0 and "Traceback" not in stderr


# -- the pure pieces (default suite) -----------------------------------------------------------
def test_the_metrics_page_is_prometheus_text():
    from seqapp.serve_metrics import BATCH_BUCKETS, LATENCY_BUCKETS, Histogram, Metrics, exposition

    metrics = Metrics()
    for route, status, seconds in [("/predict", 200, 0.003), ("/predict", 200, 0.2), ("/predict", 400, 0.001),
                                   ("/generate", 200, 12.0), ("other", 404, 0.0005), ("/predict", 499, 0.5)]:
        metrics.observe(route, "POST", status, seconds)
    metrics.closed["header_timeout"] += 2
    batch_sizes, seconds = Histogram(BATCH_BUCKETS), Histogram(LATENCY_BUCKETS)
    for size in (1, 3, 64, 300):
        batch_sizes.observe(size)
    text = exposition(metrics, connections=7, batch={"requests": 5, "model_calls": 2}, batch_sizes=batch_sizes,
                      model_seconds=seconds, info={"task": 'odd "name"\\\n', "engine": "litert", "version": "0"})
    sample = re.compile(r'^[a-zA-Z_:][a-zA-Z0-9_:]*(\{([a-zA-Z_][a-zA-Z0-9_]*="([^"\\\n]|\\[\\"n])*",?)*\})? '
                        r'(-?[0-9.e+-]+|\+Inf|-Inf|NaN)$')
    families = Counter()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            families[line.split()[2]] += 1
            assert line.split()[3] in ("counter", "gauge", "histogram")
        elif not line.startswith("# HELP "):
            assert sample.match(line), line
    assert families and max(families.values()) == 1  # each family declared once
    samples = metric_samples(text)
    assert samples['seqapp_info{task="odd \\"name\\"\\\\\\n",engine="litert",version="0"}'] == 1
    assert samples['seqapp_http_requests_total{route="/predict",method="POST",status="200"}'] == 2
    assert samples['seqapp_http_errors_total{route="/predict",kind="client"}'] == 1
    assert samples['seqapp_http_errors_total{route="/predict",kind="disconnect"}'] == 1
    assert samples['seqapp_http_errors_total{route="other",kind="client"}'] == 1
    buckets = [(key, value) for key, value in samples.items()
               if key.startswith('seqapp_http_request_duration_seconds_bucket{route="/predict"')]
    assert [value for _, value in buckets] == sorted(value for _, value in buckets)  # cumulative
    assert samples['seqapp_http_request_duration_seconds_bucket{route="/predict",le="0.005"}'] == 2
    assert samples['seqapp_http_request_duration_seconds_bucket{route="/predict",le="+Inf"}'] == 4
    assert samples['seqapp_http_request_duration_seconds_count{route="/predict"}'] == 4
    assert samples['seqapp_http_request_duration_seconds_sum{route="/predict"}'] == pytest.approx(0.704)
    assert samples['seqapp_http_request_duration_seconds_bucket{route="/generate",le="10.0"}'] == 0
    assert samples['seqapp_batch_size_bucket{le="4"}'] == 2 and samples['seqapp_batch_size_bucket{le="256"}'] == 3
    assert samples['seqapp_batch_size_bucket{le="+Inf"}'] == 4 and samples["seqapp_batch_size_sum"] == 368
    assert samples["seqapp_http_connections"] == 7 and samples["seqapp_predict_model_calls_total"] == 2
    assert samples['seqapp_http_connections_closed_total{reason="header_timeout"}'] == 2
    assert text.endswith("\n")


@pytest.mark.parametrize("value, fits", [(0, True), (0.8, True), (3.0e38, True), (1.2e-38, True), (-2.0, True),
                                         (3.5e38, False), (-1e39, False), (1e-39, False), (5e-324, False),
                                         (10**400, False), (float("inf"), False), (float("nan"), False)])
def test_float_options_must_be_finite_float32(value, fits):
    from seqapp.serve_app import ApiError, option_value
    from seqapp.serve_service import Limits

    limits = Limits(8, 100, 500)
    if fits:
        assert option_value("temperature", value, float, limits) == float(value)
    else:
        with pytest.raises(ApiError, match="outside the range of a 32-bit float") as raised:
            option_value("temperature", value, float, limits)
        assert raised.value.status == 400 and len(raised.value.message) < 200


def test_texts_must_be_unicode():
    from seqapp.serve_app import ApiError, generate_request, text_list
    from seqapp.serve_service import Limits

    limits = Limits(8, 100, 500)
    assert text_list(["fine", "emoji \U0001F600", "é"], limits) == ["fine", "emoji \U0001F600", "é"]
    for texts, where in [(["ok", "a\ud800b"], "inputs[1]"), (["\udfff"], "inputs[0]")]:
        with pytest.raises(ApiError, match=re.escape(where) + " holds a lone surrogate"):
            text_list(texts, limits)
    with pytest.raises(ApiError, match='"seed" holds a lone surrogate'):
        generate_request({"seed": "x\udc80"}, limits)


def test_the_log_throttle_writes_one_line_per_interval(caplog):
    from seqapp.serve_guard import Throttle

    now = [0.0]
    throttle = Throttle(logging.getLogger("seqapp.test"), interval=60, clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, logger="seqapp.test"):
        shown = [throttle.note("slow", "a slow client") for _ in range(1000)]
        throttle.note("other", "another kind")
        now[0] = 61.0
        throttle.note("slow", "a slow client")
    assert shown.count(True) == 1
    assert [record.getMessage() for record in caplog.records] == [
        "a slow client", "another kind", "a slow client (999 more since the last such line)"]


def test_accept_running_out_of_files_is_one_line_and_a_counter(caplog):
    import errno

    from seqapp.serve_guard import Gate
    from seqapp.serve_metrics import Metrics
    from seqapp.serve_service import Exposure

    gate = Gate(Exposure(), Metrics())
    defaults = []
    loop = SimpleNamespace(default_exception_handler=defaults.append)
    with caplog.at_level(logging.WARNING, logger="seqapp"):
        for _ in range(500):
            gate.loop_exception(loop, {"message": "socket.accept() out of system resource",
                                       "exception": OSError(errno.EMFILE, "Too many open files")})
        gate.loop_exception(loop, {"message": "something else", "exception": ValueError("x")})
    assert gate.metrics.accept_errors == 500 and len(defaults) == 1
    lines = [record.getMessage() for record in caplog.records]
    assert len(lines) == 1 and "EMFILE" in lines[0] and "Traceback" not in caplog.text


def test_past_the_connection_cap_the_oldest_idle_connection_makes_room():
    from seqapp.serve_guard import Gate
    from seqapp.serve_metrics import Metrics
    from seqapp.serve_service import Exposure

    class Connection:
        def __init__(self) -> None:
            self.evicted = False

        def evict(self) -> None:
            self.evicted = True

    gate = Gate(Exposure(max_connections=3), Metrics())
    first, second, third = Connection(), Connection(), Connection()
    for connection in (first, second, third):
        assert gate.admit(connection)
    gate.idle.update({second: None, first: None})  # second went idle first; third is busy
    fourth = Connection()
    assert gate.admit(fourth) and second.evicted and not first.evicted
    assert gate.open == {first, third, fourth} and list(gate.idle) == [first]
    gate.idle.clear()  # all busy: a new one is refused
    assert not gate.admit(Connection())
    assert gate.metrics.closed == Counter({"idle_evicted": 1, "refused": 1})


def test_connection_cap_within_the_file_limit_and_bad_settings():
    from seqapp.serve import check_exposure, connection_cap

    assert connection_cap(None, 20000) == 1000 and connection_cap(None, 1024) == 1024 - FILE_RESERVE
    assert connection_cap(50, 1024) == 50
    for requested, limit, words in [(5000, 1024, f"use at most {1024 - FILE_RESERVE}"), (None, 100, "raise ulimit -n")]:
        with pytest.raises(SeqappError, match=re.escape(words)):
            connection_cap(requested, limit)
    for args, words in [(("bad token", {}, 5, None, 10), "printable ASCII"),
                        ((None, {"--header-timeout": 0}, 5, None, 10), "--header-timeout 0 must be"),
                        ((None, {"--body-timeout": float("nan")}, 5, None, 10), "--body-timeout nan must be"),
                        ((None, {}, -1, None, 10), "--shutdown-timeout -1"),
                        ((None, {}, 5, 0, 10), "--max-connections 0"),
                        ((None, {}, 5, None, 0), "--max-in-flight 0")]:
        with pytest.raises(SeqappError, match=re.escape(words)):
            check_exposure(*args)


def test_info_paths_are_cut_to_names():
    from seqapp.serve_service import without_paths

    assert without_paths({"run": "/home/ann/runs/sentiment/20261127-114537",
                          "data": {"path": "/srv/data/reviews.tsv", "note": "trained on /srv/data/x.csv, well"},
                          "url": "http://host/a/b", "ratio": "1/2", "list": ["/a/b/c", 3]}) == {
        "run": "20261127-114537", "data": {"path": "reviews.tsv", "note": "trained on x.csv, well"},
        "url": "http://host/a/b", "ratio": "1/2", "list": ["c", 3]}
