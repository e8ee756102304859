"""The PyTorch peer: finding a Python that has torch, and running the peer scripts with it.

torch is not a seqapp dependency; the peer runs in its own interpreter, given by
``--torch-python`` or found here. Where none is found the suite records ``null`` and a note.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from bench import shared_dir

DEFAULT_CANDIDATES = ("/tmp/vtorch/bin/python",)
GEN_SPEED = Path(__file__).resolve().parent / "torch_gen_speed.py"


def can_import_torch(python: str, timeout: float = 120) -> bool:
    """True when ``python`` runs and can ``import torch``."""
    try:
        done = subprocess.run([python, "-c", "import torch"], capture_output=True, timeout=timeout)
    except (OSError, subprocess.SubprocessError):
        return False
    return done.returncode == 0


def default_candidates() -> list[str]:
    """Where to look for torch, in order: the project's usual venv, then ``python``/``python3`` on PATH."""
    found = [shutil.which("python"), shutil.which("python3"), sys.executable]
    return [*DEFAULT_CANDIDATES, *(path for path in found if path)]


def find_torch_python(candidates: Sequence[str] | None = None) -> str | None:
    """The first existing candidate interpreter that can import torch, or None."""
    seen = set()
    for candidate in default_candidates() if candidates is None else candidates:
        if candidate in seen or not Path(candidate).exists():
            continue
        seen.add(candidate)
        if can_import_torch(candidate):
            return candidate
    return None


def torch_version(python: str) -> str | None:
    """``torch.__version__`` as ``python`` reports it (None on failure)."""
    try:
        done = subprocess.run([python, "-c", "import torch; print(torch.__version__)"], capture_output=True,
                              text=True, timeout=120)
    except (OSError, subprocess.SubprocessError):
        return None
    return (done.stdout.strip() or None) if done.returncode == 0 else None


def peer_script(name: str) -> Path | None:
    """The shared peer script ``name`` (e.g. ``torch_charlm.py``), or None when it is not there."""
    path = shared_dir() / "peers" / name
    return path if path.is_file() else None


def peer_generation(python: str, model: Path, batches: Sequence[int], steps: Sequence[int]) -> dict:
    """The peer's steady-state sampling speed per batch size (see ``bench/torch_gen_speed.py``)."""
    command = [python, str(GEN_SPEED), "--model", str(model), "--batches", ",".join(map(str, batches)),
               "--steps", ",".join(map(str, steps))]
    out = subprocess.run(command, capture_output=True, text=True, check=True, timeout=1800)
    return json.loads(out.stdout.strip().splitlines()[-1])
