"""The run folder: the study's CSV files (names and columns kept, extended), run.json, atomic writes.

No output file is ever half-written: everything goes to a temporary file in the same folder first and is
renamed into place (rename is atomic on POSIX file systems).
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Iterator

import pandas as pd
import yaml

from sendit import __version__
from sendit.errors import ConfigError, RunInterrupted, RunStopped
from sendit.fileio import as_write_error, write_target

# ------------------------------------------------------------------------------------------------ every name
# Every file and folder a run folder can hold. Writers and readers take the names from here, and
# tests/test_run_folder.py walks finished run, tune and distill folders and finds nothing else (`name_of`).
RUN_MANIFEST = "run.json"  # the resolved config, seeds, each job's status, the machine, versions
CONFIG_FILE = "config.yaml"  # the config, as `--config` reads it back
RESULTS = "{method}_results.csv"  # the study's four CSV files, one set per method label
EPOCH_LOGS = "{method}_epoch_logs.csv"
INFERENCE_SUMMARY = "{method}_inference_metrics_summary.csv"
PREDICTIONS = "{method}_inference_predictions.csv"
CHECKPOINTS = ".checkpoints"  # <label>-seed<seed>/: the epochs of a training under way (--resume); removed after
LOCK = ".sendit.lock"  # held while a command writes the folder
REPORT = "report"  # sendit report's output (index.html, figures, tables)
TRIALS = "trials.csv"  # sendit tune: one row per trial, either backend
STUDY_JOURNAL = "study.journal"  # sendit tune --backend optuna: the study (shared by --workers, kept for --resume)
RAY = "ray"  # sendit tune --backend ray: Ray Tune's experiment folders
CACHE = ".cache"  # sendit distill: the teacher's logits over the training set, by content hash
MODEL_MANIFEST = "sendit_model.json"  # in a model folder (RUN_DIR/<label>, an export): what it is and holds
STUDENT_BASE = "base"  # in a student's model folder: its initial weights (teacher layers), which it loads from
EVALUATION_MANIFEST = "evaluation.json"  # in an evaluate folder: the data file, the models, the precision
TEMPLATES = (RESULTS, EPOCH_LOGS, INFERENCE_SUMMARY, PREDICTIONS)


def model_folder_name(label: str, seed: int, first_seed: int) -> str:
    """A trained model's folder: the label for the run's first seed, `<label>-seed<seed>` for the others."""
    return label if seed == first_seed else f"{label}-seed{seed}"


def checkpoint_folder(run_dir: Path, label: str, seed: int) -> Path:
    return Path(run_dir) / CHECKPOINTS / f"{label}-seed{seed}"


def evaluation_folder_name(test_set: str) -> str:
    """`sendit evaluate`'s default folder inside the model folder, after the test set's name."""
    return "eval-" + re.sub(r"[^\w.-]", "_", test_set)


def name_of(path: Path, run_dir: Path) -> str | None:
    """Which of the names above a top-level entry of a run folder has (None: sendit did not write it). Method
    labels are the run.json's methods; model folders are the labels' (and their seeds')."""
    name = path.name
    fixed = {RUN_MANIFEST, CONFIG_FILE, CHECKPOINTS, LOCK, REPORT, TRIALS, STUDY_JOURNAL, RAY, CACHE}
    if name in fixed:
        return name
    manifest = read_manifest(run_dir)
    labels = [*manifest.get("methods", []), *(manifest.get("tuned") or {}),
              *(f"{m}-default" for m in (manifest.get("tuned") or {}))]
    for label in labels:
        if name in {model_folder_name(label, s, manifest["seeds"][0]) for s in manifest.get("seeds", [])} | {label}:
            return "model folder"
        if name in (t.format(method=label) for t in TEMPLATES):
            return name
    return None

# The study's columns first, in the study's order; the rest extend them.
COLUMNS = {
    RESULTS: ["best_val_f1", "val_accuracy", "runtime_sec", "memory_delta_mb", "method", "model", "seed",
              "best_epoch", "epochs_run", "peak_memory_mb", "process_peak_memory_mb", "trainable_params",
              "total_params", "trainable_pct", "saved_size_mb", "lr", "train_tweets_per_sec", "train_tokens_per_sec"],
    EPOCH_LOGS: ["epoch", "val_accuracy", "val_f1", "method", "seed", "train_loss", "val_loss", "lr",
                 "epoch_time_sec", "train_tweets_per_sec"],
    INFERENCE_SUMMARY: ["accuracy", "f1_macro", "f1_weighted", "inference_time_sec", "method", "seed", "test_set",
                        "n", "precision", "recall", "tweets_per_sec", "params", "model_size_mb"],
    PREDICTIONS: ["text", "label", "prediction", "prob_positive", "method", "seed", "test_set", "row_id"],
}


def current_umask() -> int:
    """The process's umask. os.umask can only be read by setting it, so it is set back at once, and read when a
    file is written rather than at import (where it would be a side effect, and stale if the caller changes it)."""
    mask = os.umask(0o077)
    os.umask(mask)
    return mask


def shareable(path: str | Path | int, folder: bool = False) -> None:
    """Give a file (a path or an open descriptor) or a folder the permissions open()/mkdir would have given it:
    mkstemp makes 0600, mkdtemp 0700, and transformers writes its weights 0600."""
    os.chmod(path, (0o777 if folder else 0o666) & ~current_umask())


def temp_beside(path: Path) -> tuple[int, str]:
    """An open temporary file in path's folder (the same file system, so os.replace into path is atomic), with
    the permissions of any other file written: (descriptor, name). `path` is where the write lands: pass
    `write_target(path)`, so that a symbolic link is written through rather than replaced."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        shareable(fd)
    except BaseException:
        os.close(fd)
        Path(tmp).unlink(missing_ok=True)
        raise
    return fd, tmp


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write via a temporary file in the same folder, synced and renamed into place, so a reader never sees a
    half-written file and a crash (or a full disk) leaves the old one. A symbolic link is written through."""
    path = write_target(path)
    fd, tmp = temp_beside(path)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_csv(df: pd.DataFrame, path: Path) -> None:
    atomic_write_text(path, df.to_csv(index=False))


def atomic_write_json(obj: dict, path: Path) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, default=str) + "\n")


