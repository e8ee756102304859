"""Figures shared by every task: learning curves, confusion matrices, attention heat maps.

Matplotlib is imported only when a figure is drawn (``seqapp --help`` never pays for it)
and always with the Agg backend, so plotting works without a display. Every figure is
written through :func:`save_figure`, which closes it and turns a bad output path into a
one-line ``SeqappError``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from seqapp.errors import SeqappError


def pyplot() -> Any:
    """``matplotlib.pyplot`` set to the Agg backend (files only, no window)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, path: str | Path) -> None:
    """Write ``fig`` as a PNG file and close it, with a clear error when the path cannot be written."""
    try:
        fig.savefig(path, dpi=100, format="png")
    except OSError as exc:
        raise SeqappError(f"cannot write the plot to {path}: {unwritable_reason(exc)}") from None
    finally:
        pyplot().close(fig)


def unwritable_reason(exc: OSError) -> str:
    """Why a file could not be written, and what to do about it."""
    if isinstance(exc, FileNotFoundError):
        return "its folder does not exist; create the folder or choose another path"
    if isinstance(exc, PermissionError):
        return "permission denied; choose a folder you can write to"
    if isinstance(exc, IsADirectoryError):
        return "that is a folder; give a file name such as plot.png"
    return f"{exc.strerror or exc}; choose another path"


def plot_history(history: dict, path: str | Path) -> None:
    """Learning curves: each training metric per epoch, beside its validation twin."""
    plt = pyplot()
    names = [key for key in history if not key.startswith("val_") and key != "learning_rate"]
    fig, axes = plt.subplots(1, len(names), figsize=(5 * len(names), 3.5), squeeze=False)
    for ax, key in zip(axes[0], names):
        epochs = np.arange(1, len(history[key]) + 1)
        ax.plot(epochs, history[key], marker="o", label=f"train {key}")
        if f"val_{key}" in history:
            ax.plot(epochs, history[f"val_{key}"], marker="o", label=f"val {key}")
        ax.set_xlabel("epoch")
        ax.set_title(key)
        ax.legend()
    fig.tight_layout()
    save_figure(fig, path)


def plot_confusion(confusion: list[list[int]], classes: list[str], split: str, path: str | Path) -> None:
    """A confusion matrix as a heat map, true labels (rows) x predicted labels, counts in the cells."""
    plt = pyplot()
    counts = np.asarray(confusion)
    size = 2.5 + 0.6 * len(classes)
    fig, ax = plt.subplots(figsize=(size + 1, size))
    image = ax.imshow(counts, cmap="Blues")
    ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("predicted label")
    ax.set_ylabel("true label")
    ax.set_title(f"confusion matrix ({split})")
    for (row, col), count in np.ndenumerate(counts):
        ax.text(col, row, str(count), ha="center", va="center",
                color="white" if count > counts.max() / 2 else "black")
    fig.colorbar(image, ax=ax)
    fig.tight_layout()
    save_figure(fig, path)


def attention_heatmap(source_tokens: Sequence[str], output_tokens: Sequence[str], attention: np.ndarray,
                      path: str | Path, title: str = "") -> None:
    """Attention weights as a heat map: output tokens (rows) x source tokens (columns)."""
    plt = pyplot()
    weights = np.asarray(attention)[: len(output_tokens), : len(source_tokens)]
    fig, ax = plt.subplots(figsize=(1.0 + 0.6 * max(len(source_tokens), 3), 1.0 + 0.45 * max(len(output_tokens), 3)))
    image = ax.imshow(weights, cmap="viridis", vmin=0.0, vmax=1.0, aspect="auto")
    ax.set_xticks(range(len(source_tokens)), source_tokens, rotation=45, ha="right")
    ax.set_yticks(range(len(output_tokens)), output_tokens)
    ax.set_xlabel("source")
    ax.set_ylabel("output")
    if title:
        ax.set_title(title, fontsize=9)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    fig.tight_layout()
    save_figure(fig, path)
