"""Model calls for ``seqapp serve``: one worker thread, and micro-batching of ``/predict``.

One thread runs every model call. Neither the LiteRT interpreter nor a Keras model is
assumed safe to call from two threads at once, and on a small machine two concurrent calls
would only fight over the same cores; off the event loop, the calls leave the server free
to parse requests, answer ``/health`` and stream ``/generate`` while the model works.

Micro-batching: a recurrent model's call costs about the same for one text as for dozens
(the sentiment LiteRT graph always runs a batch of 32), so under concurrent load the
requests that wait together, with equal options, are merged into one call and the results
split back. A request waits at most ``wait_s`` for company, and only when the traffic is
concurrent (the last call merged several requests, or several are waiting): a lone client
never pays the window.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any

from seqapp.serve_metrics import BATCH_BUCKETS, LATENCY_BUCKETS, Histogram


@dataclass
class Stats:
    """Counters shown by ``/health`` and ``/info``: batching at work is ``model_calls < requests``."""

    requests: int = 0  # /predict requests that reached the model
    model_calls: int = 0  # task.predict calls made for them
    merged_requests: int = 0  # requests answered by a call shared with other requests
    largest_batch: int = 0  # most inputs in one call

    def as_dict(self) -> dict:
        return asdict(self)


class Worker:
    """The single thread that makes every model call, awaited from the event loop.

    A call cannot be interrupted: at shutdown the server stops waiting for it (:meth:`close`
    returns at once) and, if it is still running when the server is done, exits without it
    (:attr:`busy`)."""

    def __init__(self) -> None:
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="seqapp-model")
        self.seconds = Histogram(LATENCY_BUCKETS)  # how long each call took (GET /metrics)
        self.running = 0  # calls running now (0 or 1)

    async def call(self, function: Callable, *args: Any, **kwargs: Any) -> Any:
        """``function(*args, **kwargs)`` on the worker thread."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.executor, functools.partial(self.timed, function, *args, **kwargs))

    def timed(self, function: Callable, *args: Any, **kwargs: Any) -> Any:
        self.running += 1
        started = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            self.seconds.observe(time.perf_counter() - started)
            self.running -= 1

    @property
    def busy(self) -> bool:
        """A call is running on the thread now."""
        return self.running > 0

    def submit(self, function: Callable, *args: Any) -> None:
        """Queue ``function(*args)`` behind the running call, without waiting (e.g. closing a generator
        that a call may still be advancing)."""
        self.executor.submit(function, *args)

    def close(self) -> None:
        """Take no more calls and drop the queued ones; a running call is not waited for."""
        self.executor.shutdown(wait=False, cancel_futures=True)


@dataclass
class Pending:
    """A ``/predict`` request waiting for a batch."""

    inputs: list[str]
    options: dict
    future: asyncio.Future
    arrived: float
    key: str = field(init=False)

    def __post_init__(self) -> None:
        self.key = json.dumps(self.options, sort_keys=True)  # only requests with equal options share a call


