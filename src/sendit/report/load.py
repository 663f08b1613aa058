"""Read run folders (docs/run-folder.md) into tidy pandas frames.

Every frame gets `run`, `method` and `name` columns (name = method, or `run/method` when the same
method appears in several run folders) plus the keys the study's CSVs lacked: `seed` (0 when absent),
`test_set` ("test" when absent) and `row_id` (position in the test set when absent). What is missing is
recorded in `RunData.notes`, never raised.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from sendit.config.schema import EMBEDDED_TEST_NAME, HELDOUT_NAME, DataConfig, test_set_name
from sendit.report.files import pretty
from sendit.run.folder import (
    CONFIG_FILE,
    EPOCH_LOGS,
    EVALUATION_MANIFEST,
    INFERENCE_SUMMARY,
    PREDICTIONS,
    RESULTS,
    RUN_MANIFEST,
)

SUFFIXES = {kind: template.format(method="") for kind, template in (
    ("results", RESULTS), ("epochs", EPOCH_LOGS), ("metrics", INFERENCE_SUMMARY), ("predictions", PREDICTIONS))}
# What `sendit evaluate` writes next to the CSVs (an evaluation folder has no run.json and no results CSVs).
# Report order of the built-in methods in run folders written before run.json recorded each method's own
# `cost_rank` (cheapest to most expensive); others follow alphabetically.
METHOD_ORDER = ["head", "bitfit", "ia3", "lora", "dora", "full"]


@dataclass
class RunData:
    """Everything the report needs, concatenated over run folders."""

    results: pd.DataFrame
    epochs: pd.DataFrame
    metrics: pd.DataFrame
    predictions: pd.DataFrame
    names: list[str]
    manifests: dict[str, dict] = field(default_factory=dict)
    configs: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    # What run.json records of each method (display_name, cost_rank, is_adapter), merged over the folders.
    method_info: dict[str, dict] = field(default_factory=dict)

    def pretty(self, label: str) -> str:
        """Display name of a method label (`run/method` keeps its run prefix), as these run folders record it."""
        return pretty(label, self.method_info)

    def has(self, frame: str, column: str) -> bool:
        """True when `column` exists in `frame` and holds at least one value."""
        df = getattr(self, frame)
        return column in df.columns and bool(df[column].notna().any())

    def note(self, text: str) -> None:
        if text not in self.notes:
            self.notes.append(text)

    @property
    def multi_seed(self) -> bool:
        return bool((self.results.groupby("name")["seed"].nunique() > 1).any())


# Columns that hold numbers in each kind of CSV (docs/run-folder.md); a word in one is a damaged or hand-edited file.
NUMERIC = {
    "results": ["best_val_f1", "val_accuracy", "runtime_sec", "memory_delta_mb", "seed", "best_epoch", "epochs_run",
                "peak_memory_mb", "trainable_params", "total_params", "trainable_pct", "saved_size_mb", "lr",
                "train_tweets_per_sec", "train_tokens_per_sec"],
    "epochs": ["epoch", "val_accuracy", "val_f1", "seed", "train_loss", "val_loss", "lr", "epoch_time_sec"],
    "metrics": ["accuracy", "f1_macro", "f1_weighted", "inference_time_sec", "seed", "n", "precision", "recall",
                "tweets_per_sec", "params", "model_size_mb"],
    "predictions": ["prob_positive", "seed", "row_id"],
}


def _read_csv(path: Path, kind: str | None = None) -> pd.DataFrame:
    """A run folder's CSV; a file that is not CSV, or text in a number column, is a ValueError naming the file,
    the column, the line and the value."""
    try:
        df = pd.read_csv(path)
    except ValueError as e:  # pandas' ParserError and EmptyDataError, UnicodeDecodeError
        raise ValueError(f"{path} is not a readable CSV file ({' '.join(str(e).split())}). Restore it from "
                         f"the run, or leave that run folder out of the report.") from None
    df = df.drop(columns=[c for c in df.columns if str(c).startswith("Unnamed")])
    for column in NUMERIC.get(kind, []) if kind else []:
        if column in df.columns:
            numbers = pd.to_numeric(df[column], errors="coerce")
            bad = numbers.isna() & df[column].notna()
            if bad.any():
                row = int(bad.to_numpy().nonzero()[0][0])
                raise ValueError(f"{path}, line {row + 2}: column '{column}' holds {str(df[column].iloc[row])!r}, "
                                 f"not a number. Fix the value (or the file), or leave that run folder out of the "
                                 f"report.")
            df[column] = numbers
    return df


def _sort_key(method: str, info: dict[str, dict]) -> tuple[int, float, str]:
    rank = info.get(method, {}).get("cost_rank")
    if isinstance(rank, (int, float)):
        return (0, rank, method)
    if method in METHOD_ORDER:
        return (0, METHOD_ORDER.index(method), method)
    return (1 if not method.startswith("distill") else 2, 0, method)


def _add_keys(kind: str, df: pd.DataFrame, missing: dict[str, list[str]], who: str) -> pd.DataFrame:
    """Fill the key columns a study-only CSV lacks, remembering which were filled."""
    df = df.copy()
    if "seed" not in df.columns:
        if kind == "epochs" and "epoch" in df.columns and len(df):
            # Several seeds without a seed column: a new seed starts where the epoch number drops.
            df["seed"] = (df["epoch"].diff().fillna(1) <= 0).cumsum().astype(int)
        elif kind == "results" and len(df) > 1:
            df["seed"] = range(len(df))
        else:
            df["seed"] = 0
        missing["no `seed` column — treated as seed 0 (one row per seed in file order)"].append(who)
    if kind in ("metrics", "predictions") and "test_set" not in df.columns:
        if kind == "metrics" and len(df) > 1:
            df["test_set"] = ["test"] + [f"test_{i + 1}" for i in range(1, len(df))]
        else:
            df["test_set"] = "test"
        missing["no `test_set` column — test set named 'test'"].append(who)
    if kind == "predictions" and "row_id" not in df.columns:
        df["row_id"] = df.groupby(["seed", "test_set"]).cumcount()
        missing["no `row_id` column — row_id is the row's position"].append(who)
    return df


def _method_info(run_dir: Path) -> dict[str, dict]:
    """What run.json records of each method (display name, report order), or nothing."""
    try:
        info = json.loads((run_dir / RUN_MANIFEST).read_text(encoding="utf-8")).get("method_info")
    except (OSError, ValueError, AttributeError):
        return {}
    return {k: v for k, v in info.items() if isinstance(v, dict)} if isinstance(info, dict) else {}


def _method_files(run_dir: Path, info: dict[str, dict]) -> list[str]:
    """The methods of a run folder (`*_results.csv`) or of an evaluation folder, which holds only the test
    CSVs (`*_inference_metrics_summary.csv`), in report order (`info`'s cost ranks)."""
    names = {p.name[: -len(SUFFIXES["results"])] for p in run_dir.glob("*" + SUFFIXES["results"])}
    if not names:
        names = {p.name[: -len(SUFFIXES["metrics"])] for p in run_dir.glob("*" + SUFFIXES["metrics"])}
    return sorted(names, key=lambda m: _sort_key(m, info))


def _find_runs(run_dirs: list[Path | str], info: dict[str, dict]) -> list[tuple[str, Path, list[str]]]:
    """(unique name, folder, methods) of each folder, in the order given; what each folder's run.json records of
    its methods is merged into `info` (a later folder's entry wins)."""
    if not run_dirs:
        raise ValueError("give at least one run folder")
    dirs = [Path(d) for d in run_dirs]
    runs: list[tuple[str, Path, list[str]]] = []
    seen_names: set[str] = set()
    for d in dirs:
        if not d.is_dir():
            raise FileNotFoundError(f"run folder {d} does not exist")
        info.update(_method_info(d))
        methods = _method_files(d, info)
        if not methods:
            raise ValueError(f"{d} holds no *_results.csv or *_inference_metrics_summary.csv file: not a run folder "
                             f"(sendit run) or an evaluation folder (sendit evaluate --out)")
        name = d.resolve().name
        base, i = name, 2
        while name in seen_names:
            name, i = f"{base}#{i}", i + 1
        seen_names.add(name)
        runs.append((name, d, methods))
    return runs


def _read_manifest(run: str, d: Path, manifests: dict[str, dict], notes: list[str]) -> Path:
    """Read the folder's run.json (or evaluation.json) into `manifests`; returns its path."""
    manifest_path = d / RUN_MANIFEST
    if not manifest_path.is_file() and (d / EVALUATION_MANIFEST).is_file():
        manifest_path = d / EVALUATION_MANIFEST
    if manifest_path.is_file():
        try:
            manifests[run] = json.loads(manifest_path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            notes.append(f"{run}: run.json unreadable ({e}) — configuration not shown.")
    else:
        notes.append(f"{run}: no run.json — configuration, hardware and versions not recorded.")
    return manifest_path


def load_runs(run_dirs: list[Path | str]) -> RunData:
    """Read one or more run folders.

    Args:
        run_dirs: run folders, each holding at least one `{method}_results.csv`.

    Raises:
        FileNotFoundError: a folder does not exist.
        ValueError: a folder holds no `*_results.csv`, or no folder was given.
    """
    method_info: dict[str, dict] = {}
    runs = _find_runs(run_dirs, method_info)
    count = defaultdict(int)
    for _, _, methods in runs:
        for m in methods:
            count[m] += 1

    frames: dict[str, list[pd.DataFrame]] = {k: [] for k in SUFFIXES}
    missing: dict[str, list[str]] = defaultdict(list)
    notes: list[str] = []
    names: list[str] = []
    manifests: dict[str, dict] = {}
    configs: dict[str, str] = {}
    for run, d, methods in runs:
        manifest_path = _read_manifest(run, d, manifests, notes)
        if (d / CONFIG_FILE).is_file():
            configs[run] = (d / CONFIG_FILE).read_text(encoding="utf-8", errors="replace")
        for m in methods:
            name = f"{run}/{m}" if count[m] > 1 else m
            names.append(name)
            for kind, suffix in SUFFIXES.items():
                path = d / f"{m}{suffix}"
                if not path.is_file():
                    if kind != "results" and not manifest_path.name == EVALUATION_MANIFEST:
                        missing[f"no `{m}{suffix}`"].append(name)
                    continue
                df = _add_keys(kind, _read_csv(path, kind), missing, name)
                if "test_set" in df.columns:
                    df["test_set"] = df["test_set"].replace(_legacy_test_names(manifests.get(run, {})))
                df["run"], df["method"], df["name"] = run, m, name
                frames[kind].append(df)
        status = manifests.get(run, {}).get("status", {})
        for m, s in status.items() if isinstance(status, dict) else []:
            if str(s) != "done":
                notes.append(f"{run}: method {m} status: {s}.")

    for text, who in missing.items():
        notes.append(f"{', '.join(dict.fromkeys(who))}: {text}.")
    data = RunData(
        **{k: pd.concat(v, ignore_index=True) if v else pd.DataFrame() for k, v in frames.items()},
        names=names,
        manifests=manifests,
        configs=configs,
        notes=notes,
        method_info=method_info,
    )
    for kind in SUFFIXES:
        df = getattr(data, kind)
        if df.empty:
            setattr(data, kind, pd.DataFrame(columns=["run", "method", "name", "seed"]))
    _normalise_labels(data)
    if data.has("results", "trainable_params") and data.has("results", "total_params"):
        r = data.results
        computed = 100.0 * r["trainable_params"] / r["total_params"]
        r["trainable_pct"] = (
            r["trainable_pct"].fillna(computed) if "trainable_pct" in r else computed
        )
    return data


def _legacy_test_names(manifest: dict) -> dict[str, str]:
    """Older run folders called the --test-file test set "manual" whatever the file was, and the held-out split
    "heldout": name them after what they are, as newer runs do."""
    data = (manifest.get("config") or {}).get("data") or {}
    try:
        manual = test_set_name(DataConfig(test_file=data.get("test_file", "embedded")))
    except (TypeError, ValueError):
        manual = None
    return {"manual": manual or EMBEDDED_TEST_NAME, "heldout": HELDOUT_NAME}


_LABEL_NAMES = {"negative": 0, "neg": 0, "positive": 1, "pos": 1}


def _normalise_labels(data: RunData) -> None:
    """Labels and predictions as 0/1 integers; rows whose class cannot be read are dropped."""
    p = data.predictions
    if p.empty or not {"label", "prediction"} <= set(p.columns):
        return
    for col in ("label", "prediction"):
        named = p[col].map(lambda v: _LABEL_NAMES.get(str(v).strip().lower(), v))
        p[col] = pd.to_numeric(named, errors="coerce")
    bad = p["label"].isna() | p["prediction"].isna()
    if bad.any():
        who = ", ".join(dict.fromkeys(p.loc[bad, "name"]))
        data.note(f"{who}: {int(bad.sum())} prediction rows without a readable 0/1 label dropped.")
    data.predictions = p.loc[~bad].astype({"label": int, "prediction": int}).reset_index(drop=True)
