"""Figures shared by every task: learning curves, confusion matrices, attention heat maps, and
for class probabilities ROC and precision-recall curves and the reliability diagram.

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
from seqapp.metrics import (
    ECE_BINS,
    pr_curve,
    ranking_scores,
    reliability,
    roc_curve,
    scaled_probabilities,
    scored_classes,
)

MAX_LEGEND = 12  # classes named in a curve plot's legend; more are drawn unnamed


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


def plot_histories(histories: dict[str, dict], path: str | Path) -> None:
    """Several runs' learning curves overlaid (``seqapp runs --compare --plot``): one panel per
    metric, one colour per run, training solid and validation dashed. ``histories`` maps a
    label to a history (metric -> per-epoch values, None where not logged)."""
    plt = pyplot()
    names = list(dict.fromkeys(key for history in histories.values() for key in history
                               if not key.startswith("val_") and key != "learning_rate"))
    fig, axes = plt.subplots(1, max(len(names), 1), figsize=(5 * max(len(names), 1), 3.5), squeeze=False)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, key in zip(axes[0], names):
        for index, (label, history) in enumerate(histories.items()):
            colour = colours[index % len(colours)]
            for name, style, marker, part in ((key, "-", "o", "train"), (f"val_{key}", "--", "s", "val")):
                values = np.array([np.nan if value is None else value for value in history.get(name, [])], float)
                if len(values):
                    ax.plot(np.arange(1, len(values) + 1), values, style, marker=marker, markersize=4, color=colour,
                            label=f"{label} {part}")
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.set_xlabel("epoch")
        ax.set_title(key)
        ax.legend(fontsize=7)
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


def class_curves(probabilities: np.ndarray, truth: np.ndarray, classes: Sequence[str]) -> list[tuple[str, int]]:
    """The (label, column) pairs a ROC or precision-recall plot draws: the positive class of two,
    else one-vs-rest each class that occurs in ``truth`` (:func:`seqapp.metrics.scored_classes`)."""
    return [(classes[k], k) for k in scored_classes(probabilities, truth)]


def plot_roc(probabilities: np.ndarray, truth: np.ndarray, classes: Sequence[str], split: str,
             path: str | Path) -> None:
    """ROC curves (one-vs-rest per class for more than two), with the chance diagonal: what a
    baseline that gives every input the same probabilities draws."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 5))
    curves = class_curves(probabilities, truth, classes)
    for label, k in curves:
        false_rate, true_rate = roc_curve(probabilities[:, k], truth == k)
        ax.plot(false_rate, true_rate, lw=1.5 if len(curves) == 1 else 1, label=label)
    ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=1, label="baseline (chance)")
    score = ranking_scores(probabilities, truth)["roc_auc"]
    kind = f"positive class '{curves[0][0]}'" if len(classes) == 2 else "one-vs-rest, macro"
    ax.set_title(f"ROC ({split}): AUC {score if score is None else f'{score:.3f}'} ({kind})", fontsize=9)
    finish_curves(ax, len(curves), "false positive rate", "true positive rate", "lower right")
    save_figure(fig, path)


