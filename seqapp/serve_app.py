"""The HTTP API of ``seqapp serve``: routes, request checks, and errors as one JSON line.

Request bodies are read and checked here rather than by pydantic models: every way a body
can be wrong gets one message a person can act on (``{"error": "..."}`` with a 4xx), in the
words of the API (``beam``, not ``--beam``), and the check costs microseconds on the
hot path. The request schemas are still in the OpenAPI document, for ``/docs``.

Imported only when the server starts (it imports FastAPI), never by ``seqapp --help``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import os
import re
import sys
import traceback
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect
from starlette.responses import Response, StreamingResponse

from seqapp import files, sampling
from seqapp.errors import SeqappError
from seqapp.serve_batching import pull_text
from seqapp.serve_guard import Gate
from seqapp.serve_metrics import CONTENT_TYPE, exposition
from seqapp.serve_service import GENERATE_LENGTH, MAX_BEAM, MAX_HISTORY, Exposure, Limits, Service, without_paths
from seqapp.version import __version__

log = logging.getLogger("seqapp")
GENERATE_OPTIONS = {"length": int, "temperature": float, "top_k": int, "top_p": float, "random_seed": int,
                    "no_repeat_ngram": int, "stop": list}
MAX_STOPS = 16  # stop texts one /generate may give: each is looked for after every token
KIND_WORDS = {bool: "true or false", int: "an integer", float: "a number", str: "a text"}
MAX_RANDOM_SEED = 2**31 - 1
FLOAT32_MAX = 3.4028234663852886e38  # the largest finite 32-bit float: the models compute in float32
FLOAT32_TINY = 1.1754943508222875e-38  # the smallest normal one: a smaller value rounds away
ENDPOINTS = "POST /predict, POST /generate, GET /health, GET /info, GET /metrics (docs at /docs)"


class ApiError(Exception):
    """A request the server refuses: HTTP ``status`` and one line saying what to change."""

    def __init__(self, status: int, message: str, headers: dict | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers


def json_response(value: Any, status: int = 200, headers: dict | None = None) -> Response:
    return Response(json.dumps(value, allow_nan=False, separators=(",", ":")), status, headers,
                    media_type="application/json")


def build_app(service: Service, url: str, exposure: Exposure, gate: Gate) -> FastAPI:
    """The FastAPI app serving ``service``; its lifespan starts and stops the batcher and worker."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        asyncio.get_running_loop().set_exception_handler(gate.loop_exception)
        service.batcher.start()
        sys.stderr.write(f"serving the {service.run.task} run {service.run.path} ({service.engine} engine) on {url}"
                         f"; API docs at {url}/docs; Ctrl-C stops\n")
        sys.stderr.flush()
        try:
            yield
        finally:
            await service.batcher.stop()
            service.worker.close()  # a model call still running is not waited for (serve.py exits without it)
            sys.stderr.write("seqapp serve stopped\n")

    def public(message: str) -> str:
        return message if exposure.info_paths else without_paths(message)

    app = FastAPI(title="seqapp", version=__version__, lifespan=lifespan,
                  description=f"A {service.run.task} run ({service.task.summary}) served by seqapp.")
    app.add_exception_handler(ApiError, lambda request, exc: json_response(
        {"error": public(exc.message)}, exc.status, exc.headers))
    app.add_exception_handler(HTTPException, http_error)
    app.add_exception_handler(RequestValidationError, lambda request, exc: json_response(
        {"error": f"bad request: {exc.errors()[0].get('msg', 'invalid') if exc.errors() else 'invalid'}"}, 400))
    app.add_api_route("/predict", predict_endpoint(service, exposure.token), methods=["POST"], response_model=None,
                      summary="Predict for a list of inputs", openapi_extra=PREDICT_DOC)
    app.add_api_route("/generate", generate_endpoint(service, exposure.token), methods=["POST"],
                      response_model=None, summary="Stream generated text (text/plain, or server-sent events with "
                                                   "Accept: text/event-stream)", openapi_extra=GENERATE_DOC)

    async def health() -> Response:
        return json_response({"status": "ok", "task": service.run.task, **service.batcher.stats.as_dict()})

    async def info() -> Response:
        return json_response(files.finite({**service.info(exposure.info_paths),
                                           "stats": service.batcher.stats.as_dict()}))

    async def metrics() -> Response:
        text = exposition(gate.metrics, connections=len(gate.open), batch=service.batcher.stats.as_dict(),
                          batch_sizes=service.batcher.batch_sizes, model_seconds=service.worker.seconds,
                          info={"task": service.run.task, "engine": service.engine, "version": __version__})
        return Response(text, media_type=CONTENT_TYPE)

    app.add_api_route("/health", health, methods=["GET", "HEAD"], response_model=None,
                      summary="Liveness and counters")
    app.add_api_route("/info", info, methods=["GET"], response_model=None, summary="The run: task, config, metrics")
    app.add_api_route("/metrics", metrics, methods=["GET"], response_model=None,
                      summary="Counters and histograms in the Prometheus text format")
    return app


