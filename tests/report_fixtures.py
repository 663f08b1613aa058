"""Small synthetic run folders (docs/run-folder.md) for the report tests, made with a fixed seed."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

SCRIPT_TWEET = "<script>alert(1)</script>"
# Accuracy each synthetic method aims at: LoRA clearly beats BitFit; full ≈ LoRA.
TARGET_ACC = {"head": 0.62, "bitfit": 0.72, "lora": 0.90, "full": 0.91, "distill-2L-lora": 0.86}
TRAINABLE = {"head": 1_538, "bitfit": 103_682, "lora": 1_181_186, "full": 125_240_066}
TOTAL_PARAMS = 125_240_066


def _f1(label: np.ndarray, pred: np.ndarray) -> tuple[float, float]:
    """(macro, weighted) F1 over classes 0 and 1."""
    f1s, weights = [], []
    for c in (0, 1):
        tp = np.sum((label == c) & (pred == c))
        fp = np.sum((label != c) & (pred == c))
        fn = np.sum((label == c) & (pred != c))
        f1s.append(2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0)
        weights.append(np.sum(label == c))
    return float(np.mean(f1s)), float(np.average(f1s, weights=weights))


def make_run(
    folder: Path,
    methods: tuple[str, ...] = ("bitfit", "lora", "full"),
    seeds: tuple[int, ...] = (0,),
    test_sets: dict[str, int] | None = None,
    epochs: int = 3,
    distill: bool = False,
    seed: int = 0,
    config: dict | None = None,
) -> Path:
    """A full run folder with every column of docs/run-folder.md."""
    rng = np.random.default_rng(seed)
    test_sets = test_sets or {"sentiment140-manual": 120, "held-out split": 80}
    first = next(iter(test_sets))
    folder.mkdir(parents=True, exist_ok=True)
    truth = {ts: rng.integers(0, 2, size=n) for ts, n in test_sets.items()}
    all_methods = list(methods) + (["distill-2L-lora"] if distill else [])
    for m in all_methods:
        results, logs, metrics, preds = [], [], [], []
        is_student = m.startswith("distill")
        for s in seeds:
            for ts, label in truth.items():
                correct = rng.random(len(label)) < TARGET_ACC[m]
                if ts == first:
                    correct[0] = False  # every method gets the <script> tweet wrong, so it is shown
                pred = np.where(correct, label, 1 - label)
                prob = np.where(
                    pred == 1, rng.uniform(0.5, 1, len(pred)), rng.uniform(0, 0.5, len(pred))
                )
                texts = [f"{ts} tweet {i} :)" for i in range(len(label))]
                if ts == first:
                    texts[0] = SCRIPT_TWEET
                preds.append(
                    pd.DataFrame(
                        {
                            "text": texts,
                            "label": label,
                            "prediction": pred,
                            "prob_positive": prob,
                            "method": m,
                            "seed": s,
                            "test_set": ts,
                            "row_id": np.arange(len(label)),
                        }
                    )
                )
                macro, weighted = _f1(label, pred)
                t = float(rng.uniform(0.5, 3.0)) * (0.4 if is_student else 1.0)
                metrics.append(
                    {
                        "accuracy": float(np.mean(correct)),
                        "f1_macro": macro,
                        "f1_weighted": weighted,
                        "inference_time_sec": t,
                        "method": m,
                        "seed": s,
                        "test_set": ts,
                        "n": len(label),
                        "precision": macro,
                        "recall": macro,
                        "tweets_per_sec": len(label) / t,
                        "params": 30_000_000 if is_student else TOTAL_PARAMS,
                        "model_size_mb": 120.0 if is_student else 478.5,
                    }
                )
            val_acc = np.sort(rng.uniform(TARGET_ACC[m] - 0.1, TARGET_ACC[m], epochs))
            val_f1 = val_acc - rng.uniform(0, 0.02, epochs)
            for e in range(epochs):
                logs.append(
                    {
                        "epoch": e + 1,
                        "val_accuracy": val_acc[e],
                        "val_f1": val_f1[e],
                        "method": m,
                        "seed": s,
                        "train_loss": (1.6 - TARGET_ACC[m]) / (e + 1),
                        "val_loss": (1.5 - TARGET_ACC[m]) / (e + 1) + 0.05 * e,
                        "lr": 1e-3,
                        "epoch_time_sec": 10.0 + e,
                        "train_tweets_per_sec": 500.0,
                    }
                )
            trainable = TRAINABLE.get(m, 1_181_186)
            row = {
                "best_val_f1": float(val_f1.max()),
                "val_accuracy": float(val_acc[-1]),
                "runtime_sec": float(rng.uniform(50, 500)),
                "memory_delta_mb": float(rng.uniform(100, 900)),
                "method": m,
                "model": "facebook/opt-125m",
                "seed": s,
                "best_epoch": epochs,
                "epochs_run": epochs,
                "peak_memory_mb": float(rng.uniform(1000, 4000)),
                "trainable_params": trainable,
                "total_params": TOTAL_PARAMS,
                "trainable_pct": 100 * trainable / TOTAL_PARAMS,
                "saved_size_mb": float(rng.uniform(0.4, 480)),
                "lr": 1e-3,
                "train_tweets_per_sec": float(rng.uniform(100, 900)),
                "train_tokens_per_sec": float(rng.uniform(1e3, 9e3)),
            }
            if is_student:
                row.update(
                    teacher="facebook/opt-125m",
                    teacher_method="lora",
                    student_layers=2,
                    kd_ratio=0.5,
                    temperature=2.0,
                )
            results.append(row)
        pd.DataFrame(results).to_csv(folder / f"{m}_results.csv", index=False)
        pd.DataFrame(logs).to_csv(folder / f"{m}_epoch_logs.csv", index=False)
        pd.DataFrame(metrics).to_csv(folder / f"{m}_inference_metrics_summary.csv", index=False)
        pd.concat(preds).to_csv(folder / f"{m}_inference_predictions.csv", index=False)
    manifest = {
        "config": config or {"model": "facebook/opt-125m", "note": '<img src=x onerror="alert(2)">'},
        "methods": all_methods,
        "seeds": list(seeds),
        "versions": {"python": "3.11", "torch": "2.4", "sendit": "0.1.0"},
        "git_commit": "abc1234",
        "hardware": {"cpu": "test cpu", "cores": 2, "device": "cpu", "gpu": None, "bf16": False},
        "data": {"rows_read": 1000, "rows_kept": 990},
        "started": "2024-06-01T10:00:00",
        "finished": "2024-06-01T11:00:00",
        "wall_time_sec": 3600.0,
        "status": {m: "done" for m in all_methods},
    }
    (folder / "run.json").write_text(json.dumps(manifest, indent=2))
    (folder / "config.yaml").write_text("model: facebook/opt-125m\n")
    return folder


def make_study_folder(folder: Path, n: int = 150, epochs: int = 4, seed: int = 1) -> Path:
    """The study's own eight CSV files, with only the study's columns (results keep an index column)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    label = rng.integers(0, 2, size=n)
    for m in ("bitfit", "lora"):
        correct = rng.random(n) < TARGET_ACC[m]
        pred = np.where(correct, label, 1 - label)
        texts = [f"study tweet {i}" for i in range(n)]
        texts[0] = SCRIPT_TWEET
        pd.DataFrame({"text": texts, "label": label, "prediction": pred}).to_csv(
            folder / f"{m}_inference_predictions.csv", index=False
        )
        macro, weighted = _f1(label, pred)
        pd.DataFrame(
            [
                {
                    "accuracy": float(np.mean(correct)),
                    "f1_macro": macro,
                    "f1_weighted": weighted,
                    "inference_time_sec": float(rng.uniform(1, 4)),
                }
            ]
        ).to_csv(folder / f"{m}_inference_metrics_summary.csv", index=False)
        val_acc = np.sort(rng.uniform(TARGET_ACC[m] - 0.1, TARGET_ACC[m], epochs))
        val_f1 = val_acc - 0.01
        pd.DataFrame(
            {"epoch": np.arange(1, epochs + 1), "val_accuracy": val_acc, "val_f1": val_f1}
        ).to_csv(folder / f"{m}_epoch_logs.csv", index=False)
        pd.DataFrame(
            [
                {
                    "best_val_f1": float(val_f1.max()),
                    "val_accuracy": float(val_acc[-1]),
                    "runtime_sec": float(rng.uniform(100, 900)),
                    "memory_delta_mb": float(rng.uniform(50, 800)),
                }
            ]
        ).to_csv(folder / f"{m}_results.csv", index=True)
    return folder
