"""Bootstrap confidence intervals, paired tests with Holm's correction, and plain-language verdicts.

Resampling draws `rng.integers(0, n, size=(n_boot, n))` from `np.random.default_rng(seed)` (in chunks,
which yields the same stream), so every interval is reproducible from the seed alone. Intervals are
percentile intervals. Differences are in accuracy points (percentage points).

Across seeds, the same test rows are scored once per seed, so they are not independent observations: pooling
them (a McNemar test on discordant pairs summed over seeds) makes three identical seeds look three times as
much evidence. Rows are the unit instead: each row's correctness is averaged over seeds, the test is on those
per-row means, and the interval resamples rows and seeds together.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from itertools import combinations

import numpy as np
import pandas as pd
from scipy import stats as sps

from sendit.report.files import pretty
from sendit.report.load import RunData

# Bound the (chunk, n) index matrix at ~4M entries (32 MB of int64) whatever the test-set size.
_CHUNK_ELEMENTS = 4_000_000

ACROSS_SEEDS_METHOD = (
    "Across seeds: the difference is the mean over seeds of the per-seed accuracy difference; its 95% CI "
    "comes from a bootstrap that resamples test rows and seeds together; p is a two-sided paired t-test on "
    "each row's correctness averaged over seeds (a test row counts once however many seeds scored it), "
    "Holm-corrected over the pairs of each test set; the paired t-test over per-seed accuracies is shown too."
)
HOLM_METHOD = (
    "p-values are Holm-corrected for multiple comparisons over all pairs of methods in the same test set "
    "(and seed); a difference is called significant only when the corrected p is below alpha and the CI "
    "excludes 0."
)


@dataclass(frozen=True)
class StatsConfig:
    """How intervals and tests are computed."""

    n_boot: int = 2000
    """Bootstrap resamples."""
    seed: int = 0
    """Seed of the bootstrap generator."""
    level: float = 0.95
    """Confidence level of the percentile intervals."""
    alpha: float = 0.05
    """Significance level of the verdicts."""


def _index_chunks(n: int, n_boot: int, seed: int) -> Iterator[np.ndarray]:
    rng = np.random.default_rng(seed)
    chunk = max(1, _CHUNK_ELEMENTS // max(n, 1))
    for start in range(0, n_boot, chunk):
        yield rng.integers(0, n, size=(min(chunk, n_boot - start), n))


def _percentile(values: np.ndarray, level: float) -> tuple[float, float]:
    tail = 100 * (1 - level) / 2
    lo, hi = np.percentile(values, [tail, 100 - tail])
    return float(lo), float(hi)


def f1_macro(label: np.ndarray, pred: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """Macro F1 along the last axis (works on one sample or a batch of resamples)."""
    scores = []
    for c in classes:
        tp = np.sum((label == c) & (pred == c), axis=-1)
        fp = np.sum((label != c) & (pred == c), axis=-1)
        fn = np.sum((label == c) & (pred != c), axis=-1)
        denom = 2 * tp + fp + fn
        scores.append(np.divide(2 * tp, denom, out=np.zeros(np.shape(tp)), where=denom > 0))
    return np.mean(scores, axis=0)


def bootstrap_metric_ci(
    label: np.ndarray, pred: np.ndarray, n_boot: int = 2000, seed: int = 0, level: float = 0.95
) -> dict[str, float]:
    """Accuracy and macro F1 with percentile bootstrap CIs (rows resampled with replacement)."""
    label, pred = np.asarray(label), np.asarray(pred)
    classes = np.unique(np.concatenate([label, pred]))
    accs, f1s = [], []
    for idx in _index_chunks(len(label), n_boot, seed):
        y, p = label[idx], pred[idx]
        accs.append(np.mean(y == p, axis=1))
        f1s.append(f1_macro(y, p, classes))
    acc_lo, acc_hi = _percentile(np.concatenate(accs), level)
    f1_lo, f1_hi = _percentile(np.concatenate(f1s), level)
    return {
        "n": len(label),
        "accuracy": float(np.mean(label == pred)),
        "accuracy_lo": acc_lo,
        "accuracy_hi": acc_hi,
        "f1_macro": float(f1_macro(label, pred, classes)),
        "f1_macro_lo": f1_lo,
        "f1_macro_hi": f1_hi,
    }


def mcnemar_exact(correct_a: np.ndarray, correct_b: np.ndarray) -> tuple[int, int, float]:
    """Exact McNemar test: two-sided binomial test on the discordant pairs.

    Returns (b, c, p) with b = rows only A got right, c = rows only B got right.
    """
    a, b_ = np.asarray(correct_a, bool), np.asarray(correct_b, bool)
    b = int(np.sum(a & ~b_))
    c = int(np.sum(~a & b_))
    if b + c == 0:
        return b, c, 1.0
    return b, c, float(sps.binomtest(b, b + c, 0.5).pvalue)


def bootstrap_diff_ci(
    diff: np.ndarray, n_boot: int = 2000, seed: int = 0, level: float = 0.95
) -> tuple[float, float, float]:
    """Mean of `diff` (rows × seeds, or rows) with a percentile CI from resampling rows and, independently,
    seeds (with one seed, rows only). A resample's statistic is the mean of diff[rows][:, seeds]."""
    diff = np.asarray(diff, float)
    diff = diff[:, None] if diff.ndim == 1 else diff
    n_seeds = diff.shape[1]
    seed_rng = np.random.default_rng([seed, 1])  # its own stream: the row draws match a rows-only bootstrap
    means = []
    for idx in _index_chunks(len(diff), n_boot, seed):
        picks = seed_rng.integers(0, n_seeds, size=(len(idx), n_seeds))
        weights = np.stack([np.bincount(p, minlength=n_seeds) for p in picks]) / n_seeds
        by_row = weights @ diff.T  # (chunk, rows): each row's mean over the resampled seeds
        means.append(np.take_along_axis(by_row, idx, axis=1).mean(axis=1))
    lo, hi = _percentile(np.concatenate(means), level)
    return float(diff.mean()), lo, hi


