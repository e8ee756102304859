"""Classification metrics shared by every task that predicts labels (sentiment, tagging).

Plain NumPy: a confusion matrix, then accuracy, per-class precision / recall / F1 /
support and macro F1 from it, and the same figures as aligned text for ``seqapp evaluate``;
for BIO-tagged sequences also entity-level precision / recall / F1 (exact span and type).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


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
