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

SUFFIXES = {
    "results": "_results.csv",
    "epochs": "_epoch_logs.csv",
    "metrics": "_inference_metrics_summary.csv",
    "predictions": "_inference_predictions.csv",
}
# Display order of the known methods (cheapest to most expensive); others follow alphabetically.
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


def _read_csv(path: Path) -> pd.DataFrame:
    df = pd.read_csv(path)
    return df.drop(columns=[c for c in df.columns if str(c).startswith("Unnamed")])


def _sort_key(method: str) -> tuple[int, int, str]:
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


def _method_files(run_dir: Path) -> list[str]:
    names = sorted(p.name[: -len(SUFFIXES["results"])] for p in run_dir.glob("*_results.csv"))
    return sorted(names, key=_sort_key)


def load_runs(run_dirs: list[Path | str]) -> RunData:
    """Read one or more run folders.

    Args:
        run_dirs: run folders, each holding at least one `{method}_results.csv`.

    Raises:
        FileNotFoundError: a folder does not exist.
        ValueError: a folder holds no `*_results.csv`, or no folder was given.
    """
    if not run_dirs:
        raise ValueError("give at least one run folder")
    dirs = [Path(d) for d in run_dirs]
    runs: list[tuple[str, Path, list[str]]] = []
    seen_names: set[str] = set()
    for d in dirs:
        if not d.is_dir():
            raise FileNotFoundError(f"run folder {d} does not exist")
        methods = _method_files(d)
        if not methods:
            raise ValueError(f"{d} holds no *_results.csv file: not a run folder")
        name = d.resolve().name
        base, i = name, 2
        while name in seen_names:
            name, i = f"{base}#{i}", i + 1
        seen_names.add(name)
        runs.append((name, d, methods))

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
        manifest_path = d / "run.json"
        if manifest_path.is_file():
            try:
                manifests[run] = json.loads(manifest_path.read_text(encoding="utf-8"))
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                notes.append(f"{run}: run.json unreadable ({e}) — configuration not shown.")
        else:
            notes.append(f"{run}: no run.json — configuration, hardware and versions not recorded.")
        if (d / "config.yaml").is_file():
            configs[run] = (d / "config.yaml").read_text(encoding="utf-8", errors="replace")
        for m in methods:
            name = f"{run}/{m}" if count[m] > 1 else m
            names.append(name)
            for kind, suffix in SUFFIXES.items():
                path = d / f"{m}{suffix}"
                if not path.is_file():
                    if kind != "results":
                        missing[f"no `{m}{suffix}`"].append(name)
                    continue
                df = _add_keys(kind, _read_csv(path), missing, name)
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