def row_mean_ttest(diff: np.ndarray) -> float:
    """Two-sided one-sample t-test that the mean of each row's difference, averaged over seeds, is 0.

    Rows are the independent unit: a row scored by S seeds contributes one value, so S identical seeds give
    the p-value of one seed."""
    diff = np.asarray(diff, float)
    per_row = diff.mean(axis=1) if diff.ndim == 2 else diff
    if len(per_row) < 2 or per_row.std() == 0:
        return 1.0 if not per_row.any() else 0.0
    return float(sps.ttest_1samp(per_row, 0.0).pvalue)


def holm(p: np.ndarray) -> np.ndarray:
    """Holm's step-down adjusted p-values (family-wise error control over the given tests)."""
    p = np.asarray(p, float)
    order = np.argsort(p, kind="stable")
    m = len(p)
    adjusted = np.empty(m)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        adjusted[i] = running
    return adjusted


def format_p(p: float) -> str:
    if p is None or not np.isfinite(p):
        return "n/a"
    return f"{p:.3f}" if p >= 0.001 else f"{p:.1e}"


def significant(lo: float, hi: float, p: float, alpha: float = 0.05) -> bool:
    """The report's one rule: the CI excludes 0 and the (corrected) p is below alpha."""
    return bool((lo > 0 or hi < 0) and p < alpha)


def verdict(
    a: str, b: str, d: float, lo: float, hi: float, p: float, alpha: float = 0.05, extra: str = "",
    test: str = "McNemar p",
) -> str:
    """Plain-language verdict; `d`, `lo`, `hi` are A − B in points and `p` the (corrected) p-value of `test`.
    The better method is named first."""
    if d < 0:
        a, b, d, lo, hi = b, a, -d, -hi, -lo
    tail = f"95% CI [{lo:.1f}, {hi:.1f}], {test} = {format_p(p)}{extra}"
    if significant(lo, hi, p, alpha):
        return f"{a} beats {b} by {d:.1f} points, {tail}"
    return f"No significant difference between {a} and {b} ({a} − {b} = {d:.1f} points, {tail})"


