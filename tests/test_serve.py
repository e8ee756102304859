"""``seqapp serve``: the HTTP API against tiny trained runs, over real sockets.

Each server is a ``seqapp serve --port 0`` subprocess (the port it took is read from its
start-up line), called with ``urllib``; its answers must equal ``seqapp predict`` and
``seqapp generate``. The malformed requests below each get a 4xx with one ``error`` line,
and the server keeps answering. Those are ``process`` tests; the checks that need no server
run in the default suite. Skipped only where the ``serve`` extra is missing; the ``test``
extra pulls it in, so CI runs these.
"""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace

import pytest
from conftest import Server, serving

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")



# -- fixtures: tiny runs and servers --------------------------------------------------------
def train_tiny(name: str, out: Path, extra: list[str] = (), data_file: Path | None = None) -> Path:
    from seqapp.tasks import REGISTRY, load_config
    from seqapp.training import train

    cfg = load_config(name, [*REGISTRY[name].tiny.get("set", []), *extra], {"train.epochs": 1}, data_file=data_file)
    return train(cfg, out, verbose=0, log=lambda _: None).path


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("serve")


@pytest.fixture(scope="module")
def textgen_run(root) -> Path:
    corpus = root / "corpus.txt"
    corpus.write_text("ANNA:\nhello there, the boat is blue.\n\nBEN:\nhello anna.\n\n" * 40, encoding="utf-8")
    return train_tiny("textgen", root / "runs", ["train.jit_compile=false"], data_file=corpus)




@pytest.fixture(scope="module")
def sentiment_server(sentiment_run):
    with serving(sentiment_run, "--max-inputs", "8", "--max-chars", "200", "--batch-wait-ms", "5") as server:
        yield server


@pytest.fixture(scope="module")
def textgen_server(textgen_run):
    with serving(textgen_run, "--max-tokens", "100") as server:
        yield server


