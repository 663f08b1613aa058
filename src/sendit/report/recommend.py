"""The report's last word: which method to use within a budget, the Pareto front of accuracy against cost, and
how much tuning each method needed. Pure functions of run-folder files (results, metrics, `trials.csv`,
run.json), like the rest of the report.

The rule: among the methods within the budget, take the most accurate (mean test accuracy over seeds), then
recommend the cheapest method (fewest trainable parameters) whose difference from it is not significant by the
report's own comparison (Holm-corrected p >= alpha, or a CI that holds 0).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from sendit.config import HELDOUT_NAME as HELDOUT
from sendit.report.figures import FigureFile
from sendit.report.files import pretty
from sendit.report.load import RunData
from sendit.report.stats import significant
from sendit.report.style import WIDTH, Styles, legend, new_figure, save_figure
from sendit.report.tables import Table

COSTS = {"trainable_params": "trainable parameters", "saved_size_mb": "saved size (MB)",
         "runtime_sec": "training time (s)", "peak_memory_mb": "peak memory (MB)"}
BUDGET_FLAGS = {"max_trainable_params": "trainable_params", "max_peak_memory_mb": "peak_memory_mb",
                "max_train_minutes": "runtime_sec"}


@dataclass(frozen=True)
class Budget:
    """What a recommended method may cost (None = no limit); the flags of `sendit tune`."""

    max_trainable_params: float | None = None
    max_peak_memory_mb: float | None = None
    max_train_minutes: float | None = None

    def allows(self, row: pd.Series) -> bool:
        limits = {"trainable_params": self.max_trainable_params, "peak_memory_mb": self.max_peak_memory_mb,
                  "runtime_sec": None if self.max_train_minutes is None else 60 * self.max_train_minutes}
        return all(v is None or not (row.get(k, np.nan) > v) for k, v in limits.items())

    def text(self) -> str:
        parts = [f"at most {self.max_trainable_params:,.0f} trainable parameters" if self.max_trainable_params
                 is not None else "", f"at most {self.max_peak_memory_mb:,.0f} MB peak memory" if
                 self.max_peak_memory_mb is not None else "", f"at most {self.max_train_minutes:g} training minutes"
                 if self.max_train_minutes is not None else ""]
        return ", ".join(p for p in parts if p)


def budget_from(manifests: dict[str, dict]) -> Budget:
    """The budget flags a sweep was run with (run.json `tune`); no limits otherwise."""
    for m in manifests.values():
        tune = m.get("tune") or {}
        if any(tune.get(k) is not None for k in BUDGET_FLAGS):
            return Budget(**{k: tune.get(k) for k in BUDGET_FLAGS})
    return Budget()


def test_set_for(data: RunData) -> str | None:
    sets = list(dict.fromkeys(data.metrics.get("test_set", pd.Series(dtype=str))))
    return HELDOUT if HELDOUT in sets else (sets[0] if sets else None)


def method_costs(data: RunData, test_set: str) -> pd.DataFrame:
    """Per method (report name): mean test accuracy over seeds and mean cost of a training run."""
    m = data.metrics[data.metrics["test_set"] == test_set]
    acc = m.groupby("name", sort=False)["accuracy"].agg(["mean", "count"])
    cols = [c for c in [*COSTS, "trainable_pct"] if c in data.results.columns]
    costs = data.results.groupby("name", sort=False)[cols].mean(numeric_only=True)
    out = acc.rename(columns={"mean": "accuracy", "count": "seeds"}).join(costs, how="left")
    return out.loc[[n for n in data.names if n in out.index]]


def pareto_front(costs: pd.DataFrame, cost: str) -> list[str]:
    """Methods no other method beats on both accuracy (higher) and `cost` (lower), ties not dominating."""
    front = []
    for name, r in costs.iterrows():
        others = costs.drop(index=name)
        dominated = ((others["accuracy"] >= r["accuracy"]) & (others[cost] <= r[cost]) &
                     ((others["accuracy"] > r["accuracy"]) | (others[cost] < r[cost]))).any()
        if not dominated and np.isfinite(r[cost]):
            front.append(name)
    return front


def comparison(pairs: pd.DataFrame, a: str, b: str) -> dict | None:
    """The report's comparison of a and b as a − b (points), whichever order it was computed in."""
    if pairs.empty:
        return None
    hit = pairs[(pairs["a"] == a) & (pairs["b"] == b)]
    if len(hit):
        r = hit.iloc[0]
        return {"d": r["diff_points"], "lo": r["ci_lo"], "hi": r["ci_hi"], "p": r["p_holm"]}
    hit = pairs[(pairs["a"] == b) & (pairs["b"] == a)]
    if len(hit):
        r = hit.iloc[0]
        return {"d": -r["diff_points"], "lo": -r["ci_hi"], "hi": -r["ci_lo"], "p": r["p_holm"]}
    return None