def metrics_row(metrics: dict, seconds: float, tweets_per_sec: float, method: str, seed: int, test_set: str,
                **extra) -> dict:
    """One row of `{method}_inference_metrics_summary.csv`: a model's metrics on one test set and its inference
    speed; `extra` adds columns (model size for a trained method, dropped rows for an evaluated file)."""
    return {**{k: metrics[k] for k in ("accuracy", "f1_macro", "f1_weighted")}, "inference_time_sec": seconds,
            "method": method, "seed": seed, "test_set": test_set, "n": metrics["n"],
            "precision": metrics["precision"], "recall": metrics["recall"], "tweets_per_sec": tweets_per_sec,
            **extra}


def prediction_rows(texts: list[str], labels, preds, probs, method: str, seed: int, test_set: str,
                    classes: tuple[str, ...] = ("negative", "positive")) -> list[dict]:
    """The rows of `{method}_inference_predictions.csv` for one test set, one per tweet in the set's order: the
    class ids and, for the binary negative/positive classes, the study's `prob_positive`; for other classes one
    `prob_<name>` column per class (`probability_columns`)."""
    columns = probability_columns(classes)
    probs = probs[:, 1:] if len(columns) == 1 else probs
    return [{"text": t, "label": int(y), "prediction": int(pr), **{c: float(p) for c, p in zip(columns, pp)},
             "method": method, "seed": seed, "test_set": test_set, "row_id": i}
            for i, (t, y, pr, pp) in enumerate(zip(texts, labels, preds, probs))]


def probability_columns(classes: tuple[str, ...] | list[str]) -> list[str]:
    """The probability columns of a prediction file: `prob_positive` alone for the binary negative/positive
    classes (the study's column), else `prob_<name>` for every class."""
    if tuple(classes) == ("negative", "positive"):
        return ["prob_positive"]
    return [f"prob_{c}" for c in classes]


def _ordered(df: pd.DataFrame, template: str) -> pd.DataFrame:
    probs = [c for c in df.columns if str(c).startswith("prob_")]  # prob_positive's place: every class's, in order
    first = [x for c in COLUMNS[template] for x in (probs if c == "prob_positive" else [c]) if x in df.columns]
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


def mark(kind: str) -> dict:
    """What sendit writes into its own manifests (`run.json`, an export's `sendit_model.json`) so that
    `--overwrite` can tell its folders from anyone else's."""
    return {"kind": kind, "version": __version__}


def read_manifest(run_dir: Path) -> dict:
    """run.json as a dict ({} when there is none); a damaged one is a ConfigError that says so."""
    path = Path(run_dir) / RUN_MANIFEST
    if not path.exists():
        return {}
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path} is damaged (not valid JSON: {e}), so this run folder cannot be read or resumed. "
                          f"Start a new run with another --out (its CSV files and model folders are still usable)."
                          ) from None
    if not isinstance(manifest, dict):
        raise ConfigError(f"{path} is not a sendit run manifest (a JSON {type(manifest).__name__}, not an object). "
                          f"Pass another folder.")
    return manifest