def _correct_by_row(preds: pd.DataFrame) -> pd.DataFrame:
    out = preds[["seed", "row_id", "label_true", "correct"]]
    return out.drop_duplicates(["seed", "row_id"]).set_index(["seed", "row_id"])


def compute_stats(data: RunData, cfg: StatsConfig = StatsConfig()) -> dict[str, pd.DataFrame]:
    """Metric CIs per (method, test set, seed) and pairwise comparisons within and across seeds."""
    preds = data.predictions
    empty = {"metric_ci": pd.DataFrame(), "pairs": pd.DataFrame(), "seed_pairs": pd.DataFrame()}
    needed = {"label", "prediction", "seed", "test_set", "row_id"}
    if preds.empty or not needed <= set(preds.columns):
        data.note("no usable predictions — confidence intervals and significance tests skipped.")
        return empty
    preds = preds.rename(columns={"label": "label_true"})
    preds = preds.dropna(subset=["label_true", "prediction"])
    preds["correct"] = preds["label_true"].astype(int) == preds["prediction"].astype(int)
    levels = {"n_boot": cfg.n_boot, "seed": cfg.seed, "level": cfg.level}

    ci_rows = []
    for (lab, ts, seed), g in preds.groupby(["name", "test_set", "seed"], sort=False):
        ci = bootstrap_metric_ci(
            g["label_true"].to_numpy(int), g["prediction"].to_numpy(int), **levels
        )
        ci_rows.append({"method": lab, "test_set": ts, "seed": int(seed), **ci})

    order = {lab: i for i, lab in enumerate(data.names)}
    run_of = preds.drop_duplicates("name").set_index("name")["run"].to_dict() if "run" in preds else {}
    pair_rows, seed_rows = [], []
    for ts, g_ts in preds.groupby("test_set", sort=False):
        by_label = {lab: _correct_by_row(g) for lab, g in g_ts.groupby("name")}
        labs = sorted(by_label, key=lambda lab: order.get(lab, len(order)))
        for a, b in combinations(labs, 2):
            differ = setup_differences(data.manifests, run_of.get(a), run_of.get(b))
            if differ:
                data.note(f"{ts}: {a} and {b} were trained with different data or budgets ({differ}), so they "
                          "are not compared pairwise; their rows in the tables stand side by side.")
                continue
            joined = pd.merge(
                by_label[a],
                by_label[b],
                how="inner",
                left_index=True,
                right_index=True,
                suffixes=("_a", "_b"),
            )
            if joined.empty:
                continue
            if (joined["label_true_a"] != joined["label_true_b"]).any():
                data.note(
                    f"{ts}: {a} and {b} disagree on true labels for the same row_id — "
                    "not the same test rows, pair not compared."
                )
                continue
            for seed, g in joined.groupby(level="seed"):
                ca, cb = g["correct_a"].to_numpy(), g["correct_b"].to_numpy()
                bb, cc, p = mcnemar_exact(ca, cb)
                d, lo, hi = (100 * x for x in bootstrap_diff_ci(ca.astype(float) - cb, **levels))
                pair_rows.append(
                    {
                        "test_set": ts,
                        "seed": int(seed),
                        "a": a,
                        "b": b,
                        "n": len(g),
                        "acc_a": ca.mean(),
                        "acc_b": cb.mean(),
                        "diff_points": d,
                        "ci_lo": lo,
                        "ci_hi": hi,
                        "b_only_a": bb,
                        "c_only_b": cc,
                        "mcnemar_p": p,
                    }
                )
            seeds = sorted(joined.index.get_level_values("seed").unique())
            if len(seeds) >= 2:
                seed_rows.append(_across_seeds(ts, a, b, joined, seeds, cfg))
    pairs = _corrected(pd.DataFrame(pair_rows), ["test_set", "seed"], "mcnemar_p", cfg, "McNemar p (Holm)")
    seed_pairs = _corrected(pd.DataFrame(seed_rows), ["test_set"], "rows_p", cfg, "p (Holm)")
    return {"metric_ci": pd.DataFrame(ci_rows), "pairs": pairs, "seed_pairs": seed_pairs}


