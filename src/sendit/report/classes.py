"""The report's view of the classes: their names (from run.json or evaluation.json), rows per class in each split,
per-class precision/recall/F1 and the k x k confusion matrix, all from the run folders' files (no torch)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from sendit.config.schema import HELDOUT_NAME, DataConfig, test_set_name
from sendit.report.load import RunData
from sendit.report.tables import Table

BINARY = ["negative", "positive"]
# run.json's names of the splits (data.label_balance) as the report calls them.
SPLITS = {"train": "train", "val": "validation", "heldout": HELDOUT_NAME}


def class_names(data: RunData) -> list[str]:
    """The classes in id order, as the runs recorded them (older runs: negative/positive). Runs of different
    classes cannot share one confusion matrix; the report then says so and uses the first run's."""
    found = {run: _recorded(m) for run, m in data.manifests.items()}
    found = {run: names for run, names in found.items() if names}
    distinct = list(dict.fromkeys(tuple(n) for n in found.values()))
    if len(distinct) > 1:
        data.note("the runs have different classes (" + "; ".join(f"{r}: {', '.join(n)}" for r, n in found.items())
                  + "): class tables and confusion matrices use the first run's.")
    k = int(max(data.predictions["label"].max(), data.predictions["prediction"].max()) + 1) if _has_preds(data) else 2
    names = list(distinct[0]) if distinct else BINARY
    return names + [str(i) for i in range(len(names), k)]  # ids beyond the recorded names keep their number


def _recorded(manifest: dict) -> list[str] | None:
    names = (manifest.get("data") or {}).get("labels") if isinstance(manifest.get("data"), dict) else None
    names = names or manifest.get("labels")
    return [str(n) for n in names] if isinstance(names, list) and names else None


def _has_preds(data: RunData) -> bool:
    return not data.predictions.empty and {"label", "prediction"} <= set(data.predictions.columns)


def confusion(g: pd.DataFrame, k: int) -> np.ndarray:
    """Counts[true, predicted] of one model's prediction rows (all its seeds)."""
    cm = np.zeros((k, k), dtype=int)
    np.add.at(cm, (g["label"].to_numpy(int), g["prediction"].to_numpy(int)), 1)
    return cm


def _groups(data: RunData):
    """(test set, model name, its prediction rows) in report order: test sets as first seen, models as named."""
    p = data.predictions
    for ts in dict.fromkeys(p["test_set"]):
        for name in data.names:
            g = p[(p["test_set"] == ts) & (p["name"] == name)]
            if not g.empty:
                yield ts, name, g


def per_class_table(data: RunData) -> Table | None:
    """Precision, recall, F1 and support of every class, per test set and model, pooled over seeds."""
    if not _has_preds(data):
        return None
    names, rows = class_names(data), []
    for ts, name, g in _groups(data):
        cm = confusion(g, len(names))
        for c, cls in enumerate(names):
            tp, predicted, actual = cm[c, c], cm[:, c].sum(), cm[c, :].sum()
            p = tp / predicted if predicted else 0.0
            r = tp / actual if actual else 0.0
            rows.append({"test_set": ts, "method": data.pretty(name), "name": name, "class": cls, "precision": p,
                         "recall": r, "f1": 2 * p * r / (p + r) if p + r else 0.0, "support": int(actual),
                         "seeds": g["seed"].nunique()})
    raw = pd.DataFrame(rows)
    shown = pd.DataFrame({"Test set": raw["test_set"], "Method": raw["method"], "Class": raw["class"],
                          **{h: raw[c].map("{:.4f}".format) for c, h in (("precision", "Precision"),
                                                                        ("recall", "Recall"), ("f1", "F1"))},
                          "Support": raw["support"].map("{:,}".format)})
    return Table("per_class", "Per-class precision, recall and F1 (test sets; rows of all seeds pooled)", raw, shown)


def confusion_table(data: RunData) -> Table | None:
    """The k x k confusion matrix of every model on every test set: one row per true class, counts of all seeds."""
    if not _has_preds(data):
        return None
    names, rows = class_names(data), []
    for ts, name, g in _groups(data):
        cm = confusion(g, len(names))
        for c, cls in enumerate(names):
            rows.append({"test_set": ts, "method": data.pretty(name), "name": name, "true": cls,
                         **{f"predicted {p}": int(cm[c, j]) for j, p in enumerate(names)}})
    raw = pd.DataFrame(rows)
    shown = raw.drop(columns="name").rename(columns={"test_set": "Test set", "method": "Method", "true": "True"})
    return Table("confusion", "Confusion matrices (rows: true class; columns: predicted; counts over seeds)", raw,
                 shown.astype(str))


def class_count_table(data: RunData) -> Table | None:
    """Rows per class in every split of every run (run.json), or per test set where a folder has no run.json
    record (an evaluation folder: its prediction rows)."""
    names, rows = class_names(data), []
    for run, manifest in data.manifests.items():
        balance = (manifest.get("data") or {}).get("label_balance") if isinstance(manifest.get("data"), dict) else None
        for split, counts in (balance or {}).items():
            if isinstance(counts, dict):
                rows.append({"run": run, "split": SPLITS.get(split) or _test_name(manifest, split),
                             **{c: counts.get(c, 0) for c in names}})
    if not rows and _has_preds(data):
        p = data.predictions
        first = p[(p["name"] == p["name"].iloc[0]) & (p["seed"] == p["seed"].min())]
        for ts, g in first.groupby("test_set", sort=False):
            counts = np.bincount(g["label"].to_numpy(int), minlength=len(names))
            rows.append({"run": "", "split": ts, **{c: int(n) for c, n in zip(names, counts)}})
    if not rows:
        return None
    raw = pd.DataFrame(rows)
    raw["total"] = raw[names].sum(axis=1)
    shown = raw.rename(columns={"run": "Run", "split": "Split", "total": "Total"})
    if raw["run"].nunique() == 1:
        shown = shown.drop(columns="Run")
    return Table("class_counts", "Rows per class in each split", raw,
                 shown.apply(lambda col: col.map(lambda v: f"{v:,}" if isinstance(v, (int, np.integer)) else v)))


def _test_name(manifest: dict, split: str) -> str:
    """The --test-file test set's name as the run named it (label_balance calls it test_file)."""
    data = (manifest.get("config") or {}).get("data") or {}
    try:
        return test_set_name(DataConfig(test_file=data.get("test_file"), test_name=data.get("test_name"))) or split
    except (TypeError, ValueError):
        return split


def class_tables(data: RunData) -> list[Table | None]:
    return [class_count_table(data), per_class_table(data), confusion_table(data)]