def recommend(costs: pd.DataFrame, pairs: pd.DataFrame, budget: Budget = Budget(), alpha: float = 0.05) -> str:
    """One sentence: the cheapest method within `budget` not significantly worse than the best within it."""
    within = costs[[budget.allows(r) for _, r in costs.iterrows()]]
    if within.empty:
        cheapest = pretty(costs["trainable_params"].idxmin())
        return f"No method fits the budget ({budget.text()}): the cheapest, {cheapest}, needs more; raise the limits."
    best = within["accuracy"].idxmax()
    scope = f" within the budget ({budget.text()})" if budget.text() else ""
    for name in within.sort_values(["trainable_params", "accuracy"], ascending=[True, False]).index:
        if name == best:
            accuracy = 100 * within.loc[best, "accuracy"]
            cheaper = (within["trainable_params"] < within.loc[best, "trainable_params"]).any()
            why = ("every method that trains fewer parameters is significantly worse (or has no comparison with it)"
                   if cheaper else "no method trains fewer parameters")
            return (f"Use {pretty(best)}: it is the most accurate method{scope} ({accuracy:.1f} % test accuracy) "
                    f"and {why}; it {_share(within.loc[best])}.")
        c = comparison(pairs, name, best)
        if c is not None and not significant(c["lo"], c["hi"], c["p"], alpha):
            return (f"Use {pretty(name)}: it is not significantly worse than the best{scope} ({pretty(best)}, "
                    f"{c['d']:+.1f} points, 95 % CI [{c['lo']:.1f}, {c['hi']:.1f}], Holm p = {c['p']:.2g}) and "
                    f"{_share(within.loc[name])}.")
    return ""  # unreachable: the loop reaches `best`


def _share(row: pd.Series) -> str:
    if pd.notna(row.get("trainable_pct", np.nan)):
        return f"trains {row['trainable_pct']:.3g} % of the parameters"
    return f"trains {row['trainable_params']:,.0f} parameters"


# ------------------------------------------------------------------------------------------------ tuning effort
def expected_max(values: np.ndarray, n: int) -> float:
    """Expected best of n trials drawn with replacement from the observed trial scores (Dodge et al., 2019,
    "Show your work", eq. 1): sum_i v_(i) * ((i/N)^n - ((i-1)/N)^n) over the sorted scores."""
    v = np.sort(np.asarray(values, float))
    cdf = np.arange(1, len(v) + 1) / len(v)
    return float(np.sum(v * (cdf**n - (cdf - 1 / len(v)) ** n)))


def expected_max_curves(trials: pd.DataFrame) -> pd.DataFrame:
    """Expected best validation accuracy after 1..N trials, per method. Pruned trials count with the accuracy
    they reached (a search pays for them too); failed trials have none."""
    rows = []
    ok = trials[trials["state"].isin(["complete", "pruned"]) & trials["best_val_accuracy"].notna()]
    for method, g in ok.groupby("method", sort=False):
        for n in range(1, len(g) + 1):
            rows.append({"method": method, "trials": n,
                         "expected_best_val_accuracy": expected_max(g["best_val_accuracy"].to_numpy(), n)})
    return pd.DataFrame(rows, columns=["method", "trials", "expected_best_val_accuracy"])


def load_trials(run_dirs: list[Path | str]) -> pd.DataFrame:
    frames = [pd.read_csv(Path(d) / "trials.csv") for d in run_dirs if (Path(d) / "trials.csv").is_file()]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


