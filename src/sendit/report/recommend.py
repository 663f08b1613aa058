"""The report's last word: which method to use within a budget, the Pareto front of accuracy against cost, and
how much tuning each method needed. Pure functions of run-folder files (results, metrics, `trials.csv`,
run.json), like the rest of the report.

The rule, a non-inferiority decision with an explicit margin δ (`--margin`, accuracy points):
1. The best method within the budget is the one with the highest mean *validation* accuracy, so that it is not
   chosen on the test rows it is then compared on (no winner's curse). `<method>-default` arms are reported
   beside, never candidates.
2. Each cheaper candidate (fewer trainable parameters) is compared with the best on the test rows: it is
   non-inferior when the one-sided lower bound of (candidate − best) is above −δ. The bounds are simultaneous
   over the cheaper candidates (Bonferroni: each at alpha / m), so the family is exactly the comparisons the
   decision uses.
3. The cheapest non-inferior candidate is recommended; if none, the best. A candidate the data cannot place
   (its bound below −δ, its upper bound above) is named with what would decide it (more seeds or test rows).
With one seed the comparisons are of trained models, and the sentence says so.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd

from sendit.config.schema import HELDOUT_NAME as HELDOUT
from sendit.report.compare import Comparison
from sendit.report.figures import FigureFile
from sendit.report.files import pretty
from sendit.report.load import RunData
from sendit.report.stats import DEFAULT_SUFFIX, MIN_SEEDS
from sendit.report.style import WIDTH, Styles, legend, new_figure, save_figure
from sendit.report.tables import Table
from sendit.run.folder import TRIALS

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
    """Per method (report name): mean test accuracy over seeds, mean validation accuracy (what selects the best)
    and mean cost of a training run."""
    m = data.metrics[data.metrics["test_set"] == test_set]
    acc = m.groupby("name", sort=False)["accuracy"].agg(["mean", "count"])
    cols = [c for c in [*COSTS, "trainable_pct", "val_accuracy"] if c in data.results.columns]
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


def comparison(pairs: pd.DataFrame, a: str, b: str) -> Comparison | None:
    """The report's comparison of a and b as a − b (points), whichever order it was computed in."""
    if pairs.empty:
        return None
    for x, y, sign in ((a, b, 1), (b, a, -1)):
        hit = pairs[(pairs["a"] == x) & (pairs["b"] == y)]
        if len(hit):
            c = hit.iloc[0]["comparison"]
            return c if sign == 1 else replace(c, d=-c.d)
    return None


@dataclass
class Decision:
    """A cheaper candidate against the best: the comparison and its simultaneous one-sided bounds."""

    name: str
    c: Comparison | None
    lower: float = np.nan
    upper: float = np.nan

    def state(self, margin: float) -> str:
        if self.c is None:
            return "no comparison"
        return "non-inferior" if self.lower > -margin else "inferior" if self.upper < -margin else "undecided"


