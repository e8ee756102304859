"""Starting TensorFlow quietly, without ever standing between the process and its stderr.

TensorFlow's C++ runtime writes start-up notes (CUDA probing, CPU features, oneDNN) straight
to file descriptor 2, many of them before its log level applies, so ``TF_CPP_MIN_LOG_LEVEL``
alone cannot hide them. :func:`start` therefore points descriptor 2 at a temporary file only
while TensorFlow and Keras are imported and the devices probed, puts the real stderr back,
and then writes out, synchronously and in order, every captured line that is not a known
note. Nothing sits on descriptor 2 afterwards: a crash's last lines, the order of stdout and
stderr under ``2>&1``, a terminal and large writes behave as they would without seqapp.

The rules, checked against TensorFlow 2.21 on a CPU-only x86 machine without AVX-512:

* Hidden: I- and W-level lines from the files in ``NOTE_FILES``, absl's "All log messages
  before absl::InitializeLog" line and cpu_feature_guard's "To enable the following
  instructions" line. Later I/W lines are hidden by TensorFlow itself, as
  ``TF_CPP_MIN_LOG_LEVEL`` defaults to 2 (an exported value is kept).
* E-level lines are always shown, but one: ``E... cuda_platform.cc:52] failed call to
  cuInit: ... UNKNOWN ERROR (303)``, which every machine without a GPU prints, is a note only
  where there is no NVIDIA device (no /dev/nvidia0-style node, no nvidia-smi). Where there is
  one it is shown, and if TensorFlow then finds no GPU seqapp says so in one line, because
  TensorFlow's own reason ("Cannot dlopen some GPU libraries") is W-level, hence hidden.
* ``E... util.cc:131] oneDNN supports DT_BOOL only on platforms with AVX-512`` is a note in
  spite of its level and its wording: no CPU feature is checked for it. Wherever oneDNN's
  custom operations are on, TensorFlow's graph rewrite logs it, once per process, when it
  first meets an operation that has a oneDNN kernel for a type oneDNN does not run: here the
  transpose of a masked recurrent layer's boolean mask (``_MklTranspose`` is registered for
  every type, and ``mkl_op_registry::IsMklOp`` in ``core/graph/mkl_graph_util.h`` calls
  ``DataTypeUnsupportedWarning`` of ``core/util/util.cc`` for any type but float, double,
  complex and a bfloat16 or half the CPU supports). It would come while a model runs, long
  after the capture; so where oneDNN is on (:func:`onednn_opts_on`),
  :func:`use_up_onednn_type_note` provokes it inside the capture, where it is dropped, and
  TensorFlow's once-only flag keeps it from coming again. ``TF_ENABLE_ONEDNN_OPTS`` is left
  alone, so speed and numerics stay TensorFlow's. The flag is shared by every type, so a
  later line of this kind (``DT_HALF`` under mixed precision on a CPU without float16: a
  fallback to Eigen) is not shown either.

``SEQAPP_TF_LOGS=1`` turns all of this off: no capture and TensorFlow's own log levels.
"""

from __future__ import annotations

import contextlib
import glob
import os
import platform
import re
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from typing import BinaryIO

NOTE_FILES = ("port", "cudart_stub", "cuda_platform", "cuda_executor", "cpu_feature_guard")
NOTE = re.compile(
    rb"^(WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    rb"|To enable the following instructions: .* rebuild TensorFlow with the appropriate compiler flags\."
    rb"|INFO: Created TensorFlow Lite XNNPACK delegate for CPU\."  # the LiteRT interpreter's start-up note
    rb"|[IW]\d{4} [\d:.]+\s+\d+ (" + "|".join(NOTE_FILES).encode() + rb")\.cc:\d+\] )"
)
CUINIT_FAILED = re.compile(rb"^E\d{4} [\d:.]+\s+\d+ \w+\.cc:\d+\] failed call to cuInit\b")
ONEDNN_TYPE_NOTE = re.compile(rb"^E\d{4} [\d:.]+\s+\d+ util\.cc:\d+\] oneDNN supports DT_BOOL only on platforms ")
# The CPU features for which TensorFlow turns oneDNN's custom operations on by default on Linux
# (DefaultOneDnnPolicy in tensorflow/core/util/port.cc), as /proc/cpuinfo names them; and the
# CPU part of Arm's Neoverse V1, the one Arm CPU there.
ONEDNN_CPU_FLAGS = ("avx512_vnni", "avx512_bf16", "avx_vnni", "amx_tile", "amx_int8", "amx_bf16")
NEOVERSE_V1_PART = "0xd40"
_started = False


def start() -> None:
    """Import TensorFlow and Keras once, hiding their start-up notes unless SEQAPP_TF_LOGS=1."""
    global _started
    if _started:
        return
    if os.environ.get("SEQAPP_TF_LOGS", "") in ("", "0"):
        quiet_start()
    else:
        probe()
    _started = True


