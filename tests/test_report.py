"""`sendit.report`: files written, table numbers = CSVs, statistics = reference computations, HTML safe
and rendering in headless Chromium."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers import save_tiny_opt
from PIL import Image
from report_fixtures import SCRIPT_TWEET, make_run, make_study_folder
from scipy import stats as sps

from sendit.cli import main
from sendit.report import build_report, load_runs, main_report
from sendit.report import stats as rstats
from sendit.report import tables as rtables
from sendit.report.files import atomic_write_text
from sendit.report.stats import compute_stats
from sendit.report.tables import fmt, latex_escape

FULL_FIGURES = [
    "learning_curves",
    "learning_curves_by_method",
    "loss_curves",
    "peft_tradeoff",
    "cost_tradeoff",
    "confusion_matrices",
    "distillation",
]
FULL_TABLES = ["validation", "test", "test_ci", "comparisons", "distillation"]
# Lower resolution where the test is not about resolution: saving PNG/PDF dominates the run time.
FAST = {"dpi": 80, "n_boot": 500}


@pytest.fixture(scope="module")
def full(tmp_path_factory) -> tuple[Path, Path]:
    run = make_run(tmp_path_factory.mktemp("full") / "run1", distill=True)
    return run, build_report([run])


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> tuple[Path, Path]:
    run = make_study_folder(tmp_path_factory.mktemp("study") / "study")
    return run, build_report([run], **FAST)


@pytest.fixture(scope="module")
def seeds(tmp_path_factory) -> tuple[Path, Path]:
    run = make_run(
        tmp_path_factory.mktemp("seeds") / "run3",
        methods=("bitfit", "lora"),
        seeds=(0, 1, 2),
        test_sets={"sentiment140-manual": 100},
    )
    return run, build_report([run], **FAST)


def md_table(path: Path) -> pd.DataFrame:
    """Parse a Markdown table written by the report back into strings."""
    rows = [
        ln.strip().strip("|").split(" | ")
        for ln in path.read_text().splitlines()
        if ln.startswith("|")
    ]
    return pd.DataFrame(
        [[c.strip() for c in r] for r in rows[2:]], columns=[c.strip() for c in rows[0]]
    )


def csvs(run: Path, suffix: str) -> pd.DataFrame:
    frames = []
    for p in sorted(run.glob(f"*{suffix}")):
        df = pd.read_csv(p)
        df["file_method"] = p.name[: -len(suffix)]
        frames.append(df)
    return pd.concat(frames, ignore_index=True)


def test_import_is_torch_free():
    code = (
        "import sys, sendit.report; bad = {'torch', 'transformers'} & set(sys.modules); print(bad)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "set()"


def test_full_report_writes_every_file(full):
    _, out = full
    for key in FULL_FIGURES:
        png, pdf = out / "figures" / f"{key}.png", out / "figures" / f"{key}.pdf"
        with Image.open(png) as im:
            im.load()
            assert im.width > 500 and round(im.info["dpi"][0]) == 300, key
        assert pdf.read_bytes()[:5] == b"%PDF-", key
    for key in FULL_TABLES:
        for ext in ("csv", "md", "tex"):
            assert (out / "tables" / f"{key}.{ext}").stat().st_size > 0, f"{key}.{ext}"
    for name in ("index.html", "report.md", "stats.json"):
        assert (out / name).stat().st_size > 0
    assert not list(out.rglob("*.tmp")), "atomic writes left temporary files"
    assert out == full[0] / "report"


def test_validation_and_test_tables_equal_csvs(full):
    run, out = full
    results = csvs(run, "_results.csv").set_index("file_method")
    table = pd.read_csv(out / "tables" / "validation.csv").set_index("name")
    cols = [
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
    pd.testing.assert_frame_equal(
        table.loc[results.index, cols], results[cols], check_names=False, check_dtype=False
    )
    shown = md_table(out / "tables" / "validation.md").set_index("Method")
    assert shown.loc["LoRA", "Best val F1"] == f"{results.loc['lora', 'best_val_f1']:.4f}"
    assert (
        shown.loc["BitFit", "Trainable params"] == f"{results.loc['bitfit', 'trainable_params']:,}"
    )

    metrics = csvs(run, "_inference_metrics_summary.csv").set_index(["file_method", "test_set"])
    table = pd.read_csv(out / "tables" / "test.csv").set_index(["name", "test_set"])
    cols = ["accuracy", "f1_macro", "f1_weighted", "inference_time_sec", "tweets_per_sec"]
    pd.testing.assert_frame_equal(table.loc[metrics.index, cols], metrics[cols], check_names=False)
    shown = md_table(out / "tables" / "test.md")
    assert list(shown["Test set"][:2]) == ["sentiment140-manual", "held-out split"]  # the run folder's order
    for _, row in shown.iterrows():
        name = {"BitFit": "bitfit", "LoRA": "lora", "Full FT": "full"}.get(
            row["Method"], row["Method"]
        )
        ref = metrics.loc[(name, row["Test set"])]
        assert row["Accuracy"] == f"{ref['accuracy']:.4f}"
        assert row["F1 weighted"] == f"{ref['f1_weighted']:.4f}"


def test_latex_tables_are_booktabs_and_escaped(full):
    _, out = full
    tex = (out / "tables" / "validation.tex").read_text()
    for cmd in (r"\toprule", r"\midrule", r"\bottomrule", r"\begin{tabular}"):
        assert cmd in tex
    body = tex.split("\n", 1)[1]  # the first line is a `%` comment naming the package
    assert r"Trainable \%" in body and r"Memory $\Delta$ (MB)" in body
    cells = body.replace(r"\%", "").replace(r"\_", "").replace(" & ", "")
    assert "%" not in cells and "_" not in cells and "&" not in cells
    assert latex_escape("a_b 5% R&D ± x") == r"a\_b 5\% R\&D $\pm$ x"
    for tabular in body.split(r"\begin{tabular}")[1:]:
        rows = [ln for ln in tabular.splitlines() if ln.endswith(r"\\")]
        assert all(ln.count(" & ") == rows[0].count(" & ") for ln in rows)
    assert fmt("pct", 0.08) == "0.08" and fmt("count", float("nan")) == "–"


def test_latex_tables_fit_a_column(full):
    """Wide tables are split into stacked tabulars that each fit a paper column, every one naming its rows; test
    sets are row groups rather than a wide column."""
    _, out = full
    for key in FULL_TABLES:
        tex = (out / "tables" / f"{key}.tex").read_text()
        shown = md_table(out / "tables" / f"{key}.md")
        seen = []
        for part in tex.split(r"\begin{tabular}")[1:]:
            header = [c.strip() for c in part.split(r"\toprule", 1)[1].split(r"\\", 1)[0].split(" & ")]
            assert header[0] in rtables.KEY_HEADERS, (key, header)  # every part names its rows
            columns = [c for c in shown.columns if latex_escape(c) in header]
            width = sum(max([len(c)] + [len(v) for v in shown[c]]) + 2 for c in columns)
            values = [c for c in columns if c not in rtables.KEY_HEADERS]
            assert width <= rtables.LATEX_WIDTH or len(values) == 1, (key, columns, width)
            seen += values
        assert sorted(seen) == sorted(c for c in shown.columns if c not in rtables.KEY_HEADERS), key
    test_tex = (out / "tables" / "test.tex").read_text()
    assert r"\emph{held-out split}" in test_tex and "Test set" not in test_tex
    assert len((out / "tables" / "validation.tex").read_text().split(r"\begin{tabular}")) > 2  # it was split


def test_test_table_shows_what_each_method_trained_and_saved(full):
    """Not the merged inference model's size, the same for every method: trainable parameters and saved size,
    in KB below 0.1 MB."""
    run, out = full
    results = csvs(run, "_results.csv").set_index("file_method")
    table = pd.read_csv(out / "tables" / "test.csv")
    assert "params" not in table.columns and "model_size_mb" not in table.columns
    for _, row in table.iterrows():
        assert row["trainable_params"] == results.loc[row["name"], "trainable_params"]
        assert row["saved_size_mb"] == pytest.approx(results.loc[row["name"], "saved_size_mb"])
    shown = md_table(out / "tables" / "test.md")
    assert "Trainable params" in shown.columns and "Saved size" in shown.columns
    assert fmt("size", 86.6) == "86.6 MB" and fmt("size", 3 / 1024) == "3.0 KB" and fmt("size", 0.1) == "0.1 MB"
    assert fmt("size", 0.05, 0.01) == "51.2 ± 10.2 KB"


def test_mcnemar_matches_statsmodels_on_known_table():
    mcnemar = pytest.importorskip("statsmodels.stats.contingency_tables").mcnemar
    # 2x2 of (A right?, B right?): 50 both, 12 only A, 3 only B, 35 neither.
    a = np.array([1] * 50 + [1] * 12 + [0] * 3 + [0] * 35, bool)
    b = np.array([1] * 50 + [0] * 12 + [1] * 3 + [0] * 35, bool)
    ref = mcnemar([[50, 12], [3, 35]], exact=True).pvalue
    only_a, only_b, p = rstats.mcnemar_exact(a, b)
    assert (only_a, only_b) == (12, 3)
    assert p == pytest.approx(ref, rel=1e-12)
    assert p == pytest.approx(0.03515625, rel=1e-9)  # 2 * P(X <= 3), X ~ Bin(15, 1/2)
    assert rstats.mcnemar_exact(a, a)[2] == 1.0


def test_report_pairs_match_reference(full):
    mcnemar = pytest.importorskip("statsmodels.stats.contingency_tables").mcnemar
    run, out = full
    pairs = json.loads((out / "stats.json").read_text())["pairs"]
    pair = next(p for p in pairs if (p["a"], p["b"], p["test_set"]) == ("bitfit", "lora", "sentiment140-manual"))
    preds = {
        m: pd.read_csv(run / f"{m}_inference_predictions.csv").query("test_set == 'sentiment140-manual'")
        for m in ("bitfit", "lora")
    }
    ca = (preds["bitfit"]["label"] == preds["bitfit"]["prediction"]).to_numpy()
    cb = (preds["lora"]["label"] == preds["lora"]["prediction"]).to_numpy()
    table = [[np.sum(ca & cb), np.sum(ca & ~cb)], [np.sum(~ca & cb), np.sum(~ca & ~cb)]]
    assert pair["mcnemar_p"] == pytest.approx(mcnemar(table, exact=True).pvalue, rel=1e-12)
    d = 100 * (ca.astype(float) - cb)  # one seed: the paired t on the row differences, CI and p from it
    half = sps.t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / np.sqrt(len(d))
    assert [pair["ci_lo"], pair["ci_hi"]] == pytest.approx([d.mean() - half, d.mean() + half])
    assert pair["p"] == pytest.approx(sps.ttest_1samp(d, 0.0).pvalue)
    assert pair["diff_points"] == pytest.approx(100 * (ca.mean() - cb.mean()))
    assert pair["verdict"].startswith("LoRA's trained model beats BitFit's by ")
    assert "about these two trained models (seed 0), not the methods" in pair["verdict"]


def _f1_reference(y: np.ndarray, p: np.ndarray) -> float:
    scores = []
    for c in (0, 1):
        tp, fp, fn = (
            np.sum((y == c) & (p == c)),
            np.sum((y != c) & (p == c)),
            np.sum((y == c) & (p != c)),
        )
        scores.append(2 * tp / (2 * tp + fp + fn) if 2 * tp + fp + fn else 0.0)
    return float(np.mean(scores))


@pytest.mark.parametrize("chunk", [None, 1000])
def test_bootstrap_ci_matches_independent_implementation(monkeypatch, chunk):
    if chunk:  # force many small chunks: the stream, and so the interval, must not change
        monkeypatch.setattr(rstats, "_CHUNK_ELEMENTS", chunk)
    gen = np.random.default_rng(42)
    y = gen.integers(0, 2, 300)
    p = np.where(gen.random(300) < 0.8, y, 1 - y)
    ci = rstats.bootstrap_metric_ci(y, p, n_boot=400, seed=7)
    idx = np.random.default_rng(7).integers(0, 300, size=(400, 300))
    accs = (y[idx] == p[idx]).mean(axis=1)
    f1s = [_f1_reference(y[i], p[i]) for i in idx]
    assert [ci["accuracy_lo"], ci["accuracy_hi"]] == pytest.approx(np.percentile(accs, [2.5, 97.5]))
    assert [ci["f1_macro_lo"], ci["f1_macro_hi"]] == pytest.approx(np.percentile(f1s, [2.5, 97.5]))
    assert ci["f1_macro"] == pytest.approx(_f1_reference(y, p))


def test_bootstrap_ci_near_analytic_bounds():
    n, acc = 4000, 0.8
    correct = np.zeros(n, int)
    correct[: int(n * acc)] = 1
    ci = rstats.bootstrap_metric_ci(np.ones(n, int), correct, n_boot=2000, seed=0)
    half = 1.96 * np.sqrt(acc * (1 - acc) / n)
    assert ci["accuracy_lo"] == pytest.approx(acc - half, abs=0.003)
    assert ci["accuracy_hi"] == pytest.approx(acc + half, abs=0.003)


def test_verdict_wording():
    one = rstats.Comparison(-1.4, 0.4, 358, 0.16, 0.0, 359, 1)
    assert rstats.verdict("BitFit", "LoRA", one, 0.001, seed=0, mcnemar=0.002) == (
        "LoRA's trained model beats BitFit's by 1.4 points (95% CI [0.6, 2.2], p = 0.001, McNemar p = 0.002); this "
        "is about these two trained models (seed 0), not the methods: a verdict about the methods needs at least 3 "
        "seeds")
    three = rstats.Comparison(0.5, 0.4, 2.5, 0.1, 0.06, 359, 3)
    lo, hi = three.ci()
    assert rstats.verdict("LoRA", "BitFit", three, 0.2, family=3) == (
        f"No significant difference between the methods LoRA and BitFit (LoRA − BitFit = 0.5 points, 95% CI "
        f"[{lo:.1f}, {hi:.1f}], p (Holm, 3 pairs) = 0.200; 359 test rows × 3 seeds)")
    assert rstats.verdict("A", "B", three, 0.001).startswith("A beats B by 0.5 points across seeds")


def test_study_only_folder(study):
    run, out = study
    notes = json.loads((out / "stats.json").read_text())["notes"]
    assert "trainable parameters not recorded — PEFT trade-off plot skipped." in notes
    assert any("loss curves skipped" in n for n in notes)
    assert any("no run.json" in n for n in notes)
    figs = {p.stem for p in (out / "figures").glob("*.png")}
    assert figs == {
        "learning_curves",
        "learning_curves_by_method",
        "cost_tradeoff",
        "confusion_matrices",
    }
    results = csvs(run, "_results.csv").set_index("file_method")
    table = pd.read_csv(out / "tables" / "validation.csv").set_index("name")
    cols = ["best_val_f1", "val_accuracy", "runtime_sec", "memory_delta_mb"]
    pd.testing.assert_frame_equal(table.loc[results.index, cols], results[cols], check_names=False)
    metrics = csvs(run, "_inference_metrics_summary.csv").set_index("file_method")
    table = pd.read_csv(out / "tables" / "test.csv").set_index("name")
    assert table["test_set"].tolist() == ["test", "test"]
    pd.testing.assert_frame_equal(
        table.loc[metrics.index, metrics.columns[:4]], metrics.iloc[:, :4], check_names=False
    )
    pairs = pd.read_csv(out / "tables" / "comparisons.csv")
    assert len(pairs) == 1 and pairs.loc[0, "n"] == 150
    assert "Notes" in (out / "report.md").read_text()


def test_multi_seed_mean_std_and_across_seed_tests(seeds):
    run, out = seeds
    results = pd.read_csv(run / "lora_results.csv")
    shown = md_table(out / "tables" / "validation.md").set_index("Method")
    mean, std = results["best_val_f1"].mean(), results["best_val_f1"].std(ddof=1)
    assert shown.loc["LoRA", "Best val F1"] == f"{mean:.4f} ± {std:.4f}"
    assert shown.loc["LoRA", "Seeds"] == "3"
    raw = pd.read_csv(out / "tables" / "validation.csv").set_index("name")
    assert raw.loc["lora", "runtime_sec_std"] == pytest.approx(results["runtime_sec"].std(ddof=1))

    summary = json.loads((out / "stats.json").read_text())
    (across,) = summary["seed_pairs"]
    acc = {
        m: pd.read_csv(run / f"{m}_inference_metrics_summary.csv")["accuracy"]
        for m in ("bitfit", "lora")
    }
    delta = 100 * (acc["bitfit"] - acc["lora"])
    assert across["seed_sd_points"] == pytest.approx(delta.std(ddof=1))
    assert across["diff_points"] == pytest.approx(delta.mean())
    assert across["ci_lo"] < across["diff_points"] < across["ci_hi"] and across["df"] > 1
    assert " test rows × 3 seeds)" in across["verdict"]
    assert len(summary["pairs"]) == 3 and len(summary["metric_ci"]) == 6
    assert (out / "tables" / "comparisons_across_seeds.md").is_file()
    assert "Across seeds (a verdict about the methods)" in (out / "index.html").read_text()


def test_distillation_retention(full):
    run, out = full
    table = pd.read_csv(out / "tables" / "distillation.csv")
    m = {
        x: pd.read_csv(run / f"{x}_inference_metrics_summary.csv").set_index("test_set")
        for x in ("lora", "distill-2L-lora")
    }
    row = table.set_index("test_set").loc["sentiment140-manual"]
    assert row["teacher"] == "lora"
    s, t = m["distill-2L-lora"].loc["sentiment140-manual"], m["lora"].loc["sentiment140-manual"]
    assert row["retention_pct"] == pytest.approx(100 * s["accuracy"] / t["accuracy"])
    assert row["speedup"] == pytest.approx(s["tweets_per_sec"] / t["tweets_per_sec"])


def test_two_runs_with_the_same_method_are_labelled_by_run(tmp_path):
    a = make_run(tmp_path / "runA", methods=("bitfit", "lora"), test_sets={"manual": 60}, seed=1)
    b = make_run(tmp_path / "runB", methods=("lora",), test_sets={"manual": 60}, seed=1)
    data = load_runs([a, b])
    assert data.names == ["bitfit", "runA/lora", "runB/lora"]
    assert list(rtables.test_table(data).shown["Method"]) == ["BitFit", "runA/LoRA", "runB/LoRA"]
    pairs = compute_stats(data, rstats.StatsConfig(n_boot=100))["pairs"]
    assert len(pairs) == 3 and set(pairs["b"]) == {"runA/lora", "runB/lora"}
    # another seed draws other true labels: same row_ids, different rows — must not be paired
    c = make_run(tmp_path / "runC", methods=("lora",), test_sets={"manual": 60}, seed=2)
    data = load_runs([a, c])
    assert len(compute_stats(data, rstats.StatsConfig(n_boot=100))["pairs"]) == 1
    assert any("disagree on true labels" in n for n in data.notes)


def test_a_second_report_in_one_process_uses_its_own_method_names_and_order(tmp_path):
    """Display names and order come from each report's own run.json: a run folder that records a name and a rank for
    lora must not rename or reorder lora in a later report of an older folder that records none."""
    a = make_run(tmp_path / "recorded", methods=("bitfit", "lora"), test_sets={"manual": 60}, seed=1)
    manifest = json.loads((a / "run.json").read_text())
    manifest["method_info"] = {"lora": {"display_name": "LoRA (recorded)", "cost_rank": -1, "is_adapter": True}}
    (a / "run.json").write_text(json.dumps(manifest))
    b = make_run(tmp_path / "old", methods=("bitfit", "lora"), test_sets={"manual": 60}, seed=1)

    first = build_report([a], **FAST)
    assert "Methods: LoRA (recorded), BitFit" in (first / "report.md").read_text()
    second = build_report([b], **FAST)
    text = (second / "report.md").read_text()
    assert "Methods: BitFit, LoRA\n" in text and "recorded" not in text
    assert list(md_table(second / "tables" / "test.md")["Method"]) == ["BitFit", "LoRA"]
    assert "recorded" not in (second / "index.html").read_text()
    assert load_runs([b]).method_info == {} and load_runs([a]).pretty("runA/lora") == "runA/LoRA (recorded)"


def test_html_is_self_contained_and_escaped(full):
    _, out = full
    html = (out / "index.html").read_text()
    assert "<script" not in html.lower()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<img src=x" not in html and "&lt;img src=x onerror=" in html  # from run.json's config
    assert "http://" not in html and "https://" not in html
    assert html.count('<img src="data:image/png;base64,') == len(FULL_FIGURES)
    for section in (
        "LoRA&#x27;s trained model beats BitFit&#x27;s",
        "Final validation results",
        "Test results",
        "Run run1",
        "test cpu",
        "Misclassified examples",
    ):
        assert section in html, section


@pytest.mark.parametrize(
    "damage",
    ["results_only", "one_method", "string_labels"],
)
def test_missing_or_odd_files_degrade_with_notes(tmp_path, damage):
    run = make_study_folder(tmp_path / "study")
    if damage == "results_only":
        for p in run.glob("*.csv"):
            if not p.name.endswith("_results.csv"):
                p.unlink()
    elif damage == "one_method":
        for p in run.glob("lora_*.csv"):
            p.unlink()
    else:
        path = run / "lora_inference_predictions.csv"
        df = pd.read_csv(path)
        df["label"] = df["label"].map({0: "negative", 1: "positive"})
        df["prediction"] = df["prediction"].astype(object)
        df.loc[1, "prediction"] = "?"
        df.to_csv(path, index=False)
    out = build_report([run], dpi=40, n_boot=50)
    notes = json.loads((out / "stats.json").read_text())["notes"]
    assert (out / "index.html").stat().st_size > 0 and (out / "tables" / "validation.md").is_file()
    if damage == "results_only":
        assert "lora: no `lora_inference_predictions.csv`." in notes
        assert not list((out / "figures").glob("*.png"))
    elif damage == "one_method":
        assert not (out / "tables" / "comparisons.csv").exists()
    else:
        assert "lora: 1 prediction rows without a readable 0/1 label dropped." in notes
        assert pd.read_csv(out / "tables" / "comparisons.csv").loc[0, "n"] == 149


def test_bad_folders(tmp_path, capsys):
    with pytest.raises(ValueError, match=r"no \*_results.csv"):
        build_report([tmp_path])
    assert main_report([str(tmp_path / "missing")], None) == 2
    assert "does not exist" in capsys.readouterr().err


def test_atomic_write_keeps_old_file_on_failure(tmp_path, monkeypatch):
    target = tmp_path / "t.txt"
    atomic_write_text(target, "old")

    def boom(*_):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError):
        atomic_write_text(target, "new")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["t.txt"]


def _chromium() -> tuple[str, str] | None:
    browser = (
        shutil.which("chromium")
        or shutil.which("chromium-browser")
        or shutil.which("google-chrome")
    )
    driver = shutil.which("chromedriver")
    return (browser, driver) if browser and driver else None


def test_html_renders_in_headless_chromium(full, tmp_path):
    webdriver = pytest.importorskip(
        "selenium.webdriver", reason="selenium not installed (pip install selenium)"
    )
    found = _chromium()
    if not found:
        pytest.skip("chromium/chromedriver not on PATH (apt-get install chromium chromium-driver)")
    from selenium.common.exceptions import NoAlertPresentException
    from selenium.webdriver.chrome.service import Service

    _, out = full
    opts = webdriver.ChromeOptions()
    opts.binary_location = found[0]
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1280,2000",
    ):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(found[1]), options=opts)
    try:
        driver.get((out / "index.html").resolve().as_uri())
        assert driver.execute_script("return document.readyState") == "complete"
        images = driver.execute_script(
            "return Array.from(document.images).map(i => i.complete && i.naturalWidth > 0)"
        )
        assert images == [True] * len(FULL_FIGURES)
        assert driver.execute_script("return document.scripts.length") == 0
        with pytest.raises(NoAlertPresentException):
            driver.switch_to.alert.text  # noqa: B018 — reading it raises when no alert is open
        assert SCRIPT_TWEET in driver.find_element("tag name", "body").text
        severe = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
        assert not severe, severe
        shot = Path(os.environ.get("SENDIT_SCREENSHOT", tmp_path / "report.png"))
        driver.save_screenshot(str(shot))
        assert shot.stat().st_size > 0
    finally:
        driver.quit()


def test_old_run_folders_test_sets_are_named_after_what_they_are(tmp_path):
    """Older runs wrote "manual" for any --test-file and "heldout" for the split; the report names them."""
    custom = make_run(tmp_path / "custom", methods=("bitfit", "lora"), test_sets={"manual": 40, "heldout": 30},
                      config={"data": {"test_file": "data/my_tweets.csv"}})
    embedded = make_run(tmp_path / "embedded", methods=("head",), test_sets={"manual": 40, "heldout": 30},
                        config={"data": {"test_file": "embedded"}})
    data = load_runs([custom, embedded])
    by_run = data.metrics.groupby("run")["test_set"].unique().map(list).to_dict()
    assert by_run == {"custom": ["my_tweets", "held-out split"], "embedded": ["sentiment140-manual", "held-out split"]}
    out = build_report([custom], **FAST)
    assert "my_tweets" in (out / "report.md").read_text()
    assert "manual" not in pd.read_csv(out / "tables" / "test.csv")["test_set"].tolist()


def test_the_console_says_what_a_verdict_is_about_and_the_margin_flag_reaches_the_recommendation(full, seeds,
                                                                                                   tmp_path, capsys):
    from sendit.cli import main

    run, _ = full
    assert main(["report", str(run), "--out", str(tmp_path / "one"), "--margin", "2.5"]) == 0
    said = capsys.readouterr().out
    assert ": these trained models, seed 0:" in said and "these two trained models" in said
    assert "recommendation: Based on one trained model per method" in said and "margin δ = 2.5" in said
    assert "margin δ = 2.5" in (tmp_path / "one" / "report.md").read_text()
    run3, _ = seeds
    assert main(["report", str(run3), "--out", str(tmp_path / "three")]) == 0
    said = capsys.readouterr().out
    assert ": the methods, across 3 seeds:" in said and "seed 0:" not in said
    assert "recommendation: Across 3 seeds:" in said
    assert main(["report", str(run3), "--out", str(tmp_path / "bad"), "--margin", "-1"]) == 2
    assert "--margin must be a number of accuracy points >= 0" in capsys.readouterr().err


def test_report_escapes_tweets_and_nothing_is_written_outside_the_run_folder(tmp_path, monkeypatch, restore_threads):
    from sendit.report import build_report

    model = save_tiny_opt(tmp_path / "opt")
    attack = '<script>alert("pwned")</script> so good <img src=x onerror=alert(1)>'
    test_file = tmp_path / "manual.csv"
    # The same tweet with both labels: one of the two is misclassified whatever the model says, so it is shown.
    test_file.write_text(f'label,text\n0,"{attack.replace(chr(34), 2 * chr(34))}"\n'
                         f'4,"{attack.replace(chr(34), 2 * chr(34))}"\n0,bad day\n4,good day\n')
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    before = sorted(p.name for p in tmp_path.iterdir())
    run = tmp_path / "run"
    assert main(["run", "--model", str(model), "--methods", "head", "--train-size", "32", "--val-size", "8",
                 "--test-size", "8", "--test-file", str(test_file), "--epochs", "1", "--batch-size", "16",
                 "--threads", "1", "--out", str(run), "--no-report"]) == 0
    build_report([run], n_boot=50, dpi=40)
    html = (run / "report" / "index.html").read_text()
    assert "&lt;script&gt;alert(&quot;pwned&quot;)&lt;/script&gt; so good &lt;img src=x onerror=alert(1)&gt;" in html
    assert "<script>alert" not in html and "<img src=x" not in html
    assert list(cwd.iterdir()) == []  # nothing in the working directory
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*before, "run"])  # nor next to the run folder
    assert attack in pd.read_csv(run / "head_inference_predictions.csv")["text"].tolist()  # stored as written