def recommend(costs: pd.DataFrame, pairs: pd.DataFrame, budget: Budget = Budget(), alpha: float = 0.05,
              margin: float = 1.0, cut_short: dict[str, str] | None = None, info: dict[str, dict] | None = None) -> str:
    """The recommendation (module docstring): the cheapest method within `budget` whose accuracy is within
    `margin` points of the best's, shown with simultaneous one-sided bounds; else the best, with what would decide.
    `info`: the methods' display names (RunData.method_info)."""
    candidates = costs[~costs.index.str.endswith(DEFAULT_SUFFIX)]
    within = candidates[[budget.allows(r) for _, r in candidates.iterrows()]]
    if within.empty:
        cheapest = pretty(candidates["trainable_params"].idxmin(), info)
        return f"No method fits the budget ({budget.text()}): the cheapest, {cheapest}, needs more; raise the limits."
    by_val = "val_accuracy" in within and within["val_accuracy"].notna().all()
    best = within["val_accuracy" if by_val else "accuracy"].idxmax()
    scope = f" within the budget ({budget.text()})" if budget.text() else ""
    chosen = ("the highest validation accuracy" if by_val else "the highest test accuracy (no validation scores: "
              "the comparisons with it are optimistic, as it was chosen on these rows)")
    cheaper = within[within["trainable_params"] < within.loc[best, "trainable_params"]]
    decisions = [_decide(n, comparison(pairs, n, best), alpha / max(len(cheaper), 1))
                 for n in cheaper.sort_values(["trainable_params"]).index]
    seeds = next((d.c.n_seeds for d in decisions if d.c is not None), int(within.loc[best, "seeds"]))
    basis = (f"Based on one trained model per method (one seed; a recommendation about the methods needs at least "
             f"{MIN_SEEDS} seeds): " if seeds < 2 else f"Across {seeds} seeds: ")
    rule = (f"margin δ = {margin:g} accuracy points; one-sided {100 * (1 - alpha):.0f}% lower bounds of (method − "
            f"best), simultaneous over the {len(decisions)} cheaper method{'s' * (len(decisions) != 1)} (Bonferroni)")
    best_text = f"{pretty(best, info)} ({100 * within.loc[best, 'accuracy']:.1f} % test accuracy, {chosen}{scope})"
    ok = [d for d in decisions if d.state(margin) == "non-inferior"]
    if ok:
        d = ok[0]
        head = (f"Use {pretty(d.name, info)}: it is within the margin of the best, {best_text}: {pretty(d.name, info)} − "
                f"{pretty(best, info)} = {d.c.d:+.1f} points, lower bound {d.lower:.1f} > −{margin:g}; it "
                f"{_share(within.loc[d.name])}.")
    elif not decisions:
        head = f"Use {pretty(best, info)}: the best, {best_text}, and no method trains fewer parameters."
    else:
        head = f"Use {pretty(best, info)}: the best, {best_text}; no cheaper method is shown to be within the margin."
    cheaper_than_pick = decisions[: decisions.index(ok[0])] if ok else decisions  # those the pick passed over
    unsure = [_undecided(d, margin, alpha / max(len(cheaper), 1), info) for d in cheaper_than_pick
              if d.state(margin) in ("undecided", "no comparison")]
    worse = [pretty(d.name, info) for d in decisions if d.state(margin) == "inferior"]
    tail = ([f"Worse than the best by more than the margin: {', '.join(worse)}."] if worse else []) + unsure
    flags = [f"{pretty(n, info)}'s search was cut short ({why}): its tuned configuration had less search than the others'."
             for n, why in (cut_short or {}).items() if n in within.index]
    return " ".join([basis + head, *tail, *flags, f"({rule}.)"])


def _decide(name: str, c: Comparison | None, alpha: float) -> Decision:
    if c is None:
        return Decision(name, None)
    return Decision(name, c, c.lower(alpha), -replace(c, d=-c.d).lower(alpha))


def _undecided(d: Decision, margin: float, alpha: float, info: dict[str, dict] | None) -> str:
    """Insufficient evidence for one cheaper method, and what would decide it."""
    if d.c is None:
        return f"Insufficient evidence for {pretty(d.name, info)}: no comparison with the best on the same test rows."
    where = f"{pretty(d.name, info)} − best = {d.c.d:+.1f} points, bounds [{d.lower:.1f}, {d.upper:.1f}]"
    if d.c.d <= -margin:
        return (f"Insufficient evidence for {pretty(d.name, info)} ({where}): it is probably worse than the margin; more "
                f"seeds or test rows would confirm it.")
    if d.c.n_seeds < 2:  # the spread of training runs is unknown: no count of rows can stand in for it
        return (f"Insufficient evidence for {pretty(d.name, info)} ({where}): train at least {MIN_SEEDS} seeds per method "
                f"(--seeds 0,1,2) to know the seed-to-seed spread.")
    counts = sorted({*range(d.c.n_seeds + 1, d.c.n_seeds + 6), 10, 15, 20, 30, 50, 75, 100, 150, 200})
    seeds = next((s for s in counts if s > d.c.n_seeds and d.c.scaled(n_seeds=s).lower(alpha) > -margin), None)
    rows = next((n for n in (2**k * d.c.n_rows for k in range(1, 11)) if d.c.scaled(n_rows=n).lower(alpha) > -margin),
                None)
    options = ([f"about {seeds} seeds" if seeds else ""] + [f"about {rows:,} test rows" if rows else ""])
    need = " or ".join(o for o in options if o) or "far more seeds and test rows than this run has"
    return f"Insufficient evidence for {pretty(d.name, info)} ({where}): {need} would decide it."


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
    """Expected best validation macro-F1 (the selection metric) after 1..N trials, per method, over the trials that
    could be selected: the finished ones (pruned and failed trials never become a method's configuration)."""
    rows = []
    ok = trials[(trials["state"] == "complete") & trials["objective"].notna()]
    for method, g in ok.groupby("method", sort=False):
        for n in range(1, len(g) + 1):
            rows.append({"method": method, "trials": n,
                         "expected_best_val_f1": expected_max(g["objective"].to_numpy(float), n)})
    return pd.DataFrame(rows, columns=["method", "trials", "expected_best_val_f1"])


