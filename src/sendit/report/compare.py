"""The paired comparison of two methods on the same test rows, the math behind every verdict (report/stats.py).

Row i under training seed s gives d_is = correct_A − correct_B. Test rows and seeds are both random samples,
crossed: d_is = μ + r_i + u_s + e_is, so the mean difference has variance σ_r²/n + σ_u²/S + σ_e²/(nS), estimated
from the two-way ANOVA mean squares (Clark 1973, "The language-as-fixed-effect fallacy", for crossed random
effects). The seed part is known only through the S per-seed differences (S − 1 degrees of freedom); the row part
through hundreds of rows. Numpy and scipy only.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from scipy import stats as sps

# Fisher's Behrens-Fisher reference, integrated over the normal part on a grid fine enough for a t part whose weight
# is down to 0.1 % (below that the reference is the normal or the t itself).
_Z = np.linspace(-9.0, 9.0, 2001)
_PHI = sps.norm.pdf(_Z) * (_Z[1] - _Z[0])


def reference_tail(x: float, row_share: float, df: float) -> float:
    """P(|R| > x) for R = √r·Z + √(1 − r)·T_df: the row part of the error as a normal (it is estimated from
    hundreds of rows), the seed part as a t with the seeds' degrees of freedom, r = the row part's share of the
    variance (Fisher's fiducial answer to the Behrens-Fisher problem, Fisher 1935)."""
    a, b = np.sqrt(row_share), np.sqrt(1.0 - row_share)
    if b < 1e-3:
        return float(2 * sps.norm.sf(x))
    if a < 1e-3:
        return float(2 * sps.t.sf(x, df))
    return float(np.sum(_PHI * (sps.t.sf((x - a * _Z) / b, df) + sps.t.cdf((-x - a * _Z) / b, df))))


def reference_quantile(tail: float, row_share: float, df: float) -> float:
    """The x with P(|R| > x) = tail."""
    from scipy.optimize import brentq

    return float(brentq(lambda x: reference_tail(x, row_share, df) - tail, 0.0, 1e4, xtol=1e-6))


@dataclass(frozen=True)
class Comparison:
    """A − B in accuracy points: the estimate, its standard error, and the parts of its variance (points²) that
    came from test rows and from training seeds. Its reference distribution is the t (n − 1 df) with one seed;
    with several, √r·Z + √(1 − r)·T_(S−1), r = var_rows / se² (`reference_tail`)."""

    d: float
    se: float
    df: float  # of the seed part (S − 1), or of the rows with one seed (n − 1)
    var_rows: float
    var_seeds: float
    n_rows: int
    n_seeds: int

    @property
    def row_share(self) -> float:
        if self.n_seeds == 1 or self.se == 0:
            return 0.0  # one seed: the t on the rows is the whole reference
        return min(max(self.var_rows / self.se**2, 0.0), 1.0)

    def p(self, null: float = 0.0) -> float:
        """Two-sided p of A − B = `null`."""
        if self.se == 0:
            return 1.0 if self.d == null else 0.0
        return reference_tail(abs(self.d - null) / self.se, self.row_share, self.df)

    def ci(self, level: float = 0.95) -> tuple[float, float]:
        half = reference_quantile(1 - level, self.row_share, self.df) * self.se if self.se > 0 else 0.0
        return self.d - half, self.d + half

    def lower(self, alpha: float = 0.05) -> float:
        """One-sided (1 − alpha) lower bound of A − B (the reference is symmetric)."""
        return self.d - (reference_quantile(2 * alpha, self.row_share, self.df) * self.se if self.se > 0 else 0.0)

    def scaled(self, n_rows: int | None = None, n_seeds: int | None = None) -> Comparison:
        """Roughly this comparison with other row or seed counts and the same estimate and variances (the seed part
        taken to shrink with seeds only, which errs on the wide side for more rows): what would decide it."""
        n, s = n_rows or self.n_rows, n_seeds or self.n_seeds
        rows, seeds = self.var_rows * self.n_rows / n, self.var_seeds * self.n_seeds / s
        df = self.df if s == self.n_seeds else s - 1.0
        return replace(self, se=float(np.sqrt(rows + seeds)), df=df, var_rows=rows, var_seeds=seeds, n_rows=n,
                       n_seeds=s)


def compare(diff: np.ndarray) -> Comparison:
    """A − B from `diff` (rows × seeds of correct_A − correct_B; a 1-D array is one seed), rows and seeds crossed.

    One seed: the paired t on the row differences (df n − 1). Several seeds: Var(mean) = σ_r²/n + σ_u²/S +
    σ_e²/(nS) = (MS_rows + MS_seeds − MS_err)/(nS) from the two-way ANOVA without replication, with the row
    component floored at 0 (a negative variance estimate). The seed part, MS_seeds/(nS), is the variance of the S
    per-seed accuracy differences over S: it has S − 1 degrees of freedom, whatever the number of rows. The row
    part, from hundreds of rows, is taken as known, and the two are combined as Fisher did for Behrens-Fisher
    (`reference_tail`); Satterthwaite's moment-matched t was liberal at 3 seeds (up to 9 % false positives in
    tests/stats_simulation.py, docs/tuning.md)."""
    d = 100 * np.asarray(diff, float)
    d = d[:, None] if d.ndim == 1 else d
    n, s = d.shape
    mean = float(d.mean())
    if n < 2:
        return Comparison(mean, 0.0, 1.0, 0.0, 0.0, n, s)
    row_means = d.mean(axis=1)
    ms_rows = s * float(np.sum((row_means - mean) ** 2)) / (n - 1)
    if s == 1:
        return Comparison(mean, float(np.sqrt(ms_rows / n)), n - 1.0, ms_rows / n, 0.0, n, 1)
    seed_means = d.mean(axis=0)
    ms_seeds = n * float(np.sum((seed_means - mean) ** 2)) / (s - 1)
    resid = d - row_means[:, None] - seed_means[None, :] + mean
    ms_err = float(np.sum(resid**2)) / ((n - 1) * (s - 1))
    var_rows, var_seeds = max(ms_rows - ms_err, 0.0) / (n * s), ms_seeds / (n * s)
    return Comparison(mean, float(np.sqrt(var_rows + var_seeds)), s - 1.0, var_rows, var_seeds, n, s)
