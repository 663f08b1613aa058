"""The verdicts: the paired comparison (these trained models, or the methods across seeds), its calibration against
simulated studies with a known truth, Holm families, and the non-inferiority recommendation. Numpy only, seconds."""

from __future__ import annotations

import itertools
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from sendit.report import compare as rcompare
from sendit.report import stats as rstats
from sendit.report.load import RunData
from sendit.report.recommend import (
    Budget, cut_short_from, expected_max, expected_max_curves, margin_from, pareto_front, recommend,
)

sys.path.insert(0, str(Path(__file__).parent))
from stats_simulation import calibrate, study, truth_points  # noqa: E402


# ------------------------------------------------------------------------------------------------ calibration
CELLS = [(n, s, sd) for n in (300, 2000) for s in (3, 5) for sd in (0.0, 2.0, 4.0)]


@pytest.fixture(scope="module")
def null_cells():
    return [calibrate(n, s, sd, studies=300, seed=11) for n, s, sd in CELLS]


def test_under_the_null_the_verdict_rule_holds_its_level_and_the_ci_its_coverage(null_cells):
    """No true difference, seed-to-seed spread 0 to 4 points, 300 to 2,000 rows, 3 and 5 seeds: over all cells the
    rule calls a difference in about 5 % of studies and the 95 % CI covers the truth 93-97 % of the time (3,600
    studies: simulation error about 0.4 points); no cell strays far."""
    reject = np.mean([c["reject"] for c in null_cells])
    coverage = np.mean([c["coverage"] for c in null_cells])
    assert reject <= 0.05 + 2 * np.sqrt(0.05 * 0.95 / 3600), null_cells
    assert 0.93 <= coverage <= 0.97, null_cells
    for c in null_cells:  # 300 studies a cell: a binomial 5 % has sd 1.3 points
        assert c["reject"] <= 0.09 and 0.91 <= c["coverage"] <= 0.99, c


def test_the_old_rule_fails_the_same_calibration(null_cells):
    """The rule this replaced (a t-test on per-row means over seeds, the trained models taken as fixed) calls a
    difference far more often than 5 % once seeds differ; it is right only when they do not."""
    spread = [c for c in null_cells if c["seed_sd"] >= 2.0]
    assert np.mean([c["old_reject"] for c in spread]) > 0.2
    assert max(c["old_reject"] for c in null_cells if c["rows"] == 2000 and c["seed_sd"] == 4.0) > 0.4
    assert all(c["old_reject"] <= 0.09 for c in null_cells if c["seed_sd"] == 0.0)


def test_a_real_difference_is_found_and_covered():
    """Power and coverage under a real effect (about 6 points): found in most studies, its CI covers the truth."""
    r = calibrate(2000, 5, 2.0, effect_logit=0.45, studies=200, seed=5)
    assert r["truth"] == pytest.approx(truth_points(0.45, 2.0)) and 4 < r["truth"] < 8
    assert r["reject"] > 0.8 and 0.9 <= r["coverage"] <= 0.99


# ------------------------------------------------------------------------------------------------ the comparison
def test_one_seed_is_the_paired_t_on_rows_and_its_ci_agrees_with_its_p():
    rng = np.random.default_rng(1)
    a, b = rng.random(150) < 0.80, rng.random(150) < 0.70
    d = a.astype(float) - b
    c = rstats.compare(d)
    assert c.n_seeds == 1 and c.df == 149
    assert c.p() == pytest.approx(sps.ttest_1samp(d, 0.0).pvalue, rel=1e-9)
    lo, hi = c.ci(0.95)
    assert (lo > 0) == (c.p() < 0.05) and lo < c.d < hi


def test_identical_seeds_add_no_evidence_and_seed_spread_widens_the_interval():
    rng = np.random.default_rng(2)
    d = (rng.random(400) < 0.8).astype(float) - (rng.random(400) < 0.75)
    one, three = rstats.compare(d), rstats.compare(np.tile(d[:, None], 3))
    assert three.d == pytest.approx(one.d) and three.p() == pytest.approx(one.p(), rel=0.01)  # one seed of evidence
    shifted = np.tile(d[:, None], 3) + np.array([-0.05, 0.0, 0.05])  # the seeds differ by 5 points
    wide = rstats.compare(shifted)
    assert wide.se > 1.3 * one.se and wide.df < 10, "seed-to-seed differences must widen the interval (few df)"