async def http_error(request: Request, exc: HTTPException) -> Response:
    """Starlette's 404 / 405 (and any other HTTPException) as ``{"error": ...}``."""
    where = f"{request.method} {request.url.path}"
    if exc.status_code == 404:
        message = f"no such endpoint: {where}; the API has {ENDPOINTS}"
    elif exc.status_code == 405:
        message = f"{where} is not allowed; use {(exc.headers or {}).get('Allow', 'another method')}"
    else:
        message = str(exc.detail)
    return json_response({"error": message}, exc.status_code, exc.headers)


def authorize(request: Request, token: str | None) -> None:
    """With a token set (``--token`` / ``SEQAPP_TOKEN``), the request must carry it as a bearer token;
    checked before the body is read, in constant time."""
    if token is None:
        return
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not given.strip():
        raise ApiError(401, 'this server needs a token: send the header "Authorization: Bearer <token>" with the '
                            "token it was started with (seqapp serve --token, or SEQAPP_TOKEN)",
                       {"WWW-Authenticate": "Bearer"})
    if not hmac.compare_digest(given.strip().encode("latin-1"), token.encode()):
        raise ApiError(401, 'the bearer token is wrong; send "Authorization: Bearer <token>" with the token the '
                            "server was started with", {"WWW-Authenticate": 'Bearer error="invalid_token"'})


def predict_endpoint(service: Service, token: str | None) -> Any:
    async def predict(request: Request) -> Response:
        authorize(request, token)
        body = await read_body(request, service.limits)
        inputs, options = predict_request(body, service)
        try:
            outputs = await service.batcher.predict(inputs, options)
        except SeqappError as exc:
            raise ApiError(400, api_wording(str(exc), service.predict_options)) from None
        except Exception as exc:
            raise internal_error("predict", exc) from None
        return json_response({"outputs": files.finite(outputs)})

    return predict


def generate_endpoint(service: Service, token: str | None) -> Any:
    async def generate(request: Request) -> Response:
        authorize(request, token)
        if not service.task.generates:
            raise ApiError(400, f"POST /generate needs a text-generation run, and this server runs a "
                                f"{service.run.task} run; use POST /predict")
        body = await read_body(request, service.limits)
        seed, options = generate_request(body, service.limits)
        pieces = service.generation(seed, options)
        try:  # the seed and the first token before any byte is sent: a bad seed is still a 400
            first = await service.worker.call(pull_text, pieces, 2)
        except SeqappError as exc:
            raise ApiError(400, api_wording(str(exc), GENERATE_OPTIONS)) from None
        except Exception as exc:
            raise internal_error("generate", exc) from None
        events = "text/event-stream" in request.headers.get("accept", "")
        return StreamingResponse(stream(service, pieces, first, events),
                                 media_type="text/event-stream" if events else "text/plain; charset=utf-8")

    return generate


async def stream(service: Service, pieces: Any, text: str | None, events: bool) -> AsyncIterator[bytes]:
    """The generated text as it comes, as plain text or as server-sent events (``data: {"text": ...}``),
    encoded here (what UTF-8 cannot hold becomes "?"), so that no text can fail once the status is sent."""
    try:
        while text is not None:
            chunk = f"data: {json.dumps({'text': text})}\n\n" if events else text
            yield chunk.encode("utf-8", "replace")
            text = await service.worker.call(pull_text, pieces)
        if events:
            yield b"event: end\ndata: {}\n\n"
    except Exception as exc:  # the status line is sent: end the stream, and say why in the log
        error = internal_error("generate", exc)
        if events:
            yield f"event: error\ndata: {json.dumps({'error': error.message})}\n\n".encode()
    finally:
        with contextlib.suppress(RuntimeError):  # the worker is already shut down
            service.worker.submit(pieces.close)  # after the step it may be running for us


