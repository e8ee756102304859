"""seqapp's benchmark suite: ``python -m bench [--quick]`` (see ``bench/__main__.py``).

Each module measures one thing side by side with a peer in the same run and returns plain
dicts; :mod:`bench.suite` puts them together and :mod:`bench.report` writes
``bench/results/latest.json`` and ``latest.md``. Nothing here asserts a speed.
"""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"


def shared_dir() -> Path:
    """The shared folder with the peers and data sets: ``$SEQAPP_SHARED``, else ``../shared`` or ``/work/shared``."""
    if os.environ.get("SEQAPP_SHARED"):
        return Path(os.environ["SEQAPP_SHARED"])
    beside = ROOT.parent / "shared"
    return beside if beside.is_dir() else Path("/work/shared")
