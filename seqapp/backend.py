"""Starting TensorFlow quietly.

TensorFlow's C++ runtime writes start-up notes (oneDNN, CUDA probing) straight to file
descriptor 2 before its log level applies, so ``TF_CPP_MIN_LOG_LEVEL`` cannot hide
them. :func:`start` imports TensorFlow and Keras and probes the devices with stderr
redirected to a temporary file, then passes on every line that is not such a note.
"""

from __future__ import annotations

import os
import re
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

STARTUP_NOTE = re.compile(
    r"^(WARNING: All log messages before absl::InitializeLog|[IWE]\d{4} [\d:. ]+\s*\d+ "
    r"(port\.cc|cudart_stub\.cc|cuda_platform\.cc|cuda_executor\.cc|cpu_feature_guard\.cc|gpu_device\.cc)\b)"
)
_started = False


def start() -> None:
    """Import TensorFlow and Keras once, hiding only the known start-up notes."""
    global _started
    if _started:
        return
    _started = True
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as capture:
        os.dup2(capture.fileno(), 2)
        try:
            import keras  # noqa: F401
            import tensorflow as tf

            tf.config.list_physical_devices()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        capture.seek(0)
        lines = capture.read().decode("utf-8", "replace").splitlines()
    for line in lines:
        if line.strip() and not STARTUP_NOTE.match(line):
            print(line, file=sys.stderr)