def load_trials(run_dirs: list[Path | str]) -> pd.DataFrame:
    frames = [pd.read_csv(Path(d) / TRIALS) for d in run_dirs if (Path(d) / TRIALS).is_file()]
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
                         alpha: float = 0.05, budget: Budget | None = None,
                         margin: float | None = None) -> Recommendation:
    """The sentence, the Pareto table and the expected-best-of-n table for the report; load warnings become
    notes. `margin`: the non-inferiority margin in points (default: the sweep's `tune.margin`, else 1)."""
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
    if not pairs.empty:
        pairs = pairs[(pairs["test_set"] == ts) & (pairs["family"] == "methods")]
        if "seed" in pairs:  # one seed: the first seed's trained models
            pairs = pairs[pairs["seed"] == pairs["seed"].min()]
    margin = margin if margin is not None else margin_from(data.manifests)
    sentence = recommend(costs.dropna(subset=["accuracy"]), pairs, budget or budget_from(data.manifests), alpha,
                         margin, cut_short_from(data.manifests), data.method_info)
    tables = [_pareto_table(costs, data)]
    curves = expected_max_curves(trials) if not trials.empty else pd.DataFrame()
    if not curves.empty:
        shown = curves.pivot(index="trials", columns="method", values="expected_best_val_f1")
        shown = shown.map(lambda v: "–" if pd.isna(v) else f"{v:.4f}").reset_index()
        shown.columns = ["Trials", *[data.pretty(c) for c in shown.columns[1:]]]
        tables.append(Table("expected_best_of_n", "Expected best validation macro-F1 after n finished trials (Dodge "
                            "et al., 2019)", curves, shown))
    return Recommendation(sentence, tables, curves)


def margin_from(manifests: dict[str, dict], default: float = 1.0) -> float:
    """The margin a sweep was run with (run.json `tune.margin`), else `default`."""
    for m in manifests.values():
        if (m.get("tune") or {}).get("margin") is not None:
            return float(m["tune"]["margin"])
    return default


def cut_short_from(manifests: dict[str, dict]) -> dict[str, str]:
    """Methods whose search a time cap stopped before its trial budget (run.json `tuned.<method>.cut_short`)."""
    out = {}
    for m in manifests.values():
        for name, t in (m.get("tuned") or {}).items():
            if isinstance(t, dict) and t.get("cut_short"):
                out[name] = str(t["cut_short"])
    return out


def expected_max_figure(curves: pd.DataFrame, data: RunData, folder: Path, dpi: int) -> FigureFile:
    fig = new_figure(WIDTH / 2, 2.6)
    ax = fig.subplots()
    style = Styles(data.names)
    for method, g in curves.groupby("method", sort=False):
        ax.plot(g["trials"], 100 * g["expected_best_val_f1"], label=data.pretty(method), **style(method))
    ax.set_xlabel("finished trials")
    ax.set_ylabel("expected best val. macro-F1 (%)")
    legend(fig, [ax])
    png, pdf = save_figure(fig, folder, "expected_best_of_n", dpi)
    return FigureFile("expected_best_of_n", "Expected best validation macro-F1 against the number of finished trials "
                      "(Dodge et al., 2019): how much tuning each method needed", png, pdf)


def _pareto_table(costs: pd.DataFrame, data: RunData) -> Table:
    raw = costs.reset_index().rename(columns={"index": "name"})
    shown = pd.DataFrame({"Method": [data.pretty(n) for n in costs.index],
                          "Accuracy": [f"{v:.4f}" for v in costs["accuracy"]]})
    for cost, label in COSTS.items():
        if cost in costs.columns:
            front = set(pareto_front(costs, cost))
            raw[f"front_{cost}"] = [n in front for n in costs.index]
            shown[label[0].upper() + label[1:]] = [f"{v:,.4g}{' ★' if n in front else ''}"
                                                   for n, v in costs[cost].items()]
    return Table("pareto", "Accuracy against cost (★ = on the Pareto front for that cost)", raw, shown)
