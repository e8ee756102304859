"""Classification metrics shared by every task that predicts labels (sentiment, tagging).

Plain NumPy: a confusion matrix, then accuracy, per-class precision / recall / F1 /
support and macro F1 from it, and the same figures as aligned text for ``seqapp evaluate``;
for BIO-tagged sequences also entity-level precision / recall / F1 (exact span and type).

Class probabilities are judged too: how well they rank (ROC-AUC and PR-AUC, one-vs-rest
macro over more than two classes) and how well they are calibrated (the expected
calibration error over equal-width confidence bins, the Brier score, the negative
log-likelihood). Temperature scaling lives here as well: probabilities are a softmax of
logits divided by one temperature, fitted on held-out data by minimising their negative
log-likelihood (:func:`fit_temperature`). A temperature never changes which class is the
most probable.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

ECE_BINS = 15  # equal-width confidence bins of the expected calibration error
TEMPERATURE_RANGE = (1e-2, 1e2)  # where fit_temperature looks


def classification_metrics(truth: np.ndarray, predicted: np.ndarray, classes: list[str]) -> dict:
    """Accuracy, per-class precision / recall / F1 / support, macro F1, confusion matrix."""
    k = len(classes)
    confusion = np.zeros((k, k), np.int64)
    np.add.at(confusion, (truth, predicted), 1)
    hits = np.diag(confusion).astype(np.float64)
    precision = np.divide(hits, confusion.sum(axis=0), out=np.zeros(k), where=confusion.sum(axis=0) > 0)
    recall = np.divide(hits, confusion.sum(axis=1), out=np.zeros(k), where=confusion.sum(axis=1) > 0)
    f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros(k), where=precision + recall > 0)
    return {
        "accuracy": round(float(hits.sum() / max(len(truth), 1)), 5),
        "macro_f1": round(float(f1.mean()), 5),
        "per_class": {label: {"precision": round(float(p), 5), "recall": round(float(r), 5), "f1": round(float(f), 5),
                              "support": int(s)}
                      for label, p, r, f, s in zip(classes, precision, recall, f1, confusion.sum(axis=1))},
        "confusion_matrix": confusion.tolist(),
    }


def class_table(split_metrics: dict, classes: list[str], split: str) -> list[str]:
    """Per-class precision / recall / F1 / support as aligned text."""
    width = max(8, *(len(label) for label in classes))
    lines = [f"{split} per class:", f"  {'label'.ljust(width)}  precision  recall  f1      support"]
    for label in classes:
        row = split_metrics["per_class"][label]
        lines.append(f"  {label.ljust(width)}  {row['precision']:<9.4f}  {row['recall']:<6.4f}  {row['f1']:<6.4f}  "
                     f"{row['support']}")
    return lines


def confusion_table(confusion: list[list[int]], classes: list[str], split: str) -> list[str]:
    """The confusion matrix as text: one row per true label, one column per predicted label."""
    width = max(8, *(len(label) for label in classes), *(len(str(n)) for row in confusion for n in row))
    lines = [f"{split} confusion matrix (rows: true label, columns: predicted):",
             "  " + " " * width + "  " + "  ".join(label.rjust(width) for label in classes)]
    for label, row in zip(classes, confusion):
        lines.append(f"  {label.ljust(width)}  " + "  ".join(str(n).rjust(width) for n in row))
    return lines


def is_bio(tags: Sequence[str]) -> bool:
    """True for a BIO / IOB2 tag set: ``O`` plus ``B-TYPE`` / ``I-TYPE`` tags, at least one entity tag."""
    return any(tag != "O" for tag in tags) and all(tag == "O" or tag[:2] in ("B-", "I-") for tag in tags)


def bio_entities(tags: Sequence[str]) -> set[tuple[str, int, int]]:
    """The entities of one BIO-tagged sentence as ``(type, first token, last token + 1)``.

    ``B-X`` starts an entity and ``I-X`` continues one of type X; like conlleval, an
    ``I-X`` that continues nothing of type X starts a new entity.
    """
    entities = set()
    kind, start = None, 0
    for i, tag in enumerate([*tags, "O"]):
        prefix, _, label = tag.partition("-")
        if kind is not None and (prefix != "I" or label != kind):
            entities.add((kind, start, i))
            kind = None
        if prefix in ("B", "I") and kind is None:
            kind, start = label, i
    return entities


def entity_scores(truth: Sequence[Sequence[str]], predicted: Sequence[Sequence[str]]) -> dict:
    """Entity-level precision / recall / F1 over sentences of BIO tags (exact span and type)."""
    found = correct = expected = 0
    for true_tags, predicted_tags in zip(truth, predicted):
        true_entities, predicted_entities = bio_entities(true_tags), bio_entities(predicted_tags)
        expected += len(true_entities)
        found += len(predicted_entities)
        correct += len(true_entities & predicted_entities)
    precision = correct / found if found else 0.0
    recall = correct / expected if expected else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": round(precision, 5), "recall": round(recall, 5), "f1": round(f1, 5),
            "true_entities": expected, "predicted_entities": found}


# -- class probabilities: temperature, ranking and calibration -----------------------------


def as_logits(outputs: np.ndarray) -> np.ndarray:
    """A classifier head's pre-activation as an ``(N, classes)`` float64 array.

    A one-unit sigmoid head's logit ``z`` becomes ``[0, z]``, whose softmax is
    ``[1 - sigmoid(z), sigmoid(z)]``: one softmax (with a temperature) serves both kinds of head.
    """
    outputs = np.asarray(outputs, np.float64)
    if outputs.shape[-1] == 1:
        return np.concatenate([np.zeros_like(outputs), outputs], axis=-1)
    return outputs


def log_probabilities(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """The log-softmax of ``logits / temperature`` over the last axis (stable for any logits)."""
    scaled = np.asarray(logits, np.float64) / temperature
    scaled = scaled - scaled.max(axis=-1, keepdims=True)
    return scaled - np.log(np.exp(scaled).sum(axis=-1, keepdims=True))


def scaled_probabilities(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """The softmax of ``logits / temperature``: class probabilities calibrated by ``temperature``."""
    return np.exp(log_probabilities(logits, temperature))


def mean_nll(log_probs: np.ndarray, truth: np.ndarray) -> float:
    """The mean negative log-likelihood of the true classes ``truth`` under ``log_probs``."""
    return float(-np.mean(log_probs[np.arange(len(truth)), truth])) if len(truth) else 0.0


def fit_temperature(logits: np.ndarray, truth: np.ndarray, bounds: tuple[float, float] = TEMPERATURE_RANGE) -> float:
    """The temperature ``T`` that minimises the negative log-likelihood of ``truth`` under
    ``softmax(logits / T)``: a golden-section search over ``log T`` within ``bounds``.

    The loss is convex in ``1 / T``, so it has one minimum along ``log T`` and the search
    finds it (or the bound it lies beyond). 1.0 when there is nothing to fit on or
    nothing better than 1.0 is found.
    """
    logits, truth = np.asarray(logits, np.float64), np.asarray(truth, np.int64)
    if not len(truth):
        return 1.0

    def loss(log_t: float) -> float:
        return mean_nll(log_probabilities(logits, math.exp(log_t)), truth)

    golden = (math.sqrt(5.0) - 1.0) / 2.0
    low, high = math.log(bounds[0]), math.log(bounds[1])
    left, right = high - golden * (high - low), low + golden * (high - low)
    loss_left, loss_right = loss(left), loss(right)
    while high - low > 1e-7:
        if loss_left <= loss_right:
            high, right, loss_right = right, left, loss_left
            left = high - golden * (high - low)
            loss_left = loss(left)
        else:
            low, left, loss_left = left, right, loss_right
            right = low + golden * (high - low)
            loss_right = loss(right)
    best = (low + high) / 2.0
    return round(math.exp(best), 6) if loss(best) < loss(0.0) else 1.0


def binary_counts(scores: np.ndarray, positive: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """True and false positives when every example scoring at least each distinct score (highest
    first) is called positive: the points of the ROC and precision-recall curves (ties together)."""
    order = np.argsort(-np.asarray(scores, np.float64), kind="mergesort")
    ranked, hits = np.asarray(scores, np.float64)[order], np.asarray(positive, bool)[order]
    ends = np.r_[np.flatnonzero(np.diff(ranked)), len(ranked) - 1]
    true_positives = np.cumsum(hits)[ends]
    return true_positives, ends + 1 - true_positives


def roc_curve(scores: np.ndarray, positive: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """False and true positive rates from (0, 0) to (1, 1) over every threshold of ``scores``."""
    true_positives, false_positives = binary_counts(scores, positive)
    return (np.r_[0.0, false_positives / max(false_positives[-1], 1)],
            np.r_[0.0, true_positives / max(true_positives[-1], 1)])


def roc_auc(scores: np.ndarray, positive: np.ndarray) -> float | None:
    """The area under the ROC curve (a tie counts half); None without both kinds of example."""
    positive = np.asarray(positive, bool)
    if positive.all() or not positive.any():
        return None
    false_rate, true_rate = roc_curve(scores, positive)
    return float(np.sum(np.diff(false_rate) * (true_rate[1:] + true_rate[:-1]) / 2.0))


def pr_curve(scores: np.ndarray, positive: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Recall and precision at every threshold of ``scores``, highest threshold first."""
    true_positives, false_positives = binary_counts(scores, positive)
    return true_positives / max(true_positives[-1], 1), true_positives / (true_positives + false_positives)