# ------------------------------------------------------------------------------------------------ machine load
def busy_notes(data: RunData, trials: pd.DataFrame) -> list[str]:
    """Runtimes and memory compare only on a quiet machine: warn where the 1-minute load average beyond this
    run's own threads was at least one core."""
    notes = []
    r = data.results
    if {"load_avg_1m_before", "torch_threads"} <= set(r.columns):
        busy = r[r["load_avg_1m_before"] - r["torch_threads"] >= 1]
        if len(busy):
            notes.append(f"the machine was busy during {len(busy)} of {len(r)} training runs (1-minute load up "
                         f"to {busy['load_avg_1m_before'].max():.1f} with {int(r['torch_threads'].max())} threads of "
                         f"its own): their runtimes and speeds are not comparable with a quiet machine's.")
    if not trials.empty and {"load_avg_1m", "cores"} <= set(trials.columns):
        busy = trials[trials["load_avg_1m"] > trials["cores"]]
        if len(busy):
            notes.append(f"{len(busy)} of {len(trials)} tuning trials ran with a load above the core count: their "
                         f"times in trials.csv are inflated and a time cap bought fewer trials.")
    return notes


@dataclass
class Recommendation:
    sentence: str
    tables: list[Table] = field(default_factory=list)
    curves: pd.DataFrame = field(default_factory=pd.DataFrame)


def build_recommendation(data: RunData, stats: dict[str, pd.DataFrame], run_dirs: list[Path | str],
                         alpha: float = 0.05, budget: Budget | None = None) -> Recommendation:
    """The sentence, the Pareto table and the expected-best-of-n table for the report; load warnings become
    notes."""
    trials = load_trials(run_dirs)
    for note in busy_notes(data, trials):
        data.note(note)
    ts = test_set_for(data)
    if ts is None or data.results.empty:
        return Recommendation("")
    costs = method_costs(data, ts)
    if "trainable_params" not in costs.columns or costs["trainable_params"].isna().all():
        data.note("the results hold no trainable_params column, so no method is recommended (the rule picks the "
                  "method that trains the fewest parameters).")
        return Recommendation("")
    pairs = stats["seed_pairs"] if data.multi_seed and not stats["seed_pairs"].empty else stats["pairs"]
    pairs = pairs[pairs["test_set"] == ts] if not pairs.empty else pairs
    sentence = recommend(costs.dropna(subset=["accuracy"]), pairs, budget or budget_from(data.manifests), alpha)
    tables = [_pareto_table(costs)]
    curves = expected_max_curves(trials) if not trials.empty else pd.DataFrame()
    if not curves.empty:
        shown = curves.pivot(index="trials", columns="method", values="expected_best_val_accuracy")
        shown = shown.map(lambda v: "–" if pd.isna(v) else f"{v:.4f}").reset_index()
        shown.columns = ["Trials", *[pretty(c) for c in shown.columns[1:]]]
        tables.append(Table("expected_best_of_n", "Expected best validation accuracy after n trials (Dodge et "
                            "al., 2019)", curves, shown))
    return Recommendation(sentence, tables, curves)


def expected_max_figure(curves: pd.DataFrame, names: list[str], folder: Path, dpi: int) -> FigureFile:
    fig = new_figure(WIDTH / 2, 2.6)
    ax = fig.subplots()
    style = Styles(names)
    for method, g in curves.groupby("method", sort=False):
        ax.plot(g["trials"], 100 * g["expected_best_val_accuracy"], label=pretty(method), **style(method))
    ax.set_xlabel("trials")
    ax.set_ylabel("expected best val. accuracy (%)")
    legend(fig, [ax])
    png, pdf = save_figure(fig, folder, "expected_best_of_n", dpi)
    return FigureFile("expected_best_of_n", "Expected best validation accuracy against the number of trials "
                      "(Dodge et al., 2019): how much tuning each method needed", png, pdf)


def _pareto_table(costs: pd.DataFrame) -> Table:
    raw = costs.reset_index().rename(columns={"index": "name"})
    shown = pd.DataFrame({"Method": [pretty(n) for n in costs.index],
                          "Accuracy": [f"{v:.4f}" for v in costs["accuracy"]]})
    for cost, label in COSTS.items():
        if cost in costs.columns:
            front = set(pareto_front(costs, cost))
            raw[f"front_{cost}"] = [n in front for n in costs.index]
            shown[label[0].upper() + label[1:]] = [f"{v:,.4g}{' ★' if n in front else ''}"
                                                   for n, v in costs[cost].items()]
    return Table("pareto", "Accuracy against cost (★ = on the Pareto front for that cost)", raw, shown)