def test_the_crossed_variance_matches_its_formula():
    """Var(mean) = (max(MS_rows - MS_err, 0) + MS_seeds) / (nS), by hand from the two-way ANOVA."""
    d = study(np.random.default_rng(3), 300, 4, 3.0, 0.0)
    n, s = d.shape
    x = 100 * d
    m = x.mean()
    ms_r = s * ((x.mean(1) - m) ** 2).sum() / (n - 1)
    ms_s = n * ((x.mean(0) - m) ** 2).sum() / (s - 1)
    ms_e = ((x - x.mean(1, keepdims=True) - x.mean(0, keepdims=True) + m) ** 2).sum() / ((n - 1) * (s - 1))
    c = rstats.compare(d)
    assert c.se ** 2 == pytest.approx((max(ms_r - ms_e, 0) + ms_s) / (n * s))
    assert c.var_rows + c.var_seeds == pytest.approx(c.se ** 2)


def _two_methods(correct: dict[str, dict[int, np.ndarray]], n: int, val: dict | None = None) -> RunData:
    """A RunData whose methods' per-seed correctness on n rows is given (label 1 everywhere)."""
    rows = [{"name": name, "method": name, "seed": s, "test_set": "held-out split", "row_id": i, "label": 1,
             "prediction": int(c[i])} for name, by_seed in correct.items() for s, c in by_seed.items()
            for i in range(n)]
    results = pd.DataFrame([{"name": m, "method": m, "seed": s, "val_accuracy": (val or {}).get(m, 0.5)}
                            for m, by_seed in correct.items() for s in by_seed])
    return RunData(results=results, epochs=pd.DataFrame(), metrics=pd.DataFrame(), predictions=pd.DataFrame(rows),
                   names=list(correct))


def test_holm_matches_statsmodels():
    multipletests = pytest.importorskip("statsmodels.stats.multitest").multipletests
    rng = np.random.default_rng(0)
    for p in (rng.uniform(0, 0.2, 7), np.array([0.01, 0.04, 0.04, 0.03, 0.5]), np.array([0.3])):
        assert rstats.holm(p) == pytest.approx(multipletests(p, method="holm")[1], abs=1e-12)


def test_the_holm_family_is_the_candidates_and_default_arms_stand_beside():
    multipletests = pytest.importorskip("statsmodels.stats.multitest").multipletests
    rng = np.random.default_rng(3)
    n = 200
    draw = {name: {s: rng.random(n) < acc for s in (0, 1, 2)}
            for name, acc in (("a", 0.8), ("b", 0.7), ("c", 0.75), ("a-default", 0.78))}
    sp = rstats.compute_stats(_two_methods(draw, n), rstats.StatsConfig(n_boot=50))["seed_pairs"]
    methods = sp[sp["family"] == "methods"]
    assert sorted(zip(methods["a"], methods["b"])) == [("a", "b"), ("a", "c"), ("b", "c")]
    assert methods["p_holm"].tolist() == pytest.approx(multipletests(methods["p"], method="holm")[1].tolist())
    tuning = sp[sp["family"] == "tuning"]
    assert list(zip(tuning["a"], tuning["b"])) == [("a", "a-default")] and (tuning["p_holm"] == tuning["p"]).all()
    assert not ((sp["a"] == "b") & (sp["b"] == "a-default")).any(), "a default arm is compared with its own method"
    assert all("3 pairs" in v and "across seeds" in v or "No significant difference between the methods" in v
               for v in methods["verdict"])


def test_verdicts_never_contradict_their_p_and_one_seed_is_about_the_trained_models():
    rng = np.random.default_rng(4)
    for trial in range(30):
        n = int(rng.integers(50, 400))
        draw = {"a": {0: rng.random(n) < 0.8}, "b": {0: rng.random(n) < rng.uniform(0.7, 0.85)}}
        (row,) = rstats.compute_stats(_two_methods(draw, n), rstats.StatsConfig(n_boot=20))["pairs"].to_dict(
            "records")
        significant = row["p_holm"] < 0.05
        assert significant == (row["ci_lo"] > 0 or row["ci_hi"] < 0)
        assert ("No significant difference" in row["verdict"]) != significant
        assert "these two trained models" in row["verdict"] or "trained model beats" in row["verdict"]
        if significant:
            assert f"at least {rstats.MIN_SEEDS} seeds" in row["verdict"]


