"""What ``seqapp runs`` shows: one row per run or per draft, ready for text or JSON.

Reading a folder never fails the listing: a damaged run is skipped with a warning naming
it, a draft that cannot be resumed is listed as such.
"""

from __future__ import annotations

import logging
from pathlib import Path

from seqapp import drafts, runs
from seqapp.errors import SeqappError
from seqapp.tasks import get_task, load_run


def run_rows(out: Path, task: str | None) -> list[dict]:
    """One row per loadable run; damaged ones are skipped with a warning naming them."""
    rows = []
    for path in runs.run_dirs(out, task):
        try:
            run = load_run(path)
            metrics = run.metrics
        except SeqappError as exc:
            logging.getLogger("seqapp").warning(f"skipping the damaged run {path}: {exc}")
            continue
        rows.append({
            "task": run.task, "run": str(path), "date": path.name[:15],
            "cell": run.config.model.cell, "units": run.config.model.units,
            "epochs": metrics.get("epochs_trained"), "headline": get_task(run.task)().headline(metrics),
            "metrics": metrics,
        })
    return rows


def draft_rows(out: Path, task: str | None) -> list[dict]:
    """One row per draft folder, with a short phrase saying how far it got."""
    rows = []
    for path in drafts.find(out, task):
        row = drafts.describe(path)
        if row["running"]:
            progress = "training now"
        elif not row["resumable"]:
            progress = f"cannot be resumed{': ' + row['problem'] if row.get('problem') else ''}"
        elif row["epoch"] is None:
            progress = "no epoch finished; --resume starts it again"
        else:
            progress = f"{row['epoch']} epochs" + (f" and {row['step']} batches" if row["step"] else "") + " done"
        rows.append(row | {"progress": progress})
    return rows