def is_run_folder(folder: Path) -> bool:
    """True when folder's run.json was written by sendit: it carries the mark, or (run folders from before the
    mark) the `config` and `status` keys that every sendit run.json has."""
    try:
        manifest = read_manifest(folder)
    except (ConfigError, OSError):
        return False
    own = manifest.get("sendit")
    return (isinstance(own, dict) and own.get("kind") == "run") or {"config", "status"} <= manifest.keys()


def update_manifest(run_dir: Path, **fields) -> dict:
    manifest = read_manifest(run_dir)
    manifest.setdefault("sendit", mark("run"))
    for k, v in fields.items():
        if isinstance(v, dict) and isinstance(manifest.get(k), dict):
            manifest[k].update(v)
        else:
            manifest[k] = v
    atomic_write_json(manifest, Path(run_dir) / RUN_MANIFEST)
    return manifest


def start_manifest(run_dir: Path, config: dict, seeds: list[int], hardware: dict, data: dict,
                   config_file: dict | None = None, **fields) -> dict:
    """Open run.json with what every run folder records (the resolved config, seeds, package versions, git commit,
    hardware, data split, start time and a status per method and seed) and write the config beside it as
    config.yaml, the file `--config` reads back (`config_file` when that file holds more, e.g. a `tune:` section).
    A resumed run keeps its start time and status. `fields` are the caller's own keys (methods, method_info),
    stored after the config."""
    started = read_manifest(run_dir).get("started", datetime.now().isoformat(timespec="seconds"))
    manifest = update_manifest(run_dir, config=config, **fields, seeds=seeds, versions=versions(),
                               git_commit=git_commit(), hardware=hardware, data=data, started=started, status={})
    atomic_write_text(Path(run_dir) / CONFIG_FILE, yaml.safe_dump(config_file or config, sort_keys=False))
    return manifest


def holder_of(folder: Path, sources: dict[str, str | Path | None]) -> str | None:
    """'the --data file X' when one of the sources (flag -> path) is folder or lies inside it, else None: such a
    folder is never deleted."""
    inside = Path(folder).resolve()
    for flag, source in sources.items():
        if source and Path(source).exists():
            path = Path(source).resolve()
            if path == inside or path.is_relative_to(inside):
                return f"{flag} {source}"
    return None


# ------------------------------------------------------------------------------------------------ one writer


@contextmanager
def writing(run_dir: Path) -> Iterator[Path]:
    """Hold the run folder's lock while a run, a resume or a distillation writes it.

    A second writer is refused with a ConfigError naming the process that holds the lock. The lock is an
    `fcntl.flock` on `RUN_DIR/.sendit.lock`, which the kernel drops when its process dies, so the lock of a killed
    run is simply taken over. Ctrl-C and file-system errors inside come out as RunInterrupted / RunStopped, which
    say where the finished work is."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    fd = _lock(run_dir / LOCK)
    try:
        yield run_dir
    except KeyboardInterrupt:
        raise RunInterrupted(run_dir) from None
    except OSError as e:
        raise RunStopped(run_dir, e) from e
    except Exception as e:  # a full disk as safetensors, torch or tokenizers report it
        full = as_write_error(e)
        if full is None:
            raise
        raise RunStopped(run_dir, full) from e
    finally:
        Path(run_dir / LOCK).unlink(missing_ok=True)  # still held here: nobody else can be using this file
        os.close(fd)


def _lock(path: Path) -> int:
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 4096, 0).decode("utf-8", "replace").split("\n")
            os.close(fd)
            pid, command = (holder + [""])[:2]
            raise ConfigError(
                f"run folder '{path.parent}' is being written by another sendit process (PID {pid or 'unknown'}"
                f"{': ' + command if command else ''}); a run folder takes one writer at a time. Wait for it to "
                f"finish, stop it (kill {pid or 'PID'}), or pass another --out.") from None
        try:  # the previous holder may have deleted the file between our open and our lock: lock the new one
            same = os.path.samestat(os.fstat(fd), os.stat(path))
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n{' '.join(['sendit', *sys.argv[1:]])}\n".encode(), 0)
    return fd


def clear_run_folder(run_dir: Path) -> None:
    """Empty a run folder that `--overwrite` may replace (checked by the caller), keeping the lock held on it."""
    for entry in Path(run_dir).iterdir():
        if entry.name == LOCK:
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()