def average_precision(scores: np.ndarray, positive: np.ndarray) -> float | None:
    """The area under the precision-recall curve as average precision: the precision at each
    threshold weighted by the recall it adds (no interpolation); None without a positive."""
    if not np.asarray(positive, bool).any():
        return None
    recall, precision = pr_curve(scores, positive)
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def scored_classes(probabilities: np.ndarray, truth: np.ndarray) -> list[int]:
    """The classes ranking is judged on: the second of two (the positive one), or each of more
    that occurs in ``truth`` and is not all of it (one-vs-rest)."""
    if probabilities.shape[1] == 2:
        return [1]
    counts = np.bincount(truth, minlength=probabilities.shape[1])
    return [k for k, count in enumerate(counts) if 0 < count < len(truth)]


def ranking_scores(probabilities: np.ndarray, truth: np.ndarray) -> dict:
    """ROC-AUC and PR-AUC (average precision) of the positive class of two, or the one-vs-rest
    macro average over the classes of :func:`scored_classes`; None where nothing can be scored."""
    aucs, precisions = [], []
    for k in scored_classes(probabilities, truth):
        aucs.append(roc_auc(probabilities[:, k], truth == k))
        precisions.append(average_precision(probabilities[:, k], truth == k))
    aucs = [value for value in aucs if value is not None]
    precisions = [value for value in precisions if value is not None]
    return {"roc_auc": rounded(np.mean(aucs)) if aucs else None,
            "pr_auc": rounded(np.mean(precisions)) if precisions else None}