def quiet_start() -> None:
    """Set the log levels, then import and probe with descriptor 2 captured (module docstring)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    nvidia = has_nvidia_device()
    onednn = onednn_opts_on(read_cpuinfo(), os.environ.get("TF_ENABLE_ONEDNN_OPTS"), platform.system())
    with captured_stderr(lambda text: replay(text, hide_cuinit=not nvidia)):
        devices = probe()
        if onednn:
            use_up_onednn_type_note()
    if nvidia and not any(device.device_type == "GPU" for device in devices):
        say_gpu_unused()


def probe() -> list:
    """Import TensorFlow and Keras and list the devices: the steps that print start-up notes."""
    import keras  # noqa: F401
    import tensorflow as tf

    return tf.config.list_physical_devices()


def say_gpu_unused() -> None:
    """One line for a GPU machine on which TensorFlow runs on the CPU, unless that was asked for.

    TensorFlow's reason ("Cannot dlopen some GPU libraries") is a W-level line, below
    ``TF_CPP_MIN_LOG_LEVEL=2``; without this line the fallback to the CPU would go unnoticed.
    """
    if os.environ.get("CUDA_VISIBLE_DEVICES") in ("", "-1") or sys.stderr is None:
        return
    print("seqapp: this machine has an NVIDIA GPU but TensorFlow found none and runs on the CPU; "
          "SEQAPP_TF_LOGS=1 shows TensorFlow's reasons", file=sys.stderr, flush=True)


@contextlib.contextmanager
def captured_stderr(handle: Callable[[bytes], None]) -> Iterator[None]:
    """Point descriptor 2 at a temporary file for the block, then pass what it got to ``handle``.

    The real stderr is restored and ``handle`` called even when the block raises, so the lines
    that explain a failed import are not lost. Where descriptor 2 is closed, or no temporary
    file can be made, the block runs without a capture.
    """
    flush_python_stderr()
    opened = open_capture()
    if opened is None:
        yield
        return
    saved, capture = opened
    with capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            flush_python_stderr()
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            handle(capture.read())


def open_capture() -> tuple[int, BinaryIO] | None:
    """A duplicate of descriptor 2 and an empty temporary file, or None where either fails."""
    try:
        saved = os.dup(2)  # first: with descriptor 2 closed, the file could take its number
    except OSError:
        return None
    try:
        return saved, tempfile.TemporaryFile()
    except OSError:
        os.close(saved)
        return None


def replay(captured: bytes, hide_cuinit: bool = True) -> None:
    """Write to descriptor 2, in order and byte for byte, the captured lines that are not notes."""
    kept = b"".join(line for line in captured.splitlines(keepends=True)
                    if not NOTE.match(line) and not ONEDNN_TYPE_NOTE.match(line)
                    and not (hide_cuinit and CUINIT_FAILED.match(line)))
    with contextlib.suppress(OSError):
        while kept:
            kept = kept[os.write(2, kept):]


def flush_python_stderr() -> None:
    """Flush ``sys.stderr`` so its buffered text lands where descriptor 2 points now."""
    with contextlib.suppress(AttributeError, OSError, ValueError):
        sys.stderr.flush()


def has_nvidia_device() -> bool:
    """Whether this machine has an NVIDIA GPU (device nodes, or nvidia-smi as on WSL)."""
    return bool(glob.glob("/dev/nvidia[0-9]*")) or shutil.which("nvidia-smi") is not None


def onednn_opts_on(cpuinfo: str | None, setting: str | None, system: str) -> bool:
    """Whether TensorFlow will run oneDNN's custom operations (``IsMklEnabled`` in its port.cc).

    ``setting`` is ``TF_ENABLE_ONEDNN_OPTS`` (it wins when it reads as a boolean), ``cpuinfo``
    the text of /proc/cpuinfo (None where there is none), ``system`` ``platform.system()``.
    Without the variable: on on Windows, and on Linux where the CPU has one of
    ``ONEDNN_CPU_FLAGS`` (not AVX-512 itself: a Skylake Xeon has it and runs without oneDNN)
    or is a Neoverse V1.
    """
    value = (setting or "").strip().lower()
    if value in ("1", "true", "0", "false"):
        return value in ("1", "true")
    if system == "Windows":
        return True
    if cpuinfo is None:
        return False
    flags_line = re.search(r"^flags\s*:(.*)$", cpuinfo, re.MULTILINE)
    flags = set(flags_line.group(1).split()) if flags_line else set()
    neoverse_v1 = re.search(rf"^CPU part\s*:\s*{NEOVERSE_V1_PART}\b", cpuinfo, re.MULTILINE | re.IGNORECASE)
    return bool(flags.intersection(ONEDNN_CPU_FLAGS)) or neoverse_v1 is not None


def read_cpuinfo() -> str | None:
    """The text of /proc/cpuinfo, or None where it cannot be read (not Linux)."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as cpuinfo:
            return cpuinfo.read()
    except OSError:
        return None


def use_up_onednn_type_note() -> None:
    """Provoke oneDNN's once-per-process "supports DT_BOOL only on platforms with AVX-512" line.

    Called while descriptor 2 is captured, so the line is dropped there and no model prints it
    later. A graph session on the CPU, not ``tf.function``: running an eager function would
    initialise TensorFlow's runtime, after which a multi-worker strategy can no longer configure
    its collective operations; a session leaves it as it was. Best effort: this only hides a
    line, so whatever fails here is ignored (the line may then show later, as before).
    """
    try:
        import tensorflow as tf

        graph = tf.Graph()
        with graph.as_default():
            mask = tf.compat.v1.placeholder(tf.bool, [None, None])  # fed, so no constant folding
            transposed = tf.transpose(mask)
        config = tf.compat.v1.ConfigProto(device_count={"GPU": 0})
        with tf.compat.v1.Session(graph=graph, config=config) as session:
            session.run(transposed, {mask: [[True, False]]})
    except Exception:  # cosmetic: see the docstring
        pass