def internal_error(route: str, exc: Exception) -> ApiError:
    """Log a failure that is not the client's fault (one line; the traceback with SEQAPP_DEBUG=1)."""
    reason = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
    log.error(f"{route} failed: {type(exc).__name__}{': ' + reason if reason else ''}")
    if os.environ.get("SEQAPP_DEBUG", "") not in ("", "0"):
        traceback.print_exception(type(exc), exc, exc.__traceback__)
    return ApiError(500, f"{route} failed on the server ({type(exc).__name__}); see the server's log")


# -- reading requests ---------------------------------------------------------------------
async def read_body(request: Request, limits: Limits) -> dict:
    """The request's JSON object, read up to the body limit."""
    limit = limits.max_body_bytes
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise ApiError(413, f"the body has {declared} bytes; this server takes at most {limit}")
    chunks, size = [], 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise ApiError(413, f"the body is over {limit} bytes, the most this server takes")
            chunks.append(chunk)
    except ClientDisconnect:  # gone (or timed out) before its whole body came: nobody reads the answer
        raise ApiError(499, "the client closed the connection before sending its whole body") from None
    raw = b"".join(chunks)
    if not raw.strip():
        raise ApiError(400, 'the request has no body; send a JSON object such as {"inputs": ["a text"]}')
    try:
        body = json.loads(raw, parse_constant=refuse_constant)
    except json.JSONDecodeError as exc:
        raise ApiError(400, f"the body is not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") from None
    except UnicodeDecodeError:
        raise ApiError(400, "the body is not valid UTF-8 text; send JSON encoded as UTF-8") from None
    except RecursionError:
        raise ApiError(400, "the body's JSON is nested too deeply") from None
    except ValueError as exc:
        raise ApiError(400, f"the body is not valid JSON ({exc})") from None
    if not isinstance(body, dict):
        raise ApiError(400, f'the body must be a JSON object such as {{"inputs": ["a text"]}}, not {json_type(body)}')
    return body


def refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number JSON allows")


def json_type(value: Any) -> str:
    """How a JSON value is called in messages: 'a number', 'a list', ..."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true or false"
    names = {str: "a text", int: "a number", float: "a number", list: "a list", dict: "an object"}
    return names.get(type(value), type(value).__name__)


def check_fields(body: dict, fields: tuple[str, ...], route: str) -> None:
    for key in body:
        if key not in fields:
            raise ApiError(400, f'unknown field "{key}"; a {route} body has {" and ".join(fields)}')


def predict_request(body: dict, service: Service) -> tuple[list[str], dict]:
    """The inputs and options of a ``/predict`` body, checked as ``seqapp predict`` checks them; a
    series run's ``history`` (the numbers to forecast from) becomes the ``history`` option."""
    check_fields(body, ("inputs", "options", "history") if service.task.takes_history else ("inputs", "options"),
                 "POST /predict")
    options = parse_options(body.get("options"), service.predict_options, service.limits, service.run.task)
    if body.get("history") is not None:
        options["history"] = history_values(body["history"])
    if "inputs" not in body and service.needs_inputs:
        raise ApiError(400, '"inputs" is missing; send {"inputs": ["a text", ...]}')
    inputs = text_list(body.get("inputs", []), service.limits)
    if inputs and not service.takes_inputs:
        raise ApiError(400, f'a {service.run.task} run takes no inputs; leave "inputs" out (or empty) and send only '
                            '"options"')
    if not inputs and service.needs_inputs:
        raise ApiError(400, '"inputs" is empty; send at least one text, e.g. {"inputs": ["a text"]}')
    try:
        service.task.check_inputs(inputs, **options)
        service.task.check_run_options(service.run, **options)
    except SeqappError as exc:
        raise ApiError(400, api_wording(str(exc), service.predict_options)) from None
    return inputs, options