def reliability(probabilities: np.ndarray, truth: np.ndarray, bins: int = ECE_BINS) -> dict:
    """Per equal-width bin of the predicted class's probability (``(i/bins, (i+1)/bins]``): how
    many predictions fell in it, their mean probability and the share of them that was right
    (None for an empty bin): the reliability diagram."""
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == truth
    index = np.clip(np.ceil(confidence * bins).astype(np.int64) - 1, 0, bins - 1)
    counts = np.bincount(index, minlength=bins)
    confidence_sums = np.bincount(index, weights=confidence, minlength=bins)
    correct_sums = np.bincount(index, weights=correct, minlength=bins)
    return {"edges": np.linspace(0.0, 1.0, bins + 1).tolist(), "counts": counts.tolist(),
            "confidence": [float(c / n) if n else None for c, n in zip(confidence_sums, counts)],
            "accuracy": [float(c / n) if n else None for c, n in zip(correct_sums, counts)]}


def expected_calibration_error(probabilities: np.ndarray, truth: np.ndarray, bins: int = ECE_BINS) -> float:
    """The expected calibration error: over equal-width bins of the predicted class's
    probability, the gap between that mean probability and the accuracy, weighted by the
    bin's share of the predictions (0: a prediction made with probability p is right a
    share p of the time)."""
    if not len(truth):
        return 0.0
    table = reliability(probabilities, truth, bins)
    gaps = [n * abs(accuracy - confidence) for n, accuracy, confidence
            in zip(table["counts"], table["accuracy"], table["confidence"]) if n]
    return float(sum(gaps) / len(truth))


