"""Tables as raw numbers (CSV) and formatted text (Markdown, LaTeX booktabs, HTML).

With several seeds per method a cell shows mean ± std (sample std, ddof=1) and the CSV holds `{col}`
(the mean) and `{col}_std`; with one seed the CSV value is the run folder's value unchanged.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from sendit.report.files import atomic_write_text
from sendit.report.load import RunData
from sendit.report.stats import format_p

# column → (header, number format kind)
COLUMNS = {
    "n": ("n", "count"),
    "best_val_f1": ("Best val F1", "metric"),
    "val_accuracy": ("Val acc. (best epoch)", "metric"),
    "runtime_sec": ("Runtime (s)", "sec"),
    "memory_delta_mb": ("Memory Δ (MB)", "mb"),
    "peak_memory_mb": ("Peak memory (MB)", "mb"),
    "trainable_params": ("Trainable params", "count"),
    "trainable_pct": ("Trainable %", "pct"),
    "saved_size_mb": ("Saved size", "size"),
    "train_tweets_per_sec": ("Train tweets/s", "rate"),
    "accuracy": ("Accuracy", "metric"),
    "f1_macro": ("F1 macro", "metric"),
    "f1_weighted": ("F1 weighted", "metric"),
    "inference_time_sec": ("Inference time (s)", "sec"),
    "tweets_per_sec": ("Tweets/s", "rate"),
    "params": ("Params", "count"),
    "model_size_mb": ("Model size", "size"),
}
VALIDATION_COLUMNS = [
    "best_val_f1",
    "val_accuracy",
    "runtime_sec",
    "memory_delta_mb",
    "peak_memory_mb",
    "trainable_params",
    "trainable_pct",
    "saved_size_mb",
    "train_tweets_per_sec",
]
TEST_COLUMNS = [
    "n",
    "accuracy",
    "f1_macro",
    "f1_weighted",
    "inference_time_sec",
    "tweets_per_sec",
    # What each method trained and saved, from the results CSV: the merged inference model (`params`,
    # `model_size_mb` in the metrics CSV) is the same size for every method of a base model.
    "trainable_params",
    "saved_size_mb",
]
_FORMATS = {
    "metric": "{:.4f}",
    "sec": "{:.2f}",
    "mb": "{:.1f}",
    "count": "{:,.0f}",
    "rate": "{:.1f}",
}


@dataclass
class Table:
    """One table: `raw` numbers for the CSV, `shown` strings for Markdown/LaTeX/HTML."""

    key: str
    title: str
    raw: pd.DataFrame
    shown: pd.DataFrame


def fmt(kind: str, value: float, std: float | None = None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if kind == "size":  # MB, or KB below 0.1 MB (a head-only model saves a few KB, not "0.0 MB")
        unit, scale = ("KB", 1024) if abs(value) < 0.1 else ("MB", 1)
        return fmt("mb", value * scale, None if std is None else std * scale) + f" {unit}"
    pattern = "{:.3g}" if kind == "pct" else _FORMATS.get(kind, "{}")
    text = pattern.format(value)
    if std is not None and not (isinstance(std, float) and math.isnan(std)) and std != 0:
        text += " ± " + pattern.format(std)
    return text


def _summarise(
    df: pd.DataFrame, keys: list[str], columns: list[str], data: RunData
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Mean (and std over seeds) of `columns` per `keys`; returns (raw, shown)."""
    columns = [c for c in columns if c in df.columns and df[c].notna().any()]
    df = df.copy()
    for c in columns:
        df[c] = pd.to_numeric(df[c], errors="coerce")
    grouped = df.groupby(keys, sort=False)
    seeds = grouped["seed"].nunique().rename("seeds")
    mean = grouped[columns].mean()
    std = grouped[columns].std(ddof=1)
    multi = bool((seeds > 1).any())
    raw = pd.concat([seeds, mean], axis=1)
    if multi:
        raw = pd.concat([raw, std.add_suffix("_std")], axis=1)
    raw = raw.reset_index()
    # Methods in report order; other keys (the test set) in order of first appearance (manual first).
    raw["_rank"] = raw["name"].map({n: i for i, n in enumerate(data.names)})
    raw = raw.sort_values("_rank", kind="stable").drop(columns="_rank").reset_index(drop=True)
    raw.insert(0, "method", raw["name"].map(data.pretty))

    shown = pd.DataFrame({"Method": raw["method"]})
    if "test_set" in keys:
        shown["Test set"] = raw["test_set"].astype(str)
    if multi:
        shown["Seeds"] = raw["seeds"].astype(str)
    for c in columns:
        header, kind = COLUMNS[c]
        use_std = multi & (raw["seeds"] > 1)
        shown[header] = [
            fmt(kind, m, s if u else None)
            for m, s, u in zip(raw[c], raw.get(f"{c}_std", np.nan * raw[c]), use_std)
        ]
    return raw, shown


