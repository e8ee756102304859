"""What the shell completes for seqapp's arguments (``seqapp --install-completion``).

Typer calls these with the word being typed (``incomplete``) and, where it matters, the
command's context (the ``--out`` given so far); each answers from files on disk only, at once:
no TensorFlow, no run loaded.
"""

from __future__ import annotations

import os
from pathlib import Path

import typer

from seqapp import config, runs


def templates(incomplete: str) -> list[tuple[str, str]]:
    """Task and template names (``seqapp train TASK``) starting with ``incomplete``, each with its
    description; a path (it holds a ``/`` or starts with ``.``) completes to YAML files and folders."""
    if "/" in incomplete or incomplete.startswith("."):
        return [(path, "") for path in matching_paths(incomplete, suffixes=(".yaml", ".yml"))]
    found = []
    for name, path in config.templates().items():
        if name.startswith(incomplete):
            try:
                description = " ".join(str(config.read_yaml(path).get("description", "")).split())
            except Exception:  # a template that cannot be read is still a name to complete
                description = ""
            found.append((name, description))
    return found


def run_folders(ctx: typer.Context, incomplete: str) -> list[str]:
    """Run folders under the command's ``--out`` (``$SEQAPP_RUNS``, else ``./runs``) whose path
    starts with ``incomplete``, newest first."""
    out = (ctx.params.get("out") if ctx is not None else None) or os.environ.get("SEQAPP_RUNS") or "runs"
    try:
        found = runs.run_dirs(Path(out))
    except OSError:
        return []
    return [str(path) for path in reversed(found) if str(path).startswith(incomplete)]


def folders(incomplete: str) -> list[str]:
    """Folders whose path starts with ``incomplete`` (``--out``: a folder of runs)."""
    return matching_paths(incomplete)


def matching_paths(incomplete: str, suffixes: tuple[str, ...] = ()) -> list[str]:
    """Folders (ending in ``/``, to go on typing) and, with ``suffixes``, files with one of them,
    whose path starts with ``incomplete``; hidden ones only when ``incomplete`` names them."""
    head, _, stem = incomplete.rpartition("/")
    parent = Path(head or ("/" if incomplete.startswith("/") else "."))
    try:
        entries = sorted(parent.iterdir())
    except OSError:
        return []
    found = []
    for entry in entries:
        if not entry.name.startswith(stem) or (entry.name.startswith(".") and not stem.startswith(".")):
            continue
        path = f"{head}/{entry.name}" if head or incomplete.startswith("/") else entry.name
        if entry.is_dir():
            found.append(path + ("/" if suffixes else ""))
        elif suffixes and entry.suffix in suffixes:
            found.append(path)
    return found
