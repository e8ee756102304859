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
* ``E... util.cc:131] oneDNN supports DT_BOOL only on platforms with AVX-512`` comes later,
  while a model runs (seen training sentiment with ``train.jit_compile=false``), on x86 CPUs
  without AVX-512 where oneDNN's custom operations are on: TensorFlow's default on some newer
  CPUs, or ``TF_ENABLE_ONEDNN_OPTS=1``. It is stopped at its source, not filtered: on such
  CPUs ``TF_ENABLE_ONEDNN_OPTS`` defaults to 0, TensorFlow's own default on most of them. An
  exported ``TF_ENABLE_ONEDNN_OPTS=1`` is kept, and the line then shows.

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
    if platform.machine().lower() in ("x86_64", "amd64") and not cpu_has_avx512():
        os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    nvidia = has_nvidia_device()
    with captured_stderr(lambda text: replay(text, hide_cuinit=not nvidia)):
        devices = probe()
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
                    if not NOTE.match(line) and not (hide_cuinit and CUINIT_FAILED.match(line)))
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


def cpu_has_avx512() -> bool:
    """Whether the CPU has AVX-512 (Linux's /proc/cpuinfo; assumed so where it cannot be read)."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as cpuinfo:
            return re.search(r"^flags\s*:.*\bavx512f\b", cpuinfo.read(), re.MULTILINE) is not None
    except OSError:
        return True