def validation_table(data: RunData) -> Table | None:
    if data.results.empty:
        return None
    raw, shown = _summarise(data.results, ["name"], VALIDATION_COLUMNS, data)
    return Table("validation", "Final validation results", raw, shown)


def test_table(data: RunData) -> Table | None:
    if data.metrics.empty:
        return None
    metrics = data.metrics.drop(columns=["trainable_params", "saved_size_mb"], errors="ignore")
    trained = [c for c in ("trainable_params", "saved_size_mb") if data.has("results", c)]
    if trained:
        metrics = metrics.merge(data.results[["name", "seed", *trained]], on=["name", "seed"], how="left")
    raw, shown = _summarise(metrics, ["name", "test_set"], TEST_COLUMNS, data)
    return Table("test", "Test results", raw, shown)


def ci_table(ci: pd.DataFrame, data: RunData) -> Table | None:
    if ci.empty:
        return None
    shown = pd.DataFrame({"Method": ci["method"].map(data.pretty), "Test set": ci["test_set"]})
    if data.multi_seed:
        shown["Seed"] = ci["seed"].astype(str)
    shown["n"] = ci["n"].map(lambda v: fmt("count", v))
    for m, header in (("accuracy", "Accuracy"), ("f1_macro", "F1 macro")):
        shown[f"{header} [95% CI]"] = [
            f"{v:.4f} [{lo:.4f}, {hi:.4f}]"
            for v, lo, hi in zip(ci[m], ci[f"{m}_lo"], ci[f"{m}_hi"])
        ]
    return Table("test_ci", "Test metrics with 95% bootstrap confidence intervals", ci, shown)


def pairs_table(pairs: pd.DataFrame, data: RunData, across_seeds: bool = False) -> Table | None:
    if pairs.empty:
        return None
    pairs = pairs.drop(columns=["comparison"], errors="ignore")
    shown = pd.DataFrame({"Test set": pairs["test_set"]})
    shown["Seeds" if across_seeds else "Seed"] = pairs["seeds" if across_seeds else "seed"].astype(
        str
    )
    shown["A"] = pairs["a"].map(data.pretty)
    shown["B"] = pairs["b"].map(data.pretty)
    shown["A − B (points)"] = pairs["diff_points"].map(lambda v: f"{v:.2f}")
    shown["95% CI"] = [f"[{lo:.2f}, {hi:.2f}]" for lo, hi in zip(pairs["ci_lo"], pairs["ci_hi"])]
    shown["df"] = pairs["df"].map(lambda v: f"{v:.1f}")
    shown["p"] = pairs["p"].map(format_p)
    shown["p (Holm)"] = pairs["p_holm"].map(format_p)
    if across_seeds:  # rows and seeds crossed (report/stats.py): a verdict about the methods
        shown["Seed-to-seed sd of A − B"] = pairs["seed_sd_points"].map(lambda v: f"{v:.2f}")
        return Table("comparisons_across_seeds", "Pairwise comparisons of the methods across seeds (test rows and "
                     "seeds both random; Holm-corrected)", pairs, shown)
    shown["Only A right"] = pairs["b_only_a"].astype(str)
    shown["Only B right"] = pairs["c_only_b"].astype(str)
    shown["McNemar p"] = pairs["mcnemar_p"].map(format_p)
    return Table("comparisons", "Pairwise comparisons of these trained models (same test rows, same seed; "
                 "Holm-corrected)", pairs, shown)