# What must match for two runs' methods to be compared: the data they learned from and the training budget
# (learning rates and method settings may differ: that is what is being compared, or what tuning chose).
SETUP_KEYS = {
    "data": ("data", "train_size", "val_size", "test_size", "split_seed", "max_length", "normalize",
             "extra_train_file"),
    "train": ("epochs", "batch_size", "grad_accum"),
}


def setup_differences(manifests: dict[str, dict], run_a: str | None, run_b: str | None) -> str:
    """'train_size 4000 vs 1500, ...' when two runs' configs differ in data or budget; '' when they match, are
    the same run, or a config is missing (nothing to check)."""
    if run_a is None or run_b is None or run_a == run_b:
        return ""
    ca, cb = ((manifests.get(r) or {}).get("config") or {} for r in (run_a, run_b))
    if not ca or not cb:
        return ""
    diffs = [f"{k} {ca.get(sec, {}).get(k)} vs {cb.get(sec, {}).get(k)}" for sec, keys in SETUP_KEYS.items()
             for k in keys if ca.get(sec, {}).get(k) != cb.get(sec, {}).get(k)]
    return ", ".join(diffs)


def _corrected(
    pairs: pd.DataFrame, family: list[str], p_col: str, cfg: StatsConfig, test: str
) -> pd.DataFrame:
    """Holm-adjust `p_col` within each family (the pairs of one test set, or of one test set and seed) and
    write each pair's verdict from the adjusted p."""
    if pairs.empty:
        return pairs
    pairs = pairs.copy()
    pairs["p_holm"] = pairs.groupby(family, sort=False)[p_col].transform(lambda p: holm(p.to_numpy()))
    pairs["family_size"] = pairs.groupby(family, sort=False)[p_col].transform("size")
    pairs["verdict"] = [
        verdict(pretty(r.a), pretty(r.b), r.diff_points, r.ci_lo, r.ci_hi, r.p_holm, cfg.alpha,
                f" over {r.family_size} pair{'s' if r.family_size > 1 else ''}{getattr(r, 'extra', '')}", test)
        for r in pairs.itertuples()
    ]
    return pairs.drop(columns=["extra"], errors="ignore")


def _across_seeds(
    ts: str, a: str, b: str, joined: pd.DataFrame, seeds: list, cfg: StatsConfig
) -> dict:
    diff = (joined["correct_a"].astype(float) - joined["correct_b"]).unstack("seed").dropna()
    d, lo, hi = (
        100 * x for x in bootstrap_diff_ci(diff.to_numpy(), cfg.n_boot, cfg.seed, cfg.level)
    )
    acc = joined.groupby(level="seed")[["correct_a", "correct_b"]].mean()
    delta = acc["correct_a"] - acc["correct_b"]
    t_p = (
        float(sps.ttest_rel(acc["correct_a"], acc["correct_b"]).pvalue)
        if delta.std() > 0
        else np.nan
    )
    if not np.isfinite(t_p) and len(delta) and (delta == 0).all():
        t_p = 1.0
    return {
        "test_set": ts,
        "seeds": len(seeds),
        "a": a,
        "b": b,
        "n_rows": len(diff),
        "acc_a_mean": acc["correct_a"].mean(),
        "acc_b_mean": acc["correct_b"].mean(),
        "diff_points": d,
        "ci_lo": lo,
        "ci_hi": hi,
        "rows_p": row_mean_ttest(diff.to_numpy()),
        "ttest_p": t_p,
        "extra": f"; test rows × {len(seeds)} seeds; paired t-test over seeds p = {format_p(t_p)}",
    }