def test_runs_with_different_data_or_budgets_are_not_compared_pairwise():
    rng = np.random.default_rng(4)
    data = _two_methods({"a": {0: rng.random(80) < 0.8}, "b": {0: rng.random(80) < 0.7}}, 80)
    data.predictions["run"] = data.predictions["name"].map({"a": "quick", "b": "tuned"})
    setup = {"data": {"train_size": 4000, "split_seed": 0}, "train": {"epochs": 2}}
    data.manifests = {"quick": {"config": setup}, "tuned": {"config": {**setup, "data": {"train_size": 1500,
                                                                                          "split_seed": 0}}}}
    assert rstats.compute_stats(data, rstats.StatsConfig(n_boot=50))["pairs"].empty
    assert any("different data or budgets (train_size 4000 vs 1500)" in n for n in data.notes)
    data.manifests["tuned"] = {"config": {**setup, "method": {"method_lr": {"a": 1e-3}}}}  # lr may differ
    assert len(rstats.compute_stats(data, rstats.StatsConfig(n_boot=50))["pairs"]) == 1


# ------------------------------------------------------------------------------------------------ recommendation
COSTS = pd.DataFrame({
    "accuracy": [0.70, 0.880, 0.895, 0.900], "val_accuracy": [0.69, 0.87, 0.89, 0.91], "seeds": [3, 3, 3, 3],
    "trainable_params": [1e3, 1e5, 1e6, 1e8], "trainable_pct": [0.001, 0.1, 1.0, 100.0],
    "peak_memory_mb": [500, 600, 700, 2500], "runtime_sec": [60, 120, 180, 900],
    "saved_size_mb": [0.01, 0.4, 4.0, 400.0],
}, index=["head", "bitfit", "lora", "full"])


def _pairs(**diffs: tuple[float, float, float]) -> pd.DataFrame:
    """Comparisons `x_vs_y=(d, se, df)` as compute_stats writes them (x − y in points)."""
    rows = []
    for key, (d, se, df) in diffs.items():
        a, b = key.split("_vs_")
        rows.append({"a": a, "b": b, "comparison": rstats.Comparison(d, se, df, se**2 / 2, se**2 / 2, 1000, 3)})
    return pd.DataFrame(rows)


def test_a_cheaper_method_is_recommended_only_when_its_lower_bound_clears_the_margin():
    close = _pairs(head_vs_full=(-20, 1, 30), full_vs_bitfit=(0.2, 0.1, 30), full_vs_lora=(0.1, 0.1, 30))
    text = recommend(COSTS, close, margin=1.0)
    assert text.startswith("Across 3 seeds: Use BitFit: it is within the margin of the best, Full FT")
    assert "margin δ = 1 accuracy points" in text and "Bonferroni" in text and "lower bound -0.4 > −1" in text
    # 5 points worse with a wide CI (the example): not recommended, whatever its p-value
    wide = _pairs(head_vs_full=(-20, 1, 30), bitfit_vs_full=(-5.0, 3.5, 2), lora_vs_full=(-0.5, 3.0, 2))
    text = recommend(COSTS, wide, margin=1.0)
    assert text.startswith("Across 3 seeds: Use Full FT: the best") and "Insufficient evidence for LoRA" in text
    assert "seeds" in text.split("Insufficient evidence for LoRA")[1]
    # fewer rows or seeds make a cheaper method less likely to be recommended, never more
    for se in (0.1, 0.6, 1.5, 4.0):
        text = recommend(COSTS, _pairs(head_vs_full=(-20, 1, 30), bitfit_vs_full=(-0.5, se, 4),
                                       lora_vs_full=(-0.5, se, 4)), margin=1.0)
        assert text.startswith("Across 3 seeds: Use BitFit") == (se == 0.1)
    wider = recommend(COSTS, close, margin=0.1)
    assert "Use Full FT" in wider, "a margin below the bound's distance refuses the cheaper methods"