def history_values(value: Any) -> list[float]:
    """A ``/predict`` ``history``: a list of at most :data:`MAX_HISTORY` numbers, oldest first (how many
    the run needs is the task's check)."""
    if not isinstance(value, list):
        raise ApiError(400, f'"history" must be a list of numbers, oldest first, not {json_type(value)}')
    if len(value) > MAX_HISTORY:
        raise ApiError(413, f'"history" has {len(value)} values; this server takes at most {MAX_HISTORY} (the '
                            "model reads only the last window of them)")
    for i, number in enumerate(value):
        if isinstance(number, bool) or not isinstance(number, (int, float)):
            raise ApiError(400, f"history[{i}] is {json_type(number)}; each value must be a number")
        if not abs(number) <= sys.float_info.max:  # an integer beyond float range
            raise ApiError(400, f"history[{i}] is too large a number; give values within the range of a float")
    return [float(number) for number in value]


def text_list(value: Any, limits: Limits) -> list[str]:
    if not isinstance(value, list):
        raise ApiError(400, f'"inputs" must be a list of texts such as ["a text"], not {json_type(value)}')
    if len(value) > limits.max_inputs:
        raise ApiError(413, f"{len(value)} inputs; this server takes at most {limits.max_inputs} per request "
                            "(seqapp serve --max-inputs)")
    for i, text in enumerate(value):
        if not isinstance(text, str):
            raise ApiError(400, f"inputs[{i}] is {json_type(text)}; each input must be a text (a JSON string)")
        check_text(f"inputs[{i}]", text, limits)
    return value


def check_text(what: str, text: str, limits: Limits) -> None:
    """A text field within ``--max-chars`` and made of Unicode characters (JSON's ``\\ud800`` escape
    alone, a lone surrogate, is not one: no model or answer could encode it)."""
    if len(text) > limits.max_chars:
        raise ApiError(413, f"{what} has {len(text)} characters; this server takes at most {limits.max_chars} "
                            "(seqapp serve --max-chars)")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ApiError(400, f"{what} holds a lone surrogate (\\u{ord(text[exc.start]):04x} at character "
                            f"{exc.start}), which is not a Unicode character; send valid text (an escaped "
                            "surrogate must come in a high-low pair such as \\ud83d\\ude00)") from None


def generate_request(body: dict, limits: Limits) -> tuple[str, dict]:
    """The seed and sampling options of a ``/generate`` body, checked as ``seqapp generate`` checks them."""
    check_fields(body, ("seed", "options"), "POST /generate")
    seed = "" if body.get("seed") is None else body["seed"]
    if not isinstance(seed, str):
        raise ApiError(400, f'"seed" must be a text to continue, not {json_type(seed)}')
    check_text('"seed"', seed, limits)
    raw = body.get("options")
    stop = raw.pop("stop", None) if isinstance(raw, dict) else None
    options = parse_options(raw, GENERATE_OPTIONS, limits, "text-generation")
    options.setdefault("length", min(GENERATE_LENGTH, limits.max_tokens))
    if stop is not None:
        options["stop"] = stop_texts(stop, limits)
    try:
        sampling.check_options(options.get("temperature", 1.0), options.get("top_k"), options.get("top_p"))
        sampling.check_counts(options["length"], 1)
        sampling.check_no_repeat_ngram(options.get("no_repeat_ngram"))
        sampling.check_stops(options.get("stop"))
    except SeqappError as exc:
        raise ApiError(400, api_wording(str(exc), GENERATE_OPTIONS)) from None
    return seed, options


def stop_texts(value: Any, limits: Limits) -> list[str]:
    """The ``stop`` option of ``/generate``: a text, or a list of at most :data:`MAX_STOPS` texts."""
    texts = [value] if isinstance(value, str) else value
    if not isinstance(texts, list) or not all(isinstance(text, str) for text in texts):
        raise ApiError(400, f'option "stop" must be a text or a list of texts, not {json_type(value)}')
    if len(texts) > MAX_STOPS:
        raise ApiError(400, f'option "stop" has {len(texts)} texts; this server takes at most {MAX_STOPS}')
    for i, text in enumerate(texts):
        check_text(f'option "stop"[{i}]', text, limits)
    return texts


