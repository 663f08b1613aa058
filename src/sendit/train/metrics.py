"""Classification metrics for k classes, numpy only (no scikit-learn needed)."""

from __future__ import annotations

import numpy as np


def classification_metrics(labels: np.ndarray, preds: np.ndarray, num_classes: int | None = None) -> dict:
    """Accuracy, macro and weighted F1, macro precision and recall over the classes 0..k-1 (k = `num_classes`, at
    least 2), and `per_class` lists (precision, recall, f1, support; index = class id). Every class counts in the
    macro means, one absent from a test set too (as the binary metrics always did)."""
    labels, preds = np.asarray(labels), np.asarray(preds)
    k = num_classes or max(2, int(max(labels.max(initial=0), preds.max(initial=0))) + 1)
    out = {"n": int(len(labels)), "accuracy": float((labels == preds).mean()) if len(labels) else 0.0}
    precision, recall, f1, support = [], [], [], []
    for c in range(k):
        tp = int(((preds == c) & (labels == c)).sum())
        fp = int(((preds == c) & (labels != c)).sum())
        fn = int(((preds != c) & (labels == c)).sum())
        p = tp / (tp + fp) if tp + fp else 0.0
        r = tp / (tp + fn) if tp + fn else 0.0
        precision.append(p)
        recall.append(r)
        f1.append(2 * p * r / (p + r) if p + r else 0.0)
        support.append(int((labels == c).sum()))
    weights = np.asarray(support) / max(sum(support), 1)
    out.update(
        f1_macro=float(np.mean(f1)),
        f1_weighted=float(np.dot(weights, f1)),
        precision=float(np.mean(precision)),
        recall=float(np.mean(recall)),
        per_class={"precision": precision, "recall": recall, "f1": f1, "support": support},
    )
    return out


def confusion_matrix(labels: np.ndarray, preds: np.ndarray, num_classes: int) -> np.ndarray:
    """Counts[true class, predicted class], k x k."""
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(cm, (np.asarray(labels, dtype=np.int64), np.asarray(preds, dtype=np.int64)), 1)
    return cm
