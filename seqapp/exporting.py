"""``seqapp export``: a run as a model other programs can serve, preprocessing included.

A run's ``model.keras`` alone is not enough for another program: it would have to
re-implement seqapp's tokenizer, padding, step-by-step decoding and label names. An export
puts all of that inside one graph, so the model takes raw inputs and returns final answers:

* ``saved_model`` (default): a TensorFlow SavedModel whose ``serving_default`` signature
  takes raw text (or raw values) and returns labels, tags, text or a forecast. It is laid
  out for TensorFlow Serving, ``TO/NAME/VERSION/``, with the vocabulary, label and
  normalisation files as assets and a ``README.md`` in ``TO/NAME/`` showing the signature
  and a ``curl`` request for TF Serving's REST API.
* ``litert``: a ``model.tflite`` for the tasks whose graphs convert with builtin operations
  only. The standalone LiteRT interpreter has no string operations, so this graph takes
  token ids or normalised values, and the JSON files beside it say how to make them.

What to export is the task's business (:meth:`seqapp.tasks.base.Task.serving_module`, one
``seqapp/tasks/<task>_serving.py`` per task, a :class:`seqapp.serving.Serving`); the folder
layout, the refusals, writing through a staging folder renamed into place, and the README
are this module's. The command itself (finding the run and its task) is in :mod:`seqapp.cli`.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import shutil
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from seqapp import files
from seqapp.errors import SeqappError

if TYPE_CHECKING:
    from seqapp.serving import LiteRTGraph, Serving, Tensor

FORMATS = ("saved_model", "litert")
SIGNATURE = "serving_default"


# -- checks before TensorFlow starts ---------------------------------------------------


MAX_VERSION = 2**63 - 1  # TensorFlow Serving reads a version folder's name as a 64-bit integer
# The file that tells each format's version folder apart (what TensorFlow Serving looks for).
FORMAT_MARKS = {"saved_model": "saved_model.pb", "litert": "model.tflite"}


def check_options(fmt: str, name: str | None, version: int) -> None:
    """Refuse an unknown format, a name that is no folder name, a version outside 1..2**63-1 (cheap)."""
    if fmt not in FORMATS:
        raise SeqappError(f"--format {fmt!r} is not known; use {' or '.join(FORMATS)}")
    files.check_name(name)
    if version < 1:
        raise SeqappError(f"--version {version} must be at least 1; TensorFlow Serving loads the numbered folders "
                          "1, 2, ... (the default is 1)")
    if version > MAX_VERSION:
        raise SeqappError(f"--version {version} is too large; TensorFlow Serving reads versions as 64-bit "
                          f"integers, so use at most {MAX_VERSION}")


def check_serving(serving: Serving | None, task: str, fmt: str) -> Serving:
    """``serving`` (a task's export of a run), or one line saying why ``fmt`` cannot be exported."""
    if serving is None:
        raise SeqappError(f"{task} runs cannot be exported yet; export a run of another task with --run")
    why = serving.unsupported.get(fmt)
    if why:
        other = next(option for option in FORMATS if option != fmt)
        fix = (f"use --format {other}" if other not in serving.unsupported
               else "use seqapp predict or seqapp serve, which run it as it is")
        raise SeqappError(f"a {task} run cannot be exported as {fmt}: {why}; {fix}")
    return serving


def check_target(to: Path, target: Path, version: int, fmt: str) -> None:
    """Refuse a version folder that exists, a version beside versions of the other format, or a
    destination that cannot be written (a file, /proc, a symbolic-link loop, a name too long).

    Cheap, before TensorFlow starts: the missing folders and a staging folder are made once and
    removed again, so whatever the file system refuses is refused here, as one line.
    """
    try:
        if os.path.lexists(target):
            raise SeqappError(f"{target} already exists; choose another version with --version {version + 1}, "
                              "or remove that folder first")
        check_neighbours(target, fmt)
        probe(target)
    except OSError as exc:
        where = f" ({exc.filename})" if exc.filename else ""
        raise SeqappError(f"cannot write the export under --to {to}: {exc.strerror or exc}{where}; "
                          "choose another --to") from None


def check_neighbours(target: Path, fmt: str) -> None:
    """Refuse ``target`` beside version folders of the other format: TF Serving loads the highest
    version of a model with one loader, and could not load both kinds."""
    if not target.parent.is_dir():
        return
    for other, mark in FORMAT_MARKS.items():
        found = sorted((folder.name for folder in target.parent.iterdir()
                        if folder.name.isdigit() and (folder / mark).is_file()), key=int) if other != fmt else []
        if found:
            raise SeqappError(f"{target.parent} holds {other} versions ({', '.join(found)}), and a {fmt} version "
                              f"beside them could not be served with them; export with --format {other}, or "
                              "to another --name or --to")


def probe(target: Path) -> None:
    """Make the folders ``export`` will make (the missing ones above ``target``, a staging folder),
    then remove them: an OSError says the destination cannot be written."""
    missing = missing_folders(target.parent)
    folder = missing[-1].parent if missing else target.parent  # the nearest that exists
    folder.stat()  # a symbolic-link loop or a broken link: the OSError names it
    if not folder.is_dir():
        raise SeqappError(f"{folder} is a file, not a folder; choose another --to or --name")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise SeqappError(f"cannot write into {folder} (permission denied); choose another --to")
    created: list[Path] = []
    try:
        for path in reversed(missing):
            path.mkdir()
            created.append(path)
        staging = staging_folder(target)
        staging.mkdir()
        staging.rmdir()
    finally:
        for path in reversed(created):
            with contextlib.suppress(OSError):
                path.rmdir()


def staging_folder(target: Path) -> Path:
    """Where :func:`export` writes before renaming into place."""
    return target.parent / f".{target.name}.partial-{os.getpid()}"


def missing_folders(folder: Path) -> list[Path]:
    """``folder`` and its ancestors that do not exist yet, deepest first (a symbolic link, even
    a broken one or a loop, exists: creating a folder there is the file system's to refuse)."""
    missing = []
    while not os.path.lexists(folder) and folder != folder.parent:
        missing.append(folder)
        folder = folder.parent
    return missing


def export(serving: Serving, fmt: str, target: Path) -> None:
    """Write the export into a staging folder beside ``target`` and rename it into place.

    A failure leaves nothing behind (the staging folder, and the folders this call created,
    are removed), so an export is either complete or absent.
    """
    created = missing_folders(target.parent)
    staging = staging_folder(target)
    try:
        staging.mkdir(parents=True)
        if fmt == "litert":
            graph = write_litert(serving, staging)
            readme = litert_readme(serving, graph, target)
        else:
            write_saved_model(serving, staging)
            readme = saved_model_readme(serving, target)
        if target.exists():  # made meanwhile by another export: rename would replace an empty one
            raise SeqappError(f"{target} appeared while exporting; choose another --version")
        os.rename(staging, target)
    except BaseException as exc:
        shutil.rmtree(staging, ignore_errors=True)
        for folder in created:
            with contextlib.suppress(OSError):  # a folder someone else filled meanwhile stays
                folder.rmdir()
        if isinstance(exc, OSError):  # e.g. the disk filled up while writing
            raise SeqappError(f"cannot write the export to {target} ({exc.strerror or exc}); nothing was kept, "
                              "free some space or choose another --to") from None
        raise
    write_text(target.parent / "README.md", readme)


def write_text(path: Path, text: str) -> None:
    """Write ``text`` through a temporary file and an atomic rename."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def write_json_files(files: dict[str, Any], folder: Path) -> list[Path]:
    """Write each JSON-ready value of ``files`` as ``folder/<name>``; return the paths."""
    paths = []
    for file_name, value in files.items():
        path = folder / file_name
        path.write_text(json.dumps(value, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        paths.append(path)
    return paths


def write_saved_model(serving: Serving, folder: Path) -> None:
    """The SavedModel with ``serving_default`` = ``module.serve`` and the JSON files as assets."""
    import tensorflow as tf

    module = serving.module()
    with tempfile.TemporaryDirectory() as scratch:
        paths = write_json_files(serving.assets(), Path(scratch))
        module.files = {path.stem: tf.saved_model.Asset(str(path)) for path in paths}
        tf.saved_model.save(module, str(folder), signatures={SIGNATURE: module.serve})


def write_litert(serving: Serving, folder: Path) -> LiteRTGraph:
    """``model.tflite``, the JSON files and ``signature.json`` (tensor names in order)."""
    graph = serving.litert()
    (folder / "model.tflite").write_bytes(graph.blob)
    write_json_files({**serving.assets(), "signature.json": {
        "inputs": [vars(tensor) for tensor in graph.inputs],
        "outputs": [vars(tensor) for tensor in graph.outputs]}}, folder)
    return graph


# -- the README -------------------------------------------------------------------------


def tensor_lines(tensors: list[Tensor]) -> list[str]:
    """One Markdown list item per tensor: name, type, meaning."""
    return [f"- `{tensor.name}`: `{tensor.type}`: {tensor.meaning}" for tensor in tensors]


def header(serving: Serving, fmt: str, target: Path) -> list[str]:
    """The README's title and where the export came from (the run, so a model can be traced back)."""
    run = serving.run
    return [f"# {target.parent.name}: a seqapp {run.task} model ({fmt})", "",
            f"Exported by `seqapp export` on {time.strftime('%Y-%m-%d %H:%M')} from the run `{run.path}` "
            f"(version {target.name}, in `{target.name}/`). Files shipped with it: "
            + ", ".join(f"`{name}`" for name in serving.assets()) + ".", ""]


def saved_model_readme(serving: Serving, target: Path) -> str:
    """README of a SavedModel export: signature, TF Serving with curl, and Python."""
    name = target.parent.name
    body = json.dumps(serving.request(), ensure_ascii=False)
    call = ", ".join(f"{key}={value!r}" for key, value in example_arguments(serving).items())
    lines = header(serving, "SavedModel", target) + [
        f"## Signature `{SIGNATURE}`", "", "Raw inputs in, final outputs out: the tokenizer, padding and "
        "normalisation are inside the graph (the JSON files in `assets/` are for reading, not needed to "
        "run it).", "", "Inputs:", "", *tensor_lines(serving.inputs()), "", "Outputs:", "",
        *tensor_lines(serving.outputs()), "", *serving.notes(), "",
        "## TensorFlow Serving", "", "```bash",
        f'docker run --rm -p 8501:8501 -v "$PWD:/models/{name}" -e MODEL_NAME={name} tensorflow/serving',
        f"curl -s -X POST http://localhost:8501/v1/models/{name}:predict \\",
        f"     -H 'Content-Type: application/json' -d {shlex.quote(body)}", "```", "",
        "(Run `docker` in this folder; TF Serving loads the highest numbered version.)", "",
        "## Python, with TensorFlow only", "", "```python", "import tensorflow as tf", "",
        f'model = tf.saved_model.load("{target.name}")',
        f'print(model.signatures["{SIGNATURE}"]({call}))', "```", ""]
    return "\n".join(lines)


def example_arguments(serving: Serving) -> dict:
    """The example request as keyword arguments of the signature (``tf.constant`` values)."""
    request = serving.request()
    dtypes = {tensor.name: tensor.type.split("[")[0] for tensor in serving.inputs()}
    values = request.get("inputs") or {serving.inputs()[0].name: request["instances"]}
    return {key: Constant(value, dtypes[key]) for key, value in values.items()}


class Constant:
    """Shown in the README as ``tf.constant(value, tf.<dtype>)``: the signature wants exact types."""

    def __init__(self, value: Any, dtype: str) -> None:
        self.value = value
        self.dtype = dtype

    def __repr__(self) -> str:
        return f"tf.constant({json.dumps(self.value, ensure_ascii=False)}, tf.{self.dtype})"


def litert_readme(serving: Serving, graph: LiteRTGraph, target: Path) -> str:
    """README of a LiteRT export: the tensors and how to prepare them from the JSON files."""
    lines = header(serving, "LiteRT", target) + [
        "## `model.tflite`", "", "Builtin operations only (runs on the standalone `ai-edge-litert` "
        "interpreter). It takes ids or normalised values, not raw text: LiteRT has no string "
        "operations. `signature.json` lists the tensors below in the interpreter's order.", "",
        "Inputs:", "", *tensor_lines(graph.inputs), "", "Outputs:", "", *tensor_lines(graph.outputs), "",
        *graph.usage, *serving.tokenizer_usage(), "", "```python",
        "from ai_edge_litert.interpreter import Interpreter", "",
        f'interpreter = Interpreter(model_path="{target.name}/model.tflite")',
        "interpreter.allocate_tensors()",
        "inputs = {d['name']: d for d in interpreter.get_input_details()}  # resize_tensor_input for free sizes",
        "# interpreter.set_tensor(inputs[NAME]['index'], array) for each input, then:",
        "interpreter.invoke()",
        "outputs = {d['name']: interpreter.get_tensor(d['index']) for d in interpreter.get_output_details()}",
        "```", ""]
    return "\n".join(lines)