def parse_options(raw: Any, allowed: dict[str, type], limits: Limits, task: str) -> dict:
    """``options`` checked against the names and types a route takes; null means 'not given'."""
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ApiError(400, f'"options" must be an object such as {{"name": value}}, not {json_type(raw)}')
    options = {}
    for name, value in raw.items():
        if name not in allowed:
            known = f"these options: {', '.join(allowed)}" if allowed else "no options"
            raise ApiError(400, f'unknown option "{name}"; a {task} run takes {known}')
        if value is not None:
            options[name] = option_value(name, value, allowed[name], limits)
    return options


def option_value(name: str, value: Any, kind: type, limits: Limits) -> Any:
    """One option's value, of the declared type and within the server's ceilings."""
    is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
    fits = {bool: isinstance(value, bool), int: is_number and isinstance(value, int),
            float: is_number, str: isinstance(value, str)}.get(kind, False)
    if not fits:
        raise ApiError(400, f'option "{name}" must be {KIND_WORDS.get(kind, kind.__name__)}, not {json_type(value)}')
    if kind is float:
        value = float32_option(name, value)
    if kind is int and not -2**63 <= value < 2**63:
        raise ApiError(400, f'option "{name}" is too large a number; use a 64-bit integer')
    if kind is int:
        if name == "random_seed" and not 0 <= value <= MAX_RANDOM_SEED:
            raise ApiError(400, f'option "random_seed" is {value}; use a whole number in 0..{MAX_RANDOM_SEED}')
        beam_like = name in ("beam", "n_best")  # n_best widens the beam to at least n_best
        ceiling = MAX_BEAM if beam_like else limits.max_tokens
        if name != "random_seed" and value > ceiling:
            flag = "" if beam_like else " (seqapp serve --max-tokens)"
            raise ApiError(400, f'option "{name}" is {value}; this server allows at most {ceiling}{flag}')
    if kind is str:
        check_text(f'option "{name}"', value, limits)
    return value


def float32_option(name: str, value: int | float) -> float:
    """A number option as the models use it: 0, or finite and normal as a 32-bit float (a value past
    3.4e38 would become infinity there, one under 1.2e-38 would lose its digits or become 0)."""
    fits = abs(value) <= FLOAT32_MAX and (value == 0 or abs(value) >= FLOAT32_TINY)  # NaN fails too
    if not fits:
        shown = str(value) if len(str(value)) <= 24 else str(value)[:20] + "..."
        raise ApiError(400, f'option "{name}" is {shown}, outside the range of a 32-bit float; use 0 or a number '
                            f"of magnitude {FLOAT32_TINY:.4g} to {FLOAT32_MAX:.4g}")
    return float(value)


def api_wording(message: str, names: Any) -> str:
    """A task's CLI message in the API's words: ``--top-k`` becomes ``top_k`` where it is an option here."""

    def option(match: re.Match) -> str:
        name = match.group(1).replace("-", "_")
        return name if name in names or name == "seed" else match.group(0)

    return re.sub(r"--([a-z][a-z0-9-]*)", option, message)


# -- OpenAPI documentation (the bodies are checked by hand, see the module docstring) ----------
PREDICT_DOC = {"requestBody": {"required": True, "content": {"application/json": {
    "schema": {"type": "object", "properties": {
        "inputs": {"type": "array", "items": {"type": "string"}, "description": "Texts (none for a sine run)."},
        "options": {"type": "object", "description": "The run's predict options (GET /info: predict_options)."},
        "history": {"type": "array", "items": {"type": "number"}, "description": (
            "A sine run: the values to forecast from, oldest first (default: the run's own series).")}}},
    "example": {"inputs": ["what a lovely film"], "options": {}}}}},
    "responses": {"200": {"description": '{"outputs": [one record per input]}'},
                  "400": {"description": '{"error": "what is wrong"}'}}}
GENERATE_DOC = {"requestBody": {"required": True, "content": {"application/json": {
    "schema": {"type": "object", "properties": {
        "seed": {"type": "string", "description": "Text to continue."},
        "options": {"type": "object", "properties": {
            name: {"type": "integer"} if kind is int else {"type": "number"} if kind is float else
            {"oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]}
            for name, kind in GENERATE_OPTIONS.items()}}}},
    "example": {"seed": "hello", "options": {"length": 100, "temperature": 0.8, "random_seed": 1}}}}},
    "responses": {"200": {"description": "The text, streamed as it is generated."},
                  "400": {"description": '{"error": "what is wrong"}'}}}
