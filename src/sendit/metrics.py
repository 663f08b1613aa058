"""Classification metrics for two classes, numpy only (no scikit-learn needed)."""

from __future__ import annotations

import numpy as np


def classification_metrics(labels: np.ndarray, preds: np.ndarray) -> dict:
    labels, preds = np.asarray(labels), np.asarray(preds)
    out = {"n": int(len(labels)), "accuracy": float((labels == preds).mean()) if len(labels) else 0.0}
    precision, recall, f1, support = [], [], [], []
    for c in (0, 1):
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
    )
    return out