def distillation_names(data: RunData) -> list[str]:
    r = data.results
    cols = [c for c in ("student_layers", "teacher") if c in r.columns]
    if not cols:
        return []
    names = r.loc[r[cols].notna().any(axis=1), "name"]
    return [n for n in data.names if n in set(names)]


def teacher_of(data: RunData, student: str) -> str | None:
    """The name of the student's teacher method (from `teacher_method`), when it is in the report."""
    if "teacher_method" not in data.results.columns:
        return None
    rows = data.results[data.results["name"] == student]
    teachers = rows["teacher_method"].dropna().astype(str).unique()
    if len(teachers) == 0:
        return None
    run = rows["run"].iloc[0]
    for candidate in (f"{run}/{teachers[0]}", teachers[0]):
        if candidate in data.names:
            return candidate
    return None


def retention_table(data: RunData) -> Table | None:
    students = distillation_names(data)
    if not students or data.metrics.empty:
        return None
    m = data.metrics.copy()
    for c in ("accuracy", "tweets_per_sec", "inference_time_sec", "params", "model_size_mb"):
        m[c] = pd.to_numeric(m[c], errors="coerce") if c in m.columns else np.nan
    means = m.groupby(["name", "test_set"], sort=False)[
        ["accuracy", "tweets_per_sec", "inference_time_sec", "params", "model_size_mb"]
    ].mean()
    layers = (
        data.results.groupby("name")["student_layers"].first()
        if data.has("results", "student_layers")
        else pd.Series(dtype=float)
    )
    rows = []
    for s in students:
        t = teacher_of(data, s)
        if t is None:
            data.note(
                f"{s}: teacher not identified (no `teacher_method`) — retention not computed."
            )
            continue
        for ts in m.loc[m["name"] == s, "test_set"].unique():
            if (s, ts) not in means.index or (t, ts) not in means.index:
                continue
            sv, tv = means.loc[(s, ts)], means.loc[(t, ts)]
            speed = sv["tweets_per_sec"] / tv["tweets_per_sec"]
            if not np.isfinite(speed):
                speed = tv["inference_time_sec"] / sv["inference_time_sec"]
            rows.append(
                {
                    "method": data.pretty(s),
                    "name": s,
                    "teacher": t,
                    "test_set": ts,
                    "student_layers": layers.get(s, np.nan),
                    "params": sv["params"],
                    "model_size_mb": sv["model_size_mb"],
                    "accuracy": sv["accuracy"],
                    "teacher_accuracy": tv["accuracy"],
                    "retention_pct": 100 * sv["accuracy"] / tv["accuracy"],
                    "speedup": speed,
                }
            )
    if not rows:
        return None
    raw = pd.DataFrame(rows)
    shown = pd.DataFrame(
        {
            "Student": raw["method"],
            "Teacher": raw["teacher"].map(data.pretty),
            "Test set": raw["test_set"],
            "Layers": raw["student_layers"].map(lambda v: fmt("count", v)),
            "Params": raw["params"].map(lambda v: fmt("count", v)),
            "Size": raw["model_size_mb"].map(lambda v: fmt("size", v)),
            "Accuracy": raw["accuracy"].map(lambda v: fmt("metric", v)),
            "Retention (% of teacher)": raw["retention_pct"].map(lambda v: fmt("mb", v)),
            "Speed-up (×)": raw["speedup"].map(lambda v: fmt("mb", v) if np.isfinite(v) else "–"),
        }
    )
    return Table(
        "distillation", "Distillation: accuracy retained and speed-up vs teacher", raw, shown
    )


def to_markdown(t: Table) -> str:
    df = t.shown

    def cell(v: object) -> str:
        return str(v).replace("|", r"\|").replace("\n", " ")

    lines = ["| " + " | ".join(cell(c) for c in df.columns) + " |"]
    lines.append("|" + "|".join(":---" if i < 1 else "---:" for i in range(len(df.columns))) + "|")
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines) + "\n"


_LATEX_SPECIAL = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "±": r"$\pm$",
    "³": r"$^3$",
    "−": r"$-$",
    "–": "--",
    "Δ": r"$\Delta$",
    "×": r"$\times$",
}


