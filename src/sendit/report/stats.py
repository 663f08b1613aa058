"""Confidence intervals, paired comparisons with Holm's correction, and plain-language verdicts.

Two kinds of comparison, named for what they are about:

- **These two trained models** (one seed). Each row's correctness difference d_i = A_i − B_i is compared on the
  same test rows; the CI and p come from one t statistic on the row differences (so they never disagree), and
  the exact McNemar p is shown beside. It says how these two trained models would do on more tweets like the test
  rows, nothing about the next training run of either method.
- **The methods** (S ≥ 2 seeds, the same test rows scored by every seed). Test rows and training seeds are both
  random samples, crossed; report/compare.py estimates the two parts of the error and combines them
  (variance components, with Fisher's Behrens-Fisher reference for the seed part's S − 1 degrees of freedom).
  The calibration by simulation is in tests/test_verdicts.py and docs/tuning.md.

Metric intervals (accuracy, macro F1 of one trained model on one test set) are percentile bootstraps over rows:
`rng.integers(0, n, size=(n_boot, n))` from `np.random.default_rng(seed)` (in chunks, which yields the same
stream). Differences are in accuracy points (percentage points).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from itertools import combinations

import numpy as np
import pandas as pd
from scipy import stats as sps

from sendit.report.compare import Comparison, compare
from sendit.report.files import pretty
from sendit.report.load import RunData

# Bound the (chunk, n) index matrix at ~4M entries (32 MB of int64) whatever the test-set size.
_CHUNK_ELEMENTS = 4_000_000
# Seeds per method before a verdict is about the methods: with 2 the seed part of the interval has 1 degree of
# freedom (t = 12.7 at 95 %), with 3 it has 2 (t = 4.3); the calibration table in docs/tuning.md shows the power.
MIN_SEEDS = 3
# An arm named `<method>-default` (sendit tune --defaults) shows what tuning changed; it is compared with its own
# tuned method in a family of its own and is never a recommendation candidate.
DEFAULT_SUFFIX = "-default"

ACROSS_SEEDS_METHOD = (
    "Across seeds (a verdict about the methods): the difference is the mean over test rows and seeds; test rows "
    "and training seeds are both treated as random samples (crossed random effects), so its standard error adds "
    "the row part, estimated from the rows, and the seed-to-seed part, estimated from the S per-seed differences "
    "with S − 1 degrees of freedom (two-way ANOVA variance components); the two are combined as in Fisher's "
    "Behrens-Fisher test (a normal row part plus a t seed part). The CI and p come from the same statistic."
)
ONE_SEED_METHOD = (
    "With one seed a comparison is about these two trained models: how they would do on more tweets like the test "
    "rows (t on the paired row differences; exact McNemar p beside). It says nothing about the next training run "
    f"of either method; a verdict about the methods needs at least {MIN_SEEDS} seeds per method (--seeds 0,1,2)."
)
HOLM_METHOD = (
    "p-values are Holm-corrected within each family: the pairs of candidate methods in one test set (and seed); "
    "a tuned method against its own default arm is a family of its own. A difference is called significant when "
    "the corrected p is below alpha."
)


@dataclass(frozen=True)
class StatsConfig:
    """How intervals and tests are computed."""

    n_boot: int = 2000
    """Bootstrap resamples (metric intervals)."""
    seed: int = 0
    """Seed of the bootstrap generator."""
    level: float = 0.95
    """Confidence level of the intervals."""
    alpha: float = 0.05
    """Significance level of the verdicts and the recommendation."""
    margin: float = 1.0
    """Non-inferiority margin of the recommendation, in accuracy points."""


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


def significant(p: float, alpha: float = 0.05) -> bool:
    """The report's one rule: the (corrected) p is below alpha. The CI comes from the same t statistic, so an
    uncorrected significant difference always has a CI that excludes 0."""
    return bool(p < alpha)


def verdict(a: str, b: str, c: Comparison, p: float, alpha: float = 0.05, level: float = 0.95,
            family: int = 1, mcnemar: float | None = None, seed: int | None = None) -> str:
    """Plain language, the better one named first. With one seed (`c.n_seeds == 1`) the sentence is about these two
    trained models; with several, about the methods."""
    d, (lo, hi) = c.d, c.ci(level)
    if d < 0:
        a, b, d, lo, hi = b, a, -d, -hi, -lo
    holm = f"p (Holm, {family} pairs)" if family > 1 else "p"
    tail = f"{int(100 * level)}% CI [{lo:.1f}, {hi:.1f}], {holm} = {format_p(p)}"
    if c.n_seeds == 1:
        tail += f", McNemar p = {format_p(mcnemar)}" if mcnemar is not None else ""
        who = f"these two trained models (seed {seed})" if seed is not None else "these two trained models"
        if significant(p, alpha):
            return (f"{a}'s trained model beats {b}'s by {d:.1f} points ({tail}); this is about {who}, not the "
                    f"methods: a verdict about the methods needs at least {MIN_SEEDS} seeds")
        return f"No significant difference between {who}, {a} and {b} ({a} − {b} = {d:.1f} points, {tail})"
    tail += f"; {c.n_rows} test rows × {c.n_seeds} seeds"
    if significant(p, alpha):
        return f"{a} beats {b} by {d:.1f} points across seeds ({tail})"
    return f"No significant difference between the methods {a} and {b} ({a} − {b} = {d:.1f} points, {tail})"


def _correct_by_row(preds: pd.DataFrame) -> pd.DataFrame:
    out = preds[["seed", "row_id", "label_true", "correct"]]
    return out.drop_duplicates(["seed", "row_id"]).set_index(["seed", "row_id"])


def family_of(a: str, b: str) -> str | None:
    """Which Holm family a pair belongs to: 'methods' (candidates), 'tuning' (a method and its own default arm),
    or None (a default arm against another method: not compared)."""
    da, db = a.endswith(DEFAULT_SUFFIX), b.endswith(DEFAULT_SUFFIX)
    if not da and not db:
        return "methods"
    if da != db and (a if da else b)[: -len(DEFAULT_SUFFIX)] == (b if da else a):
        return "tuning"
    return None


def compute_stats(data: RunData, cfg: StatsConfig = StatsConfig()) -> dict[str, pd.DataFrame]:
    """Metric CIs per (method, test set, seed) and pairwise comparisons within each seed (these trained models) and
    across seeds (the methods)."""
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
            family = family_of(a, b)
            if family is None:
                continue
            differ = setup_differences(data.manifests, run_of.get(a), run_of.get(b))
            if differ:
                data.note(f"{ts}: {a} and {b} were trained with different data or budgets ({differ}), so they "
                          "are not compared pairwise; their rows in the tables stand side by side.")
                continue
            joined = pd.merge(by_label[a], by_label[b], how="inner", left_index=True, right_index=True,
                              suffixes=("_a", "_b"))
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
                bb, cc, p_mcnemar = mcnemar_exact(ca, cb)
                c = compare(ca.astype(float) - cb)
                lo, hi = c.ci(cfg.level)
                pair_rows.append({
                    "test_set": ts, "seed": int(seed), "family": family, "a": a, "b": b, "n": len(g),
                    "acc_a": ca.mean(), "acc_b": cb.mean(), "diff_points": c.d, "ci_lo": lo, "ci_hi": hi,
                    "se_points": c.se, "df": c.df, "p": c.p(), "b_only_a": bb, "c_only_b": cc,
                    "mcnemar_p": p_mcnemar, "comparison": c,
                })
            seeds = sorted(joined.index.get_level_values("seed").unique())
            if len(seeds) >= 2:
                seed_rows.append(_across_seeds(ts, a, b, family, joined, seeds, cfg))
    pairs = _corrected(pd.DataFrame(pair_rows), ["test_set", "seed", "family"], cfg, data.method_info)
    seed_pairs = _corrected(pd.DataFrame(seed_rows), ["test_set", "family"], cfg, data.method_info)
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


def _corrected(pairs: pd.DataFrame, family: list[str], cfg: StatsConfig, info: dict[str, dict]) -> pd.DataFrame:
    """Holm-adjust `p` within each family (the candidate pairs of one test set, or of one test set and seed; a
    method against its default arm apart) and write each pair's verdict from the adjusted p. The `comparison`
    column keeps each pair's Comparison for the recommendation (not written to stats.json). `info`: the methods'
    display names (RunData.method_info)."""
    if pairs.empty:
        return pairs
    pairs = pairs.copy()
    pairs["p_holm"] = pairs.groupby(family, sort=False)["p"].transform(lambda p: holm(p.to_numpy()))
    pairs["family_size"] = pairs.groupby(family, sort=False)["p"].transform("size")
    pairs["verdict"] = [
        verdict(pretty(r.a, info), pretty(r.b, info), r.comparison, r.p_holm, cfg.alpha, cfg.level, r.family_size,
                getattr(r, "mcnemar_p", None), getattr(r, "seed", None))
        for r in pairs.itertuples()
    ]
    return pairs


def _across_seeds(ts: str, a: str, b: str, family: str, joined: pd.DataFrame, seeds: list,
                  cfg: StatsConfig) -> dict:
    diff = (joined["correct_a"].astype(float) - joined["correct_b"]).unstack("seed").dropna()
    c = compare(diff.to_numpy())
    lo, hi = c.ci(cfg.level)
    acc = joined.groupby(level="seed")[["correct_a", "correct_b"]].mean()
    return {
        "test_set": ts, "seeds": len(seeds), "family": family, "a": a, "b": b, "n_rows": len(diff),
        "acc_a_mean": acc["correct_a"].mean(), "acc_b_mean": acc["correct_b"].mean(), "diff_points": c.d,
        "ci_lo": lo, "ci_hi": hi, "se_points": c.se, "df": c.df, "p": c.p(),
        "seed_sd_points": float(100 * (acc["correct_a"] - acc["correct_b"]).std(ddof=1)),
        "var_rows": c.var_rows, "var_seeds": c.var_seeds, "comparison": c,
    }
