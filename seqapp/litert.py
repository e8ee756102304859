"""Fast inference without TensorFlow: a run's step graph as a LiteRT file, run in numpy.

Training converts the task's inference graphs (the text generator's single-step model,
the sentiment classifier, the translator's encoder and decoder step) to LiteRT
flatbuffers in ``<run>/litert/`` with TensorFlow's converter (builtin ops only, the
trained weights frozen in, a fixed batch; a sequence length may stay free), checks each
against Keras on random inputs, and notes the input and output tensor names in
``manifest.json``. ``seqapp generate`` and ``predict`` then run them on the
``ai-edge-litert`` interpreter, sampling or searching in numpy, and never import
TensorFlow: the command answers in well under a second instead of paying TensorFlow's
import and XLA compile on every call. ``--engine tf`` keeps the Keras path.

This module imports neither TensorFlow nor the interpreter at import time.
"""

from __future__ import annotations

import contextlib
import json
import logging
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from seqapp.errors import SeqappError

log = logging.getLogger("seqapp")

FOLDER = "litert"
MANIFEST = "manifest.json"
TOLERANCE = 1e-4  # largest difference from Keras allowed when a graph is checked at export
DYNAMIC_SIZES = (1, 7)  # where a graph has a free dimension, the sizes it is checked at


def available(run_path: Path, graph: str) -> bool:
    """True when the run holds LiteRT graph ``graph`` and the interpreter can be imported."""
    if not (run_path / FOLDER / f"{graph}.tflite").is_file():
        return False
    try:
        import ai_edge_litert.interpreter  # noqa: F401
    except ImportError:
        return False
    return True


def choose(run_path: Path, graph: str, engine: str) -> str:
    """The engine to use: ``litert`` or ``tf``, from ``auto`` | ``litert`` | ``tf``."""
    if engine == "tf":
        return "tf"
    if available(run_path, graph):
        return "litert"
    if engine == "litert":
        raise SeqappError(f"{run_path} has no LiteRT {graph} graph (or ai-edge-litert is not installed); "
                          "use --engine tf, or train the run again with this version of seqapp")
    return "tf"


# -- export (needs TensorFlow) -----------------------------------------------------------