def plot_precision_recall(probabilities: np.ndarray, truth: np.ndarray, classes: Sequence[str], split: str,
                          path: str | Path) -> None:
    """Precision-recall curves (one-vs-rest per class for more than two); for two classes the
    positive class's share too: the precision of a baseline that ranks nothing."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 5))
    curves = class_curves(probabilities, truth, classes)
    for label, k in curves:
        recall, precision = pr_curve(probabilities[:, k], truth == k)
        ax.step(np.r_[0.0, recall], np.r_[precision[0], precision], where="pre",
                lw=1.5 if len(curves) == 1 else 1, label=label)
    if len(curves) == 1:
        ax.axhline(float(np.mean(truth == curves[0][1])), ls="--", color="grey", lw=1, label="baseline (share)")
    score = ranking_scores(probabilities, truth)["pr_auc"]
    kind = f"positive class '{curves[0][0]}'" if len(classes) == 2 else "one-vs-rest, macro"
    ax.set_title(f"precision-recall ({split}): average precision "
                 f"{score if score is None else f'{score:.3f}'} ({kind})", fontsize=9)
    finish_curves(ax, len(curves), "recall", "precision", "lower left")
    save_figure(fig, path)


def finish_curves(ax: Any, count: int, x_label: str, y_label: str, corner: str) -> None:
    """Axes from 0 to 1, their labels, and a legend when it can name every curve."""
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel(x_label)
    ax.set_ylabel(y_label)
    if count <= MAX_LEGEND:
        ax.legend(loc=corner, fontsize=7)
    else:
        ax.text(0.5, 0.02, f"{count} classes, one line each", ha="center", fontsize=7, transform=ax.transAxes)
    ax.figure.tight_layout()


def plot_reliability(probabilities: np.ndarray, truth: np.ndarray, split: str, path: str | Path,
                     uncalibrated: np.ndarray | None = None, temperature: float = 1.0) -> None:
    """The reliability diagram: per equal-width bin of the predicted class's probability, the share
    of right predictions against the mean probability (a calibrated model lies on the diagonal),
    and below it how many predictions each bin holds; ``uncalibrated`` (the probabilities before
    a temperature) is drawn too."""
    plt = pyplot()
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(5.5, 6.5), sharex=True, gridspec_kw={"height_ratios": [3, 1.3]})
    table = reliability(probabilities, truth, ECE_BINS)
    edges = np.asarray(table["edges"])
    width = edges[1] - edges[0]
    filled = [i for i, n in enumerate(table["counts"]) if n]
    accuracy = [table["accuracy"][i] for i in filled]
    confidence = [table["confidence"][i] for i in filled]
    top.bar(edges[filled], accuracy, width=width, align="edge", color="tab:blue", alpha=0.75, edgecolor="white",
            label="share right" + (f" (temperature {temperature:.3g})" if uncalibrated is not None else ""))
    low, high = np.minimum(accuracy, confidence), np.maximum(accuracy, confidence)
    top.bar(edges[filled], high - low, bottom=low, width=width, align="edge", fill=False, hatch="///",
            edgecolor="tab:red", lw=0.8, label="gap to the mean probability")
    if uncalibrated is not None:
        before = reliability(uncalibrated, truth, ECE_BINS)
        shown = [i for i, n in enumerate(before["counts"]) if n]
        top.plot([before["confidence"][i] for i in shown], [before["accuracy"][i] for i in shown], "o--",
                 color="tab:orange", ms=4, lw=1, label="before calibration")
    top.plot([0, 1], [0, 1], ls="--", color="grey", lw=1, label="calibrated")
    top.set_xlim(0, 1)
    top.set_ylim(0, 1)
    top.set_ylabel("share of predictions right")
    top.set_title(f"reliability ({split}, {ECE_BINS} bins)", fontsize=9)
    top.legend(loc="upper left", fontsize=7)
    counts = np.asarray(table["counts"])
    bottom.bar(edges[:-1], counts, width=width, align="edge", color="grey", edgecolor="white")
    for left, count in zip(edges[:-1], counts):
        if count:
            bottom.text(left + width / 2, count, str(count), ha="center", va="bottom", fontsize=6)
    bottom.set_ylim(0, max(counts.max(), 1) * 1.25)
    bottom.set_xlabel("probability of the predicted class")
    bottom.set_ylabel("predictions")
    fig.tight_layout()
    save_figure(fig, path)


def probability_plots(scored: tuple, classes: list[str], split: str, scale: float, folder: Path) -> None:
    """``roc.png``, ``pr.png`` and ``calibration.png`` in ``folder`` from ``(probabilities, truth,
    logits)`` (the reliability diagram shows the probabilities before the temperature too)."""
    probabilities, truth, logits = scored
    plot_roc(probabilities, truth, classes, split, folder / "roc.png")
    plot_precision_recall(probabilities, truth, classes, split, folder / "pr.png")
    plot_reliability(probabilities, truth, split, folder / "calibration.png",
                     uncalibrated=scaled_probabilities(logits) if scale != 1.0 else None, temperature=scale)
