"""The run folder: the study's CSV files (names and columns kept, extended), run.json, atomic writes.

No output file is ever half-written: everything goes to a temporary file in the same folder first and is
renamed into place (rename is atomic on POSIX file systems).
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from pathlib import Path

import pandas as pd

RESULTS = "{method}_results.csv"
EPOCH_LOGS = "{method}_epoch_logs.csv"
INFERENCE_SUMMARY = "{method}_inference_metrics_summary.csv"
PREDICTIONS = "{method}_inference_predictions.csv"
_UMASK = os.umask(0)
os.umask(_UMASK)

# The study's columns first, in the study's order; the rest extend them.
COLUMNS = {
    RESULTS: ["best_val_f1", "val_accuracy", "runtime_sec", "memory_delta_mb", "method", "model", "seed",
              "best_epoch", "epochs_run", "peak_memory_mb", "trainable_params", "total_params", "trainable_pct",
              "saved_size_mb", "lr", "train_tweets_per_sec", "train_tokens_per_sec"],
    EPOCH_LOGS: ["epoch", "val_accuracy", "val_f1", "method", "seed", "train_loss", "val_loss", "lr",
                 "epoch_time_sec", "train_tweets_per_sec"],
    INFERENCE_SUMMARY: ["accuracy", "f1_macro", "f1_weighted", "inference_time_sec", "method", "seed", "test_set",
                        "n", "precision", "recall", "tweets_per_sec", "params", "model_size_mb"],
    PREDICTIONS: ["text", "label", "prediction", "prob_positive", "method", "seed", "test_set", "row_id"],
}


def atomic_write_text(path: Path, text: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp creates 0600; give the file the permissions open() would
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_csv(df: pd.DataFrame, path: Path) -> None:
    atomic_write_text(path, df.to_csv(index=False))


def atomic_write_json(obj: dict, path: Path) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, default=str) + "\n")


def _ordered(df: pd.DataFrame, template: str) -> pd.DataFrame:
    first = [c for c in COLUMNS[template] if c in df.columns]
    return df[first + [c for c in df.columns if c not in first]]


def append_rows(run_dir: Path, template: str, method: str, rows: list[dict], replace_seed: int | None = None) -> Path:
    """Add rows to `{method}_*.csv`; rows of the same seed are replaced (a re-run or resumed method)."""
    path = Path(run_dir) / template.format(method=method)
    new = pd.DataFrame(rows)
    if path.exists():
        old = pd.read_csv(path, keep_default_na=False, na_values=[""])
        if replace_seed is not None and "seed" in old.columns:
            old = old[old["seed"] != replace_seed]
        new = pd.concat([old, new], ignore_index=True) if len(old) else new
    atomic_write_csv(_ordered(new, template), path)
    return path


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def versions() -> dict:
    import platform
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for pkg in ("sendit", "torch", "transformers", "peft", "accelerate", "numpy", "pandas"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = None
    return out


def read_manifest(run_dir: Path) -> dict:
    path = Path(run_dir) / "run.json"
    return json.loads(path.read_text()) if path.exists() else {}


def update_manifest(run_dir: Path, **fields) -> dict:
    manifest = read_manifest(run_dir)
    for k, v in fields.items():
        if isinstance(v, dict) and isinstance(manifest.get(k), dict):
            manifest[k].update(v)
        else:
            manifest[k] = v
    atomic_write_json(manifest, Path(run_dir) / "run.json")
    return manifest
