"""Starting TensorFlow quietly.

TensorFlow's C++ runtime writes notes (oneDNN, CUDA probing, kernel fallbacks) straight to
file descriptor 2, some before its log level applies and some later while a model runs,
so ``TF_CPP_MIN_LOG_LEVEL`` cannot hide them. :func:`start` imports TensorFlow and Keras
with descriptor 2 routed through a pipe: a small thread forwards every line to the real
stderr except those notes. Python's own ``sys.stderr`` writes take the same path, so their
order is kept, and the pipe is drained before the process exits.
"""

from __future__ import annotations

import atexit
import os
import re
import sys
import threading

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

RUNTIME_NOTE = re.compile(
    r"^(WARNING: All log messages before absl::InitializeLog|[IWE]\d{4} [\d:. ]+\s*\d+ "
    r"(port\.cc|cudart_stub\.cc|cuda_platform\.cc|cuda_executor\.cc|cpu_feature_guard\.cc|gpu_device\.cc"
    r"|util\.cc:\d+\] oneDNN supports)\b)"
)
_started = False


def start() -> None:
    """Import TensorFlow and Keras once, with TensorFlow's runtime notes filtered out."""
    global _started
    if _started:
        return
    _started = True
    filter_stderr()
    import keras  # noqa: F401
    import tensorflow as tf

    tf.config.list_physical_devices()


def filter_stderr() -> None:
    """Route descriptor 2 through a thread that drops TensorFlow's runtime notes."""
    sys.stderr.flush()
    real_stderr = os.dup(2)
    read_end, write_end = os.pipe()
    os.dup2(write_end, 2)
    os.close(write_end)

    def forward() -> None:
        with os.fdopen(read_end, "rb") as pipe:
            for line in pipe:
                if not RUNTIME_NOTE.match(line.decode("utf-8", "replace")):
                    os.write(real_stderr, line)

    thread = threading.Thread(target=forward, name="seqapp-stderr-filter", daemon=True)
    thread.start()

    def drain() -> None:
        sys.stderr.flush()
        os.dup2(real_stderr, 2)  # closes the pipe's last write end: the thread sees the end
        thread.join(timeout=2)

    atexit.register(drain)