def test_the_best_is_chosen_on_validation_and_default_arms_are_not_candidates():
    costs = pd.concat([COSTS.assign(val_accuracy=[0.69, 0.92, 0.89, 0.91]),
                       COSTS.loc[["head"]].rename(index={"head": "head-default"}).assign(val_accuracy=0.99)])
    text = recommend(costs, _pairs(head_vs_bitfit=(-20, 1, 30)), margin=1.0)
    assert "Use BitFit: the best, BitFit" in text and "highest validation accuracy" in text  # not Full FT (test)
    assert "Head-only-default" not in text and "head-default" not in text.lower().split("(")[0]


def test_one_seed_recommendations_say_so_budgets_and_cut_short_methods_are_flagged():
    one = _pairs(head_vs_full=(-20, 1, 30), bitfit_vs_full=(-0.2, 0.1, 999), lora_vs_full=(0.0, 0.1, 999))
    for c in one["comparison"]:
        object.__setattr__(c, "n_seeds", 1)
    text = recommend(COSTS.assign(seeds=1), one, margin=1.0)
    assert text.startswith("Based on one trained model per method (one seed; a recommendation about the methods "
                           f"needs at least {rstats.MIN_SEEDS} seeds): Use BitFit")
    budget = Budget(max_peak_memory_mb=650)
    assert "within the budget (at most 650 MB peak memory)" in recommend(COSTS, one, budget)
    assert recommend(COSTS, one, Budget(max_train_minutes=0.5)).startswith("No method fits the budget")
    flagged = recommend(COSTS, one, cut_short={"lora": "time cap after 3 of 6 trials"})
    assert "LoRA's search was cut short (time cap after 3 of 6 trials)" in flagged
    manifests = {"r": {"tune": {"margin": 2.5}, "tuned": {"lora": {"cut_short": "time cap after 3 of 6 trials"},
                                                           "head": {"cut_short": None}}}}
    assert margin_from(manifests) == 2.5 and margin_from({}) == 1.0
    assert cut_short_from(manifests) == {"lora": "time cap after 3 of 6 trials"}


def test_expected_best_of_n_uses_the_selection_metric_of_finished_trials_and_pareto_front():
    values = np.array([0.6, 0.7, 0.7, 0.9])
    for n in (1, 2, 3):
        draws = itertools.product(values, repeat=n)
        assert expected_max(values, n) == pytest.approx(np.mean([max(d) for d in draws]))
    trials = pd.DataFrame({"method": ["lora"] * 4 + ["head"], "state": ["complete", "pruned", "failed",
                           "complete", "complete"], "objective": [0.8, 0.95, None, 0.7, 0.5],
                           "best_val_accuracy": [0.1, 0.99, None, 0.1, 0.1]})
    curves = expected_max_curves(trials).set_index(["method", "trials"])["expected_best_val_f1"]
    assert curves[("lora", 1)] == pytest.approx(0.75) and curves[("lora", 2)] == pytest.approx(
        expected_max(np.array([0.8, 0.7]), 2))
    assert ("lora", 3) not in curves.index, "pruned and failed trials are not selectable"
    assert pareto_front(COSTS, "trainable_params") == ["head", "bitfit", "lora", "full"]
    assert pareto_front(COSTS.assign(accuracy=[0.7, 0.9, 0.89, 0.9]), "trainable_params") == ["head", "bitfit"]


def test_the_reference_distribution_matches_simulation_and_the_ci_is_where_p_crosses_alpha():
    rng = np.random.default_rng(6)
    for share, df in ((0.0, 2.0), (0.5, 2.0), (0.8, 4.0), (1.0, 2.0)):
        draws = np.sqrt(share) * rng.standard_normal(400_000) + np.sqrt(1 - share) * rng.standard_t(df, 400_000)
        for x in (1.0, 2.5, 4.0):
            assert rcompare.reference_tail(x, share, df) == pytest.approx(np.mean(np.abs(draws) > x), abs=2.5e-3)
    c = rstats.compare(study(np.random.default_rng(7), 300, 3, 3.0, 0.0))
    lo, hi = c.ci(0.95)
    assert c.p(null=lo) == pytest.approx(0.05, abs=1e-4) and c.p(null=hi) == pytest.approx(0.05, abs=1e-4)
    assert c.p(null=c.lower(0.05)) == pytest.approx(0.10, abs=1e-4)  # one-sided 95 % = two-sided 90 %
