"""Fault points: named places where the tests make seqapp kill or interrupt itself.

``SEQAPP_FAULT=POINT[@N][:SIGNAL]`` sends SIGNAL (``KILL``, ``INT`` or ``TERM``; default
``KILL``) to this process the N-th time (default: the first) the training passes POINT:

- ``batch``: after a training batch (before its end-of-batch checkpoint, if any);
- ``state_write``: inside a training-state write, the new file half done;
- ``final_save``: after ``model.keras`` is written, before the run is published;
- ``publish``: after the finished draft is renamed into place, before its training state is deleted.

With ``SEQAPP_FAULT_WORKER=I`` only worker I of a multi-worker training (``TF_CONFIG``)
acts. The crash tests use it to stop a training at exact moments; unset, it costs one dict lookup.
"""

from __future__ import annotations

import os
import signal

_passes: dict[str, int] = {}


def point(name: str) -> None:
    """Mark a fault point; act if ``SEQAPP_FAULT`` names it and its count is reached."""
    spec = os.environ.get("SEQAPP_FAULT")
    if not spec:
        return
    where, _, signame = spec.partition(":")
    target, _, count = where.partition("@")
    if target != name or not this_worker(os.environ.get("SEQAPP_FAULT_WORKER")):
        return
    _passes[name] = _passes.get(name, 0) + 1
    if _passes[name] == int(count or 1):
        os.kill(os.getpid(), getattr(signal, f"SIG{signame or 'KILL'}"))


def this_worker(index: str | None) -> bool:
    """True unless ``index`` names another worker than this process's ``TF_CONFIG`` task."""
    if index is None:
        return True
    from seqapp.distribute import cluster

    return cluster(os.environ.get("TF_CONFIG"))[1] == int(index)
