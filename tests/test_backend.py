"""TensorFlow's runtime notes are dropped from stderr; everything else gets through, in order."""

from __future__ import annotations

import subprocess
import sys

CODE = r"""
import os, sys
from seqapp import backend
backend.start()
print("before", file=sys.stderr, flush=True)
os.write(2, b"E0000 00:00:1795616223.823751   21640 util.cc:131] oneDNN supports DT_BOOL only on AVX-512.\n")
os.write(2, b"I0000 00:00:1795611872.207487    3443 cudart_stub.cc:31] Could not find cuda drivers\n")
os.write(2, b"a C-level line that is not a note\n")
print("after", file=sys.stderr)
raise SystemExit(3)
"""


def test_runtime_notes_are_filtered_and_other_lines_kept_in_order():
    out = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, timeout=120)
    assert out.returncode == 3
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert lines == ["before", "a C-level line that is not a note", "after"], out.stderr