class Batcher:
    """Answers ``/predict`` with ``predict(inputs, options) -> outputs`` (one output per input),
    merging concurrent requests into one call when ``enabled``."""

    def __init__(self, predict: Callable[[list[str], dict], list], worker: Worker, *, enabled: bool,
                 wait_s: float, max_batch: int) -> None:
        self.predict_fn = predict
        self.worker = worker
        self.enabled = enabled
        self.wait_s = wait_s
        self.max_batch = max_batch
        self.stats = Stats()
        self.batch_sizes = Histogram(BATCH_BUCKETS)  # inputs per model call (GET /metrics)
        self.waiting: deque[Pending] = deque()
        self.arrived = asyncio.Event()
        self.full = asyncio.Event()
        self.last_merged = 1  # requests in the last call: >1 means the traffic is concurrent
        self.task: asyncio.Task | None = None

    def start(self) -> None:
        """Start collecting batches on the running event loop."""
        if self.enabled:
            self.task = asyncio.get_running_loop().create_task(self.collect())

    async def stop(self) -> None:
        """Stop collecting; requests still waiting get an error (shutdown lets answered ones finish first)."""
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
        for item in self.waiting:
            if not item.future.done():
                item.future.set_exception(RuntimeError("the server is shutting down"))
        self.waiting.clear()

    async def predict(self, inputs: list[str], options: dict) -> list:
        """The outputs for one request: merged with others where possible, else a call of its own."""
        self.stats.requests += 1
        if not self.enabled or not inputs:  # nothing to merge (a task that takes no inputs)
            self.count_call(1, len(inputs))
            return await self.worker.call(self.predict_fn, inputs, options)
        loop = asyncio.get_running_loop()
        item = Pending(inputs, options, loop.create_future(), loop.time())
        self.waiting.append(item)
        self.arrived.set()
        if sum(len(pending.inputs) for pending in self.waiting) >= self.max_batch:
            self.full.set()
        return await item.future

    async def collect(self) -> None:
        """Forever: wait for requests, give company a moment to arrive, answer them in merged calls."""
        loop = asyncio.get_running_loop()
        while True:
            while not self.waiting:
                self.arrived.clear()
                await self.arrived.wait()
            concurrent = self.last_merged > 1 or len(self.waiting) > 1
            delay = self.waiting[0].arrived + self.wait_s - loop.time()
            if concurrent and delay > 0 and not self.full.is_set():
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self.full.wait(), delay)
            batch = self.take()
            groups: dict[str, list[Pending]] = {}
            for item in batch:
                groups.setdefault(item.key, []).append(item)
            for items in groups.values():
                try:
                    await self.answer(items)
                except Exception as exc:  # never let one batch stop the collecting: later requests would hang
                    for item in items:
                        settle(item.future, exception=exc)

    def take(self) -> list[Pending]:
        """The waiting requests, oldest first, up to ``max_batch`` inputs (at least one request)."""
        batch: list[Pending] = []
        size = 0
        while self.waiting and (not batch or size + len(self.waiting[0].inputs) <= self.max_batch):
            item = self.waiting.popleft()
            if item.future.done():  # the client went away
                continue
            batch.append(item)
            size += len(item.inputs)
        if sum(len(item.inputs) for item in self.waiting) < self.max_batch:
            self.full.clear()
        self.last_merged = max(1, len(batch))
        return batch

    async def answer(self, items: list[Pending]) -> None:
        """One call for ``items``; if it fails, each request alone, so one bad request fails only itself."""
        inputs = [text for item in items for text in item.inputs]
        self.count_call(len(items), len(inputs))
        try:
            outputs = await self.worker.call(self.predict_fn, inputs, items[0].options)
            if len(items) > 1 and len(outputs) != len(inputs):
                raise ValueError("outputs do not match the inputs one to one")
        except Exception as exc:
            if len(items) == 1:
                settle(items[0].future, exception=exc)
                return
            for item in items:
                await self.answer([item])
            return
        start = 0
        for item in items:
            settle(item.future, outputs if len(items) == 1 else outputs[start:start + len(item.inputs)])
            start += len(item.inputs)

    def count_call(self, requests: int, inputs: int) -> None:
        self.stats.model_calls += 1
        if requests > 1:
            self.stats.merged_requests += requests
        self.stats.largest_batch = max(self.stats.largest_batch, inputs)
        self.batch_sizes.observe(inputs)


def settle(future: asyncio.Future, result: Any = None, exception: BaseException | None = None) -> None:
    """Give ``future`` its result unless its request was already cancelled."""
    if future.done():
        return
    if exception is not None:
        future.set_exception(exception)
    else:
        future.set_result(result)


def pull_text(pieces: Any, least: int = 1, budget_s: float = 0.01, most: int = 64) -> str | None:
    """The next text from a ``task.generate`` stream (first sample): at least ``least`` pieces, joined
    with those that come within ``budget_s`` (tokens are sampled in chunks, so most come at once,
    and one hop to the worker per piece would cost more than the piece); None at the end."""
    texts: list[str] = []
    deadline = time.perf_counter() + budget_s
    for piece in pieces:
        texts.append(piece[0])
        if len(texts) >= least and (len(texts) >= most or time.perf_counter() >= deadline):
            break
    return "".join(texts) if texts else None