def cli_lines(*args: str) -> list[str]:
    """stdout lines of ``seqapp ARGS`` in a fresh process."""
    done = subprocess.run([sys.executable, "-m", "seqapp", *args], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


# -- answers equal the CLI's ---------------------------------------------------------------
@pytest.mark.process
def test_sentiment_predict_equals_the_cli(sentiment_server, sentiment_run):
    texts = ["works great, love it", "the battery died after a day", "meh"]
    status, body = sentiment_server.json("/predict", {"inputs": texts})
    assert status == 200
    expected = [json.loads(line) for line in cli_lines("predict", "--run", str(sentiment_run), "--json", *texts)]
    assert [output["label"] for output in body["outputs"]] == [record["label"] for record in expected]
    for output, record in zip(body["outputs"], expected):
        assert output["text"] == record["text"]
        for label, probability in record["probabilities"].items():
            assert output["probabilities"][label] == pytest.approx(probability, abs=1e-5)


@pytest.mark.process
def test_translate_predict_equals_the_cli(translate_run):
    texts = ["I am cold.", "hello", "Go."]
    expected = [json.loads(line) for line in
                cli_lines("predict", "--run", str(translate_run), "--json", "--beam", "2", *texts)]
    with serving(translate_run) as server:
        status, body = server.json("/predict", {"inputs": texts, "options": {"beam": 2}})
        assert status == 200 and body["outputs"] == expected
        status, body = server.json("/predict", {"inputs": texts, "options": {"beam": 0}})
        assert status == 400 and body["error"].startswith("beam 0 must be at least 1")


@pytest.mark.process
def test_textgen_predict_continues_each_seed_within_max_tokens(textgen_server, textgen_run):
    seeds = ["hello", "to be"]  # the server takes at most 100 tokens (--max-tokens 100), not the usual 300
    status, body = textgen_server.json("/predict", {"inputs": seeds, "options": {"random_seed": 3}})
    assert status == 200 and len(body["outputs"]) == 2
    expected = cli_lines("generate", "--run", str(textgen_run), "--seed", "hello", "--length", "100",
                         "--random-seed", "3")
    assert body["outputs"][0]["text"].splitlines() == expected
    assert all(len(output["text"]) == len(seed) + 100 for seed, output in zip(seeds, body["outputs"]))


@pytest.mark.process
def test_generate_streams_the_cli_text(textgen_server, textgen_run):
    options = {"length": 100, "temperature": 0.8, "random_seed": 3}  # over the 64 pieces one chunk holds at most
    expected = cli_lines("generate", "--run", str(textgen_run), "--seed", "hello", "--length", "100",
                         "--temperature", "0.8", "--random-seed", "3")
    status, text = textgen_server.call("/generate", {"seed": "hello", "options": options})
    assert status == 200 and text.decode().splitlines() == expected
    status, events = textgen_server.call("/generate", {"seed": "hello", "options": options},
                                         headers={"Accept": "text/event-stream"})
    pieces = [json.loads(line[len("data: "):])["text"] for line in events.decode().splitlines()
              if line.startswith("data: {\"text\"")]
    assert status == 200 and len(pieces) >= 2 and "".join(pieces).splitlines() == expected
    assert events.decode().endswith("event: end\ndata: {}\n\n")


@pytest.mark.process
def test_health_and_info(sentiment_server, sentiment_run):
    status, health = sentiment_server.json("/health")
    assert status == 200 and health["status"] == "ok" and health["task"] == "sentiment"
    status, info = sentiment_server.json("/info")
    prep = json.loads((sentiment_run / "preprocessing.json").read_text())
    assert status == 200 and info["task"] == "sentiment" and info["engine"] == "litert"
    assert info["config"]["model"]["units"] == 8 and info["metrics"]["classes"] == prep["classes"]
    assert info["vocabulary_size"] == {"tokenizer": len(prep["tokenizer"]["vocab"])}
    assert info["limits"]["max_inputs"] == 8 and info["batching"]["enabled"]
    status, docs = sentiment_server.call("/openapi.json")
    assert status == 200 and "/predict" in json.loads(docs)["paths"]


# -- malformed requests ------------------------------------------------------------------
LONG = "word " * 50  # 250 characters: over the --max-chars 200 the sentiment server runs with
MALFORMED = [  # (why, method, path, body or raw bytes, expected status)
    ("not JSON", "POST", "/predict", b"{inputs: [", 400),
    ("empty body", "POST", "/predict", b"", 400),
    ("body is a list", "POST", "/predict", ["a text"], 400),
    ("body is a string", "POST", "/predict", "a text", 400),
    ("NaN in the body", "POST", "/predict", b'{"inputs": ["a"], "options": {"x": NaN}}', 400),
    ("not UTF-8", "POST", "/predict", b'{"inputs": ["\xff\xfe"]}', 400),
    ("nested too deeply", "POST", "/predict", b"[" * 30_000 + b"]" * 30_000, 400),
    ("missing inputs", "POST", "/predict", {"options": {}}, 400),
    ("empty inputs", "POST", "/predict", {"inputs": []}, 400),
    ("inputs is a string", "POST", "/predict", {"inputs": "a text"}, 400),
    ("inputs holds a number", "POST", "/predict", {"inputs": ["fine", 3]}, 400),
    ("inputs holds null", "POST", "/predict", {"inputs": [None]}, 400),
    ("inputs holds a list", "POST", "/predict", {"inputs": [["nested"]]}, 400),
    ("too many inputs", "POST", "/predict", {"inputs": ["a"] * 9}, 413),
    ("over-long text", "POST", "/predict", {"inputs": [LONG]}, 413),
    ("body over the byte limit", "POST", "/predict", {"inputs": ["a" * 200_000]}, 413),
    ("unknown field", "POST", "/predict", {"inputs": ["a"], "input": ["b"]}, 400),
    ("unknown option", "POST", "/predict", {"inputs": ["a"], "options": {"beam": 2}}, 400),
    ("options not an object", "POST", "/predict", {"inputs": ["a"], "options": [1]}, 400),
    ("wrong method", "GET", "/predict", None, 405),
    ("wrong method on health", "POST", "/health", {}, 405),
    ("unknown path", "GET", "/nowhere", None, 404),
    ("unknown path, POST", "POST", "/predicts", {"inputs": ["a"]}, 404),
    ("generate on a sentiment run", "POST", "/generate", {"seed": "hello"}, 400),
]
MALFORMED_GENERATE = [  # the textgen server, --max-tokens 100
    ("temperature below 0", {"seed": "a", "options": {"temperature": -1}}, 400),
    ("temperature not a number", {"seed": "a", "options": {"temperature": "hot"}}, 400),
    ("top_k 0", {"seed": "a", "options": {"top_k": 0}}, 400),
    ("top_p over 1", {"seed": "a", "options": {"top_p": 2}}, 400),
    ("length negative", {"seed": "a", "options": {"length": -5}}, 400),
    ("length over --max-tokens", {"seed": "a", "options": {"length": 101}}, 400),
    ("length not an integer", {"seed": "a", "options": {"length": 2.5}}, 400),
    ("length true", {"seed": "a", "options": {"length": True}}, 400),
    ("random_seed negative", {"seed": "a", "options": {"random_seed": -1}}, 400),
    ("seed not a text", {"seed": 42}, 400),
    ("num_samples is not served", {"seed": "a", "options": {"num_samples": 2}}, 400),
    ("seed over --max-chars", {"seed": "a" * 2001}, 413),
]


def assert_one_error(status: int, text: bytes, expected: int, why: str) -> str:
    assert status == expected, f"{why}: {status} {text[:300]!r}"
    error = json.loads(text)["error"]
    assert isinstance(error, str) and error and "\n" not in error and "Traceback" not in error, why
    return error


@pytest.mark.process
@pytest.mark.parametrize("why, method, path, body, expected", MALFORMED, ids=[case[0] for case in MALFORMED])
def test_malformed_request_gets_one_error_and_the_server_goes_on(sentiment_server, why, method, path, body,
                                                                 expected):
    raw = body if isinstance(body, bytes) else None
    status, text = sentiment_server.call(path, None if raw is not None else body, method=method, raw=raw)
    assert_one_error(status, text, expected, why)
    assert sentiment_server.call("/health")[0] == 200


@pytest.mark.process
@pytest.mark.parametrize("why, body, expected", MALFORMED_GENERATE, ids=[case[0] for case in MALFORMED_GENERATE])
def test_malformed_generate_gets_one_error(textgen_server, why, body, expected):
    status, text = textgen_server.call("/generate", body)
    error = assert_one_error(status, text, expected, why)
    assert not re.search(r"--(temperature|top-k|top-p|length|random-seed|seed)\b", error), \
        "errors use the API's option names, not the CLI's flags"
    assert textgen_server.call("/health")[0] == 200


def test_options_are_checked_as_the_task_declares_them():
    """A sine run takes no inputs and an integer horizon (checked without a server or a model)."""
    from seqapp.serve_app import ApiError, predict_request
    from seqapp.serve_service import Limits
    from seqapp.tasks import get_task

    task = get_task("sine")()
    service = SimpleNamespace(task=task, run=SimpleNamespace(task="sine"), limits=Limits(8, 100, 500),
                              predict_options={"horizon": int, "random_seed": int},
                              needs_inputs=False, takes_inputs=False)
    assert predict_request({"options": {"horizon": 5}}, service) == ([], {"horizon": 5})
    for body, words in [({"inputs": [[1.0, "x", 3]]}, "inputs[0] is a list"),
                        ({"inputs": ["0.1 0.2"]}, "takes no inputs"),
                        ({"options": {"horizon": "ten"}}, 'option "horizon" must be an integer'),
                        ({"options": {"horizon": 0}}, "horizon 0 must be at least 1"),
                        ({"options": {"horizon": 501}}, "at most 500"),
                        ({"options": {"plot": "/tmp/x.png"}}, 'unknown option "plot"')]:
        with pytest.raises(ApiError, match=re.escape(words)):
            predict_request(body, service)


# -- batching under concurrent load --------------------------------------------------------
@pytest.mark.process
def test_concurrent_requests_are_answered_right_and_batched(sentiment_server):
    texts = [f"works great {i}, love it" if i % 2 else f"the battery died after {i} days" for i in range(8)]
    status, body = sentiment_server.json("/predict", {"inputs": texts})
    assert status == 200
    expected = {text: output["label"] for text, output in zip(texts, body["outputs"])}
    before = sentiment_server.json("/health")[1]

    def client(number: int) -> list[bool]:
        results = []
        for i in range(6):
            text = texts[(number + i) % len(texts)]
            status, answer = sentiment_server.json("/predict", {"inputs": [text]})
            results.append(status == 200 and answer["outputs"][0]["label"] == expected[text]
                           and answer["outputs"][0]["text"] == text)
        return results

    with ThreadPoolExecutor(32) as pool:
        results = [ok for answers in pool.map(client, range(32)) for ok in answers]
    assert len(results) == 32 * 6 and all(results)
    after = sentiment_server.json("/health")[1]
    requests = after["requests"] - before["requests"]
    calls = after["model_calls"] - before["model_calls"]
    assert requests == 32 * 6 and calls < requests and after["merged_requests"] > before["merged_requests"]


# -- start-up and shutdown -----------------------------------------------------------------
@pytest.mark.process
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "Ctrl-C"])
def test_a_signal_stops_the_server_with_exit_0(sentiment_run, sig):
    server = Server(sentiment_run, "--no-batching")
    status, info = server.json("/info")
    assert status == 200 and not info["batching"]["enabled"]
    assert server.json("/predict", {"inputs": ["fine"]})[0] == 200
    host, port = server.url.removeprefix("http://").rsplit(":", 1)
    with socket.create_connection((host, int(port))) as stalled:
        if sig == signal.SIGTERM:  # a request still in flight when the 5 s grace period ends
            stalled.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"inputs\": ")
            time.sleep(0.2)
        code, stderr = server.stop(sig)
        answer = stalled.recv(1000)
    assert code == 0, stderr
    assert "Traceback" not in stderr and "seqapp serve stopped" in stderr
    if sig == signal.SIGTERM:
        assert answer.startswith(b"HTTP/1.1 503") and b"shutting down" in answer


def test_bad_settings_and_a_busy_port_are_one_line(cli, sentiment_run):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        for args, words in [(["--port", str(port)], "is in use"), (["--port", "70000"], "must be in 0..65535"),
                            (["--max-inputs", "0"], "--max-inputs 0 must be at least 1"),
                            (["--engine", "fast"], "--engine 'fast' is not known")]:
            result = cli("serve", "--run", sentiment_run, *args)
            assert result.exit_code == 2 and words in result.stderr and len(result.stderr.splitlines()) == 1


def test_a_missing_extra_is_one_line(cli, sentiment_run, monkeypatch):
    monkeypatch.setitem(sys.modules, "uvicorn", None)  # find_spec then answers None, as if not installed
    result = cli("serve", "--run", sentiment_run)
    assert result.exit_code == 2
    assert result.stderr.strip() == 'error: seqapp serve needs the serve extra: pip install "seqapp[serve]"'


@pytest.mark.process
def test_the_cli_does_not_import_the_server_stack():
    code = "import sys, seqapp.cli; print(sorted(m for m in ('fastapi', 'uvicorn', 'starlette') if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == "[]", done.stderr