def latex_escape(text: object) -> str:
    return "".join(_LATEX_SPECIAL.get(ch, ch) for ch in str(text))


# A column of a two-column paper is about 8.5 cm = 241 pt: some 54 characters of \small (9 pt) table text.
LATEX_WIDTH = 54
# Columns that name a row; each part of a split table repeats them.
KEY_HEADERS = ("Method", "Student", "Teacher", "Test set", "Seeds", "Seed", "A", "B")


def latex_parts(df: pd.DataFrame, width: int = LATEX_WIDTH) -> list[pd.DataFrame]:
    """The table cut into column groups that each fit `width` characters, the row-naming columns in every
    group: a wide table becomes several narrow ones, stacked, instead of running past the column."""
    keys = [c for c in df.columns if c in KEY_HEADERS]
    values = [c for c in df.columns if c not in keys]

    def chars(col: str) -> int:
        return max([len(str(col))] + [len(str(v)) for v in df[col]]) + 2  # + the space between columns

    parts, current, used = [], [], sum(chars(c) for c in keys)
    for col in values:
        if current and used + chars(col) > width:
            parts.append(current)
            current, used = [], sum(chars(c) for c in keys)
        current.append(col)
        used += chars(col)
    parts.append(current)
    return [df[keys + part] for part in parts]


def to_latex(t: Table) -> str:
    """booktabs LaTeX that fits a paper column: test sets become row groups instead of a column, and a table
    still too wide is split into stacked tabulars (latex_parts)."""
    df, groups = t.shown, None
    if "Test set" in df.columns and df["Test set"].nunique() > 1:
        first = {ts: i for i, ts in enumerate(dict.fromkeys(df["Test set"]))}
        df = df.iloc[sorted(range(len(df)), key=lambda i: first[df["Test set"].iloc[i]])]
        groups, df = df["Test set"].tolist(), df.drop(columns="Test set")
    lines = [
        r"% requires \usepackage{booktabs}",
        r"\begin{table}[t]",
        r"\centering",
        r"\small",
        r"\setlength{\tabcolsep}{3pt}",
        rf"\caption{{{latex_escape(t.title)}}}",
        rf"\label{{tab:{t.key}}}",
    ]
    for i, part in enumerate(latex_parts(df)):
        keys = sum(c in KEY_HEADERS for c in part.columns)
        lines += [r"\medskip"] if i else []
        lines += [
            rf"\begin{{tabular}}{{{'l' * keys + 'r' * (len(part.columns) - keys)}}}",
            r"\toprule",
            " & ".join(latex_escape(c) for c in part.columns) + r" \\",
            r"\midrule",
        ]
        for j, row in enumerate(part.itertuples(index=False)):
            if groups is not None and (j == 0 or groups[j] != groups[j - 1]):
                lines += [r"\addlinespace"] if j else []
                lines.append(rf"\multicolumn{{{len(part.columns)}}}{{l}}{{\emph{{{latex_escape(groups[j])}}}}} \\")
            lines.append(" & ".join(latex_escape(v) for v in row) + r" \\")
        lines += [r"\bottomrule", r"\end{tabular}", ""]
    lines += [r"\end{table}"]
    return "\n".join(lines) + "\n"


def write_table(t: Table, folder: Path) -> list[Path]:
    paths = [folder / f"{t.key}.{ext}" for ext in ("csv", "md", "tex")]
    atomic_write_text(paths[0], t.raw.to_csv(index=False))
    atomic_write_text(paths[1], f"**{t.title}**\n\n" + to_markdown(t))
    atomic_write_text(paths[2], to_latex(t))
    return paths


def build_tables(data: RunData, stats: dict[str, pd.DataFrame]) -> list[Table]:
    """All tables the data allows, in page order (the per-class tables, report/classes.py, follow them)."""
    tables = [
        validation_table(data),
        test_table(data),
        ci_table(stats["metric_ci"], data),
        pairs_table(stats["pairs"], data),
        pairs_table(stats["seed_pairs"], data, across_seeds=True),
        retention_table(data),
    ]
    return [t for t in tables if t is not None]
