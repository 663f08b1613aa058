"""A known truth for the cross-seed comparison (report/stats.py): simulated studies of two methods, each trained
with S seeds and tested on the same n rows, where the method-level difference is known exactly.

The model: row i has a difficulty z_i shared by both methods and a method-specific part b_mi; training seed s of
method m shifts the logit by a_ms (its spread set so that one method's accuracy varies across seeds by
`seed_sd` points); row i is right for (m, s) with probability sigmoid(mu + delta_m + z_i + b_mi + a_ms), drawn
independently per seed (a retrained model flips some rows). The truth is the difference of the population
accuracies, E sigmoid(mu + delta_m + X) with X ~ N(0, var(z) + var(b) + var(a)): one-dimensional, computed by
Gauss-Hermite quadrature. Numpy and scipy only; `python tests/stats_simulation.py` prints the table in
docs/tuning.md.
"""

from __future__ import annotations

import numpy as np
from scipy import stats as sps

from sendit.report.stats import compare

MU, SD_ROW, SD_METHOD_ROW = 1.6, 1.5, 0.7  # about 75 % accuracy, most rows right or wrong for both methods
_NODES, _WEIGHTS = np.polynomial.hermite_e.hermegauss(80)


def population_accuracy(shift: float, sd: float) -> float:
    """E sigmoid(MU + shift + X), X ~ N(0, sd²)."""
    return float(np.sum(_WEIGHTS * sps.logistic.cdf(MU + shift + sd * _NODES)) / np.sqrt(2 * np.pi))


def seed_logit_sd(seed_sd_points: float) -> float:
    """The logit spread of a seed's shift that makes one method's accuracy vary by `seed_sd_points` across seeds
    (through the slope of the population accuracy in the shift)."""
    sd = np.hypot(SD_ROW, SD_METHOD_ROW)
    slope = (population_accuracy(1e-3, sd) - population_accuracy(-1e-3, sd)) / 2e-3
    return seed_sd_points / 100 / slope


def truth_points(effect_logit: float, seed_sd_points: float) -> float:
    sd = np.sqrt(SD_ROW**2 + SD_METHOD_ROW**2 + seed_logit_sd(seed_sd_points) ** 2)
    return 100 * (population_accuracy(effect_logit, sd) - population_accuracy(0.0, sd))


def study(rng: np.random.Generator, n: int, seeds: int, seed_sd_points: float, effect_logit: float) -> np.ndarray:
    """One study's correct_A − correct_B, rows × seeds."""
    z = rng.normal(0, SD_ROW, n)[:, None]
    tau = seed_logit_sd(seed_sd_points)
    correct = []
    for delta in (effect_logit, 0.0):
        logit = MU + delta + z + rng.normal(0, SD_METHOD_ROW, n)[:, None] + rng.normal(0, tau, seeds)[None, :]
        correct.append(rng.random((n, seeds)) < sps.logistic.cdf(logit))
    return correct[0].astype(float) - correct[1]


# ------------------------------------------------------------------------------------------------ the old rule
def old_rule(diff: np.ndarray, n_boot: int = 0, seed: int = 0) -> tuple[float, float, float]:
    """The comparison this replaced (report/stats.py before): p from a t-test on each row's mean over seeds (the
    trained models taken as fixed), CI from a bootstrap resampling rows and, independently, seeds. Returns
    (p, lo, hi) in points; without n_boot the CI is not computed (nan)."""
    per_row = diff.mean(axis=1)
    p = 1.0 if per_row.std() == 0 else float(sps.ttest_1samp(per_row, 0.0).pvalue)
    if not n_boot:
        return p, np.nan, np.nan
    rng, seed_rng = np.random.default_rng(seed), np.random.default_rng([seed, 1])
    n, s = diff.shape
    rows = rng.integers(0, n, size=(n_boot, n))
    picks = seed_rng.integers(0, s, size=(n_boot, s))
    means = np.array([diff[r][:, c].mean() for r, c in zip(rows, picks)])
    lo, hi = np.percentile(100 * means, [2.5, 97.5])
    return p, float(lo), float(hi)


def calibrate(n: int, seeds: int, seed_sd_points: float, effect_logit: float = 0.0, studies: int = 1000,
              seed: int = 0, old_boot: int = 0, old_studies: int = 200) -> dict:
    """Rejection rate (p < 0.05) and 95 % CI coverage of the truth, for the new comparison and the old rule."""
    rng = np.random.default_rng([seed, n, seeds, int(10 * seed_sd_points), int(1000 * effect_logit)])
    truth = truth_points(effect_logit, seed_sd_points)
    reject = cover = old_reject = old_cover = old_n = 0
    for k in range(studies):
        diff = study(rng, n, seeds, seed_sd_points, effect_logit)
        c = compare(diff)
        reject += c.p() < 0.05
        cover += c.p(null=truth) >= 0.05  # the truth is inside the 95 % CI (tests/test_verdicts.py checks the duality)
        boot = old_boot if k < old_studies else 0
        p_old, lo_old, hi_old = old_rule(diff, boot, seed=k)
        old_reject += p_old < 0.05
        if boot:
            old_n += 1
            old_cover += lo_old <= truth <= hi_old
    return {"rows": n, "seeds": seeds, "seed_sd": seed_sd_points, "truth": truth, "reject": reject / studies,
            "coverage": cover / studies, "old_reject": old_reject / studies,
            "old_coverage": old_cover / old_n if old_n else np.nan, "studies": studies}


if __name__ == "__main__":
    print("| rows | seeds | seed sd (pts) | truth (pts) | rejects: new / old | 95% CI coverage: new / old |")
    print("|---|---|---|---|---|---|")
    for effect in (0.0, 0.1):
        for n in (300, 2000):
            for seeds in (3, 5):
                for sd in (0.0, 2.0, 4.0):
                    r = calibrate(n, seeds, sd, effect, studies=2000, old_boot=200, old_studies=200)
                    print(f"| {n} | {seeds} | {sd:g} | {r['truth']:.2f} | {r['reject']:.3f} / {r['old_reject']:.3f} "
                          f"| {r['coverage']:.3f} / {r['old_coverage']:.3f} |", flush=True)
