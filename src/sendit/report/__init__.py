"""`sendit report`: figures, tables and statistics from run folders — files in, files out, no torch.

build_report(["runs/2024-06-01"])  # → runs/2024-06-01/report/index.html, report.md, ...
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Callable

import matplotlib
import numpy as np
import pandas as pd

from sendit.report.classes import class_tables
from sendit.report.figures import build_figures
from sendit.report.files import atomic_write_text
from sendit.report.html import Page, console_lines, render_html, render_markdown
from sendit.report.load import RunData, load_runs
from sendit.report.recommend import build_recommendation, expected_max_figure
from sendit.report.stats import ACROSS_SEEDS_METHOD, HOLM_METHOD, ONE_SEED_METHOD, StatsConfig, compute_stats
from sendit.report.style import RC
from sendit.report.tables import build_tables, write_table
from sendit.run.folder import REPORT

__all__ = ["RunData", "StatsConfig", "build_report", "load_runs", "main_report", "report_run"]


def _jsonable(x: object) -> object:
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.generic):
        x = x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def _records(df: pd.DataFrame) -> list[dict]:
    df = df.drop(columns=["comparison"], errors="ignore")  # the Comparison objects: their numbers are columns
    return _jsonable(df.to_dict(orient="records")) if not df.empty else []


def build_report(
    run_dirs: list[Path | str],
    out: Path | str | None = None,
    *,
    n_boot: int = 2000,
    seed: int = 0,
    dpi: int = 300,
    margin: float | None = None,
    log: Callable[[str], None] | None = None,
) -> Path:
    """Write the report (index.html, report.md, stats.json, figures/, tables/) for run folders.

    Args:
        run_dirs: one or more run folders (or folders holding only the study's eight CSV files).
        out: report folder; default `<first run dir>/report`.
        n_boot: bootstrap resamples for every confidence interval.
        seed: seed of the bootstrap generator.
        dpi: resolution of the PNG figures.
        margin: the recommendation's non-inferiority margin in accuracy points (default: the sweep's, else 1).
        log: where the verdicts and the recommendation are also said (the console of run, tune and report).

    Returns:
        The report folder.
    """
    data = load_runs(run_dirs)
    out = Path(out) if out is not None else Path(run_dirs[0]) / REPORT
    (out / "figures").mkdir(parents=True, exist_ok=True)
    (out / "tables").mkdir(parents=True, exist_ok=True)

    cfg = StatsConfig(n_boot=n_boot, seed=seed)
    stats = compute_stats(data, cfg)
    rec = build_recommendation(data, stats, run_dirs, cfg.alpha, margin=margin)
    tables = build_tables(data, stats) + [t for t in class_tables(data) if t is not None] + rec.tables
    for t in tables:
        write_table(t, out / "tables")
    figures = build_figures(data, out / "figures", dpi=dpi)
    if not rec.curves.empty:
        with matplotlib.rc_context(RC):
            figures.append(expected_max_figure(rec.curves, data, out / "figures", dpi))

    page = Page(data=data, tables=tables, figures=figures, stats=stats, cfg=cfg, recommendation=rec.sentence)
    summary = {
        "settings": {
            "n_boot": n_boot,
            "seed": seed,
            "level": cfg.level,
            "alpha": cfg.alpha,
            "ci": "percentile bootstrap",
            "mcnemar": "exact (two-sided binomial), within one seed",
            "one_seed": ONE_SEED_METHOD,
            "across_seeds": ACROSS_SEEDS_METHOD,
            "multiple_comparisons": HOLM_METHOD,
        },
        "runs": [str(Path(d)) for d in run_dirs],
        "methods": data.names,
        "metric_ci": _records(stats["metric_ci"]),
        "pairs": _records(stats["pairs"]),
        "seed_pairs": _records(stats["seed_pairs"]),
        "recommendation": rec.sentence,
        "notes": data.notes,
    }
    atomic_write_text(out / "stats.json", json.dumps(summary, indent=2, ensure_ascii=False) + "\n")
    atomic_write_text(out / "report.md", render_markdown(page))
    atomic_write_text(out / "index.html", render_html(page))
    if log is not None:
        for line in console_lines(page):
            log(line)
    return out


def report_run(run_dir: Path, log: Callable[[str], None]) -> None:
    """The report of a run that run, tune or distill just finished, in its folder; the page's path said on log."""
    log(f"report: {build_report([run_dir], log=log) / 'index.html'}")


def main_report(run_dirs: list[str], out: str | None = None, margin: float | None = None) -> int:
    """CLI entry for `sendit report RUN_DIR [RUN_DIR ...] [--out DIR] [--margin POINTS]`: prints the verdicts, the
    recommendation and index.html's path."""
    if margin is not None and not (math.isfinite(margin) and margin >= 0):
        print(f"sendit report: error: --margin must be a number of accuracy points >= 0 (got {margin}).",
              file=sys.stderr)
        return 2
    try:
        folder = build_report(run_dirs, out, margin=margin, log=print)
    except (FileNotFoundError, ValueError) as e:
        print(f"sendit report: error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    print(folder / "index.html")
    return 0