def export(folder: Path, name: str, model: Any, specs: Sequence[Any]) -> bool:
    """Write ``model`` (called on tensors of ``specs``) as ``folder/litert/<name>.tflite``.

    The graph is checked against Keras on random inputs before it is kept; a graph that
    does not convert or does not match is left out with a warning (the run then uses the
    TensorFlow engine). Returns True when the graph was written.
    """
    try:
        with quiet_conversion():
            blob = convert(model, specs)
            outputs = check(blob, model, specs)
    except Exception as exc:  # the converter raises many kinds; the run stays usable without it
        log.warning(f"no LiteRT {name} graph for this run ({str(exc).splitlines()[0][:200]}); "
                    "generate and predict will use TensorFlow")
        return False
    target = folder / FOLDER
    target.mkdir(exist_ok=True)
    (target / f"{name}.tflite").write_bytes(blob)
    manifest = read_manifest(folder)
    manifest[name] = {"inputs": [spec.name for spec in specs], "outputs": outputs}
    (target / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return True


@contextlib.contextmanager
def quiet_conversion() -> Iterator[None]:
    """Hide the notes Keras and the converter print on the way (the structure of the inputs,
    a deprecated conversion path, a softmax over a one-position source while checking):
    they say nothing a seqapp user can act on. A failed conversion is still reported."""
    absl = logging.getLogger("absl")
    level = absl.level
    absl.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        absl.setLevel(level)


def convert(model: Any, specs: Sequence[Any]) -> bytes:
    """A LiteRT flatbuffer of ``model`` with its weights frozen in (builtin ops only)."""
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    function = tf.function(lambda *inputs: model(list(inputs), training=False), input_signature=list(specs),
                           autograph=False)
    frozen = convert_variables_to_constants_v2(function.get_concrete_function())
    converter = tf.lite.TFLiteConverter.from_concrete_functions([frozen])
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    return converter.convert()


def check(blob: bytes, model: Any, specs: Sequence[Any]) -> list[str]:
    """Compare the LiteRT graph with Keras on random inputs; return its output names in Keras's order.

    A graph with a free dimension (a source sentence of any length) is checked at each of
    ``DYNAMIC_SIZES``, so a graph that is only right at the size it was first run with is caught.
    """
    rng = np.random.default_rng(0)
    graph = Graph(blob)
    dynamic = any(size is None for spec in specs for size in spec.shape)
    found = None
    for size in DYNAMIC_SIZES if dynamic else (1,):
        inputs = {spec.name: random_input(rng, spec, size) for spec in specs}
        expected = model([inputs[spec.name] for spec in specs], training=False)
        expected = [np.asarray(value) for value in (expected if isinstance(expected, (list, tuple)) else [expected])]
        names = match_outputs(expected, graph.run_raw(inputs))
        if found is not None and names != found:
            raise ValueError(f"the converted graph's outputs change order at size {size}")
        found = names
    return found


def match_outputs(expected: list[np.ndarray], got: dict[str, np.ndarray]) -> list[str]:
    """The name of the LiteRT output equal to each Keras output (same shape, within TOLERANCE)."""
    names: list[str] = []
    for want in expected:
        match = [name for name, value in got.items() if value.shape == want.shape and name not in names
                 and np.max(np.abs(value - want), initial=0.0) <= TOLERANCE]
        if not match:
            raise ValueError("the converted graph does not give Keras's outputs")
        names.append(match[0])
    return names


def random_input(rng: np.random.Generator, spec: Any, size: int = 1) -> np.ndarray:
    """Random values for ``spec``; a free dimension (None) gets ``size``."""
    shape = [size if dim is None else int(dim) for dim in spec.shape]
    if spec.dtype.is_bool:  # a mask: some positions off, so masking is part of the check
        return rng.random(shape) < 0.7
    if spec.dtype.is_integer:
        return rng.integers(0, 4, shape).astype(spec.dtype.as_numpy_dtype)
    return rng.normal(0, 0.5, shape).astype(spec.dtype.as_numpy_dtype)


def read_manifest(folder: Path) -> dict:
    path = folder / FOLDER / MANIFEST
    if not path.is_file():
        return {}
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise SeqappError(f"{path} cannot be read ({exc}); use --engine tf or train the run again") from None
    return manifest if isinstance(manifest, dict) else {}


# -- inference (no TensorFlow) -------------------------------------------------------------


class Graph:
    """One LiteRT graph on the interpreter: named numpy inputs in, named numpy outputs out."""

    def __init__(self, source: bytes | Path, outputs: Sequence[str] | None = None,
                 inputs: Sequence[str] | None = None) -> None:
        from ai_edge_litert.interpreter import Interpreter

        from seqapp import backend

        with backend.captured_stderr(backend.replay):  # the interpreter's start-up note, as TensorFlow's
            if isinstance(source, Path):
                self.interpreter = Interpreter(model_path=str(source), num_threads=1)
            else:
                self.interpreter = Interpreter(model_content=source, num_threads=1)
            self.interpreter.allocate_tensors()
        self.inputs = {d["name"]: d for d in self.interpreter.get_input_details()}
        self.output_index = {d["name"]: d["index"] for d in self.interpreter.get_output_details()}
        self.outputs = list(outputs or self.output_index)
        self.input_names = list(inputs or self.inputs)

    def run_raw(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Invoke with ``inputs`` by name; every output by its tensor name."""
        self.fit_shapes(inputs)
        for name, value in inputs.items():
            detail = self.inputs[name]
            self.interpreter.set_tensor(detail["index"], np.asarray(value, detail["dtype"]))
        self.interpreter.invoke()
        return {name: self.interpreter.get_tensor(index) for name, index in self.output_index.items()}

    def fit_shapes(self, inputs: dict[str, np.ndarray]) -> None:
        """Resize the graph's free dimensions (exported as None) to the shapes of ``inputs``.

        Only free dimensions change (``strict``): a fixed batch stays fixed, and a wrong
        shape is the interpreter's error. Tensors are re-allocated only when a shape changed,
        which for the translator is once per batch of sentences, not once per step.
        """
        changed = False
        for name, value in inputs.items():
            detail = self.inputs[name]
            if tuple(detail["shape"]) != np.shape(value):
                self.interpreter.resize_tensor_input(detail["index"], list(np.shape(value)), strict=True)
                changed = True
        if changed:
            self.interpreter.allocate_tensors()
            self.inputs = {d["name"]: d for d in self.interpreter.get_input_details()}

    def __call__(self, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
        """The outputs in the order of the Keras model the graph was made from."""
        found = self.run_raw(inputs)
        return [found[name] for name in self.outputs]


def batched(graph: Graph, name: str, rows: np.ndarray, filler: np.ndarray) -> np.ndarray:
    """The first output of a fixed-batch ``graph`` for any number of ``rows`` of input ``name``.

    Rows go through in batches of the graph's size; the last batch is topped up with
    ``filler`` rows, whose outputs are dropped.
    """
    return batched_outputs(graph, {name: rows}, {name: filler})[0]


def batched_outputs(graph: Graph, feed: dict[str, np.ndarray], fillers: dict[str, np.ndarray] | None = None,
                    ) -> list[np.ndarray]:
    """All outputs (Keras's order) of a fixed-batch ``graph`` for any number of rows.

    Every array of ``feed`` holds the same rows; they go through in batches of the graph's
    size, the last batch topped up with the row in ``fillers`` (zeros where none is given),
    whose outputs are dropped. Free dimensions take the width of ``feed`` (see Graph.fit_shapes).
    """
    feed = {name: np.asarray(rows) for name, rows in feed.items()}
    count = len(next(iter(feed.values())))
    size = int(graph.inputs[next(iter(feed))]["shape"][0])
    spare = -count % size
    if spare:
        fillers = fillers or {}
        feed = {name: np.concatenate([rows, np.repeat(np.asarray(fillers.get(name, np.zeros_like(rows[0])),
                                                                 rows.dtype)[None], spare, axis=0)])
                for name, rows in feed.items()}
    parts = [graph({name: rows[start:start + size] for name, rows in feed.items()})
             for start in range(0, count + spare, size)]
    return [np.concatenate(outputs)[:count] for outputs in zip(*parts)]


def load(run_path: Path, name: str) -> Graph:
    """Graph ``name`` of the run in ``run_path`` (see :func:`export`)."""
    entry = read_manifest(run_path).get(name)
    path = run_path / FOLDER / f"{name}.tflite"
    if not isinstance(entry, dict) or not path.is_file():
        raise SeqappError(f"{run_path} has no usable LiteRT {name} graph; use --engine tf")
    try:
        return Graph(path, entry.get("outputs"), entry.get("inputs"))
    except (RuntimeError, ValueError) as exc:
        raise SeqappError(f"{path} cannot be loaded ({exc}); use --engine tf or train the run again") from None


class StepGraph:
    """A single-step model on LiteRT, driven like :class:`seqapp.sampling.StepFunction`.

    The graph takes one token of one sequence (batch 1, the shape it was converted with);
    several samples and several seed tokens are fed one after the other, states carried.
    """

    def __init__(self, graph: Graph) -> None:
        self.graph = graph
        self.token_name, *self.state_names = graph.input_names
        self.state_shapes = [int(graph.inputs[name]["shape"][-1]) for name in self.state_names]

    def zero_states(self, batch: int) -> list[np.ndarray]:
        return [np.zeros((batch, size), np.float32) for size in self.state_shapes]

    def __call__(self, x: np.ndarray, states: Sequence[np.ndarray]) -> tuple[np.ndarray, list]:
        """Feed ``x`` (``[batch, steps]`` token ids); return the last logits and the new states."""
        x = np.asarray(x, np.int32)
        rows, new_states = [], [[] for _ in states]
        for row in range(x.shape[0]):
            row_states = [np.asarray(state[row:row + 1], np.float32) for state in states]
            for token in x[row]:
                feed = {self.token_name: np.array([[token]], np.int32)} | dict(zip(self.state_names, row_states))
                output, *row_states = self.graph(feed)
            rows.append(output)
            for i, state in enumerate(row_states):
                new_states[i].append(state)
        return np.concatenate(rows), [np.concatenate(parts) for parts in new_states]

    def sampler(self, chunk: int, temperature: float, top_k: int | None, top_p: float | None,
                banned: Sequence[int] = ()) -> Callable:
        """``(logits, states, seed, start) -> (ids [chunk, batch], logits, states)``, in numpy."""
        from seqapp.sampling import sample_numpy

        def run(logits: np.ndarray, states: list, seed: int, start: int) -> tuple:
            rng = np.random.default_rng([int(seed), int(start)])
            ids = []
            for _ in range(chunk):
                drawn = sample_numpy(logits, rng, temperature, top_k, top_p, banned)
                ids.append(drawn)
                logits, states = self(drawn[:, None], states)
            return np.stack(ids), logits, states

        return run