def brier_score(probabilities: np.ndarray, truth: np.ndarray) -> float:
    """The Brier score: the mean squared gap between the probabilities and the one-hot truth,
    summed over the classes; for two classes, of the positive class alone (the usual binary form)."""
    if not len(truth):
        return 0.0
    onehot = np.eye(probabilities.shape[1])[truth]
    if probabilities.shape[1] == 2:
        return float(np.mean((probabilities[:, 1] - onehot[:, 1]) ** 2))
    return float(np.mean(np.sum((probabilities - onehot) ** 2, axis=1)))


def probability_scores(probabilities: np.ndarray, truth: np.ndarray) -> dict:
    """ROC-AUC, PR-AUC, expected calibration error, Brier score and negative log-likelihood of
    the class ``probabilities`` (N x classes) against the class ids ``truth``."""
    probabilities = np.asarray(probabilities, np.float64)
    truth = np.asarray(truth, np.int64)
    log_probs = np.log(np.maximum(probabilities, np.finfo(np.float64).tiny))
    return {**ranking_scores(probabilities, truth),
            "ece": rounded(expected_calibration_error(probabilities, truth)),
            "brier": rounded(brier_score(probabilities, truth)),
            "nll": rounded(mean_nll(log_probs, truth))}


def frequency_probabilities(train_truth: np.ndarray, classes: int, rows: int) -> np.ndarray:
    """The baseline's probabilities: each class's share of the training split (add-one smoothed,
    so a class unseen in training is not infinitely surprising), the same for all ``rows``."""
    counts = np.bincount(np.asarray(train_truth, np.int64), minlength=classes) + 1.0
    return np.tile(counts / counts.sum(), (rows, 1))


def calibration_change(logits: np.ndarray, truth: np.ndarray, temperature: float) -> dict:
    """The expected calibration error and negative log-likelihood before (temperature 1) and
    after dividing ``logits`` by ``temperature``."""
    figures = {}
    for when, value in (("before", 1.0), ("after", temperature)):
        log_probs = log_probabilities(logits, value)
        figures[f"ece_{when}"] = rounded(expected_calibration_error(np.exp(log_probs), truth))
        figures[f"nll_{when}"] = rounded(mean_nll(log_probs, truth))
    return figures


def rounded(value: float) -> float:
    """A figure for metrics.json: five decimals."""
    return round(float(value), 5)


def probability_line(scores: dict) -> str:
    """ROC-AUC, PR-AUC, ECE, Brier and NLL on one line (``nan`` for a figure that could not be had)."""
    def shown(key: str) -> str:
        value = scores.get(key)
        return "nan" if value is None else f"{value:.4f}"

    return (f"ROC-AUC {shown('roc_auc')}  PR-AUC {shown('pr_auc')}  ECE {shown('ece')}  Brier {shown('brier')}  "
            f"NLL {shown('nll')}")


def probability_lines(metrics: dict, baseline: dict, baseline_name: str) -> list[str]:
    """``seqapp evaluate``'s lines on class probabilities: ranking and calibration per split, each
    beside the baseline's (``baseline``: its figures per split), then the temperature's effect."""
    lines = []
    for name in ("val", "test", "train"):
        if name in metrics and "ece" in metrics[name]:
            lines.append(f"{name:<5} {probability_line(metrics[name])}")
            if "ece" in baseline.get(name, {}):
                lines.append(f"      {probability_line(baseline[name])}   baseline: {baseline_name}")
    calibration = metrics.get("calibration")
    if calibration:
        lines.append(f"temperature {calibration['temperature']:.4g} (fitted on the validation split):")
        for name in ("val", "test"):
            if name in calibration:
                change = calibration[name]
                lines.append(f"      {name:<5} ECE {change['ece_before']:.4f} -> {change['ece_after']:.4f}  "
                             f"NLL {change['nll_before']:.4f} -> {change['nll_after']:.4f}")
    return lines
