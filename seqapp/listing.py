"""What ``seqapp runs`` shows: one row per run or per draft, ready for text or JSON; runs side
by side (``--compare``); the runs ``--delete`` and ``--keep-last`` may remove.

Reading a folder never fails the listing: a damaged run is skipped with a warning naming
it, a draft that cannot be resumed is listed as such.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from seqapp import drafts, provenance, runs
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
            "metrics": metrics, "provenance": provenance_of(path, metrics),
        })
    return rows


def provenance_of(path: Path, metrics: dict) -> dict:
    """A run's provenance (:func:`seqapp.provenance.read`: versions, command, data files, devices),
    with the signatures of the scorers behind its metrics where it has them (sacrebleu's)."""
    return provenance.read(path) | {"metric_signatures": metrics.get("signatures")}


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


# -- seqapp runs --compare -------------------------------------------------------------------
def comparison(paths: list[Path]) -> dict:
    """Runs side by side: the settings that differ (``section.key`` -> one value per run; the data
    files' SHA-256 too, where the runs recorded them and they differ), and per run its headline,
    epochs, best validation loss and metrics. A run that cannot be read is one error naming it."""
    loaded = [load_run(path) for path in paths]
    values = [drafts.settings_of(run.config)["values"] for run in loaded]
    keys = list(dict.fromkeys(key for value in values for key in value))
    differ = {key: [value.get(key) for value in values] for key in keys
              if len({json.dumps(value.get(key), sort_keys=True) for value in values}) > 1}
    records = [provenance.saved_record(run.path) or {} for run in loaded]
    data = [data_digest(record) for record in records]
    if len(set(data)) > 1:
        differ["data (sha256)"] = data
    for origin in ("like", "from"):  # the run each one repeats or fine-tunes
        made = [record.get(origin) for record in records]
        if len(set(map(str, made))) > 1:
            differ[f"{origin} (run)"] = made
    rows = []
    for run in loaded:
        metrics, history = run.metrics, runs.read_history(run.path)
        losses = [value for value in history.get("val_loss", []) if value is not None]
        rows.append({"run": str(run.path), "task": run.task, "epochs": metrics.get("epochs_trained"),
                     "best_val_loss": min(losses) if losses else None,
                     "headline": get_task(run.task)().headline(metrics), "metrics": metrics, "history": history})
    return {"settings": differ, "runs": rows}


def data_digest(record: dict) -> str | None:
    """The SHA-256 of the data files a run's provenance records (the first 12 digits of each), or None."""
    files = record.get("data")
    return "+".join(entry["sha256"][:12] for entry in files) if files else None


def comparison_lines(found: dict) -> list[str]:
    """The text of ``seqapp runs --compare``: a column per run, a row per setting that differs, then
    the epochs, the best validation loss and the headline."""
    rows = found["runs"]
    names = [Path(row["run"]).name for row in rows]
    if len(set(names)) < len(names):
        names = [row["run"] for row in rows]
    table: list[tuple[str, list[str]]] = [("run", names)]
    table += [(key, [shown(value) for value in values]) for key, values in found["settings"].items()]
    if not found["settings"]:
        table.append(("settings", ["the same"] * len(rows)))
    table += [("epochs", [shown(row["epochs"]) for row in rows]),
              ("best val_loss", [shown(row["best_val_loss"]) for row in rows]),
              ("headline", [row["headline"] or "-" for row in rows])]
    label_width = max(len(label) for label, _ in table)
    widths = [max(len(cells[index]) for _, cells in table) for index in range(len(rows))]
    return ["  ".join([label.ljust(label_width), *(cell.ljust(width) for cell, width in zip(cells, widths))]).rstrip()
            for label, cells in table]


def shown(value: Any) -> str:
    """A setting or figure in the comparison table: texts as they are, numbers short, null as '-'."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return value if isinstance(value, str) else json.dumps(value)


# -- seqapp runs --delete / --keep-last ----------------------------------------------------------
def removable(path: Path) -> Path:
    """``path`` checked to be a run folder (damaged or not), for ``--delete``; one line if it is not."""
    path = Path(path)
    if not (path.exists() or path.is_symlink()):
        raise SeqappError(f"{path} does not exist; list the runs with 'seqapp runs' (nothing was removed)")
    if path.name.startswith(drafts.PREFIX):
        raise SeqappError(f"{path} is an interrupted training, not a run; delete it with 'seqapp runs --clean-drafts "
                          f"{path}' (nothing was removed)")
    if not runs.is_run_folder(path):
        raise SeqappError(f"{path} is not a seqapp run folder (<task>/<YYYYmmdd-HHMMSS>[-name]/ holding "
                          f"{', '.join(runs.REQUIRED)}); --delete removes runs only (nothing was removed)")
    return path


def beyond_last(out: Path, task: str | None, keep: int) -> list[Path]:
    """The runs under ``out`` (of ``task``) older than the ``keep`` newest of their task, oldest first."""
    tasks = [task] if task else sorted(path.name for path in Path(out).glob("*") if path.is_dir()
                                       and not path.name.startswith("."))
    return [path for name in tasks for path in runs.run_dirs(out, name)[:-keep] if runs.is_run_folder(path)]
