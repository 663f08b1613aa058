"""End-to-end CLI: `sendit run/train/evaluate/predict/data/methods` on a tiny OPT model, asserting on the files."""

from __future__ import annotations

import copy
import json
import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from helpers import tiny_run_args

from sendit.cli import build_parser, main
from sendit.config.schema import CONFIG_DIR, field_index, load_config

STUDY_COLUMNS = {
    "results": ["best_val_f1", "val_accuracy", "runtime_sec", "memory_delta_mb"],
    "epoch_logs": ["epoch", "val_accuracy", "val_f1"],
    "inference_metrics_summary": ["accuracy", "f1_macro", "f1_weighted", "inference_time_sec"],
    "inference_predictions": ["text", "label", "prediction"],
}
EXTENDED = {
    "results": ["method", "model", "trainable_params", "total_params", "peak_memory_mb", "saved_size_mb",
                "best_epoch", "seed"],
    "epoch_logs": ["train_loss", "val_loss", "lr", "epoch_time_sec"],
    "inference_metrics_summary": ["precision", "recall", "tweets_per_sec", "n", "test_set"],
    "inference_predictions": ["prob_positive"],
}


@pytest.fixture(scope="module")
def run_dir(tiny_opt, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("run") / "r"
    assert main(tiny_run_args(tiny_opt, out, "bitfit,lora")) == 0
    return out


@pytest.mark.parametrize("kind", list(STUDY_COLUMNS))
@pytest.mark.parametrize("method", ["bitfit", "lora"])
def test_run_writes_the_study_csvs_with_their_columns(run_dir, method, kind):
    df = pd.read_csv(run_dir / f"{method}_{kind}.csv")
    assert len(df) > 0
    for col in STUDY_COLUMNS[kind] + EXTENDED[kind]:
        assert col in df.columns, col
    assert list(df.columns[: len(STUDY_COLUMNS[kind])]) == STUDY_COLUMNS[kind]


def test_run_records_parameters_sizes_and_manifest(run_dir):
    bitfit = pd.read_csv(run_dir / "bitfit_results.csv").iloc[0]
    lora = pd.read_csv(run_dir / "lora_results.csv").iloc[0]
    assert bitfit.trainable_params < bitfit.total_params
    assert lora.trainable_params > bitfit.trainable_params  # tiny model: r=8 adapters outnumber its biases
    assert (run_dir / "lora" / "adapter_model.safetensors").exists()
    assert (run_dir / "bitfit" / "trained_params.safetensors").exists()
    assert lora.saved_size_mb == pytest.approx((run_dir / "lora" / "adapter_model.safetensors").stat().st_size / 2**20)
    manifest = json.loads((run_dir / "run.json").read_text())
    for key in ("config", "versions", "git_commit", "hardware", "data", "status", "wall_time_sec"):
        assert key in manifest, key
    assert manifest["data"]["dropped"]["test_file"]["neutral"] == 139
    assert manifest["data"]["split_sizes"]["manual"] == 359
    assert manifest["status"] == {"bitfit/seed0": "done", "lora/seed0": "done"}
    assert manifest["versions"]["torch"]
    summary = pd.read_csv(run_dir / "lora_inference_metrics_summary.csv")
    assert summary.test_set.tolist() == ["sentiment140-manual", "held-out split"]
    assert summary.n.tolist() == [359, 32]
    preds = pd.read_csv(run_dir / "lora_inference_predictions.csv")
    manual = preds[preds.test_set == "sentiment140-manual"]
    assert np.isclose((manual.label == manual.prediction).mean(), summary.accuracy[0])


def test_epoch_log_lr_is_the_rate_used_during_the_epoch(run_dir):
    """Linear warm-up then decay to 0 at the last step: each epoch's mean rate is > 0 and falls epoch by epoch
    (the rate after an epoch's last step would show 0.0 for the last epoch)."""
    logs = pd.read_csv(run_dir / "lora_epoch_logs.csv")
    lr = logs["lr"].tolist()
    assert len(lr) == 2 and 0 < lr[1] < lr[0] < 0.01
    assert lr[1] > 0.01 / 6  # 6 steps per epoch, 12 in all: the second epoch's mean is about a quarter of the peak


def test_study_notebook_cells_run_unchanged(run_dir, monkeypatch):
    """The study's notebook read these files with pandas + seaborn; its cells must run on our outputs."""
    import matplotlib

    matplotlib.use("Agg")
    monkeypatch.chdir(run_dir)
    cells = '''
import pandas as pd
import seaborn as sns
import matplotlib.pyplot as plt
bf_results = pd.read_csv("bitfit_results.csv")
lora_results = pd.read_csv("lora_results.csv")
bf_logs = pd.read_csv("bitfit_epoch_logs.csv")
lora_logs = pd.read_csv("lora_epoch_logs.csv")
bf_inf = pd.read_csv("bitfit_inference_metrics_summary.csv")
lora_inf = pd.read_csv("lora_inference_metrics_summary.csv")
bf_pred = pd.read_csv("bitfit_inference_predictions.csv")
lora_pred = pd.read_csv("lora_inference_predictions.csv")
fig, axes = plt.subplots(1, 2, figsize=(12, 4))
sns.lineplot(data=bf_logs, x="epoch", y="val_accuracy", marker="o", label="BitFit", ax=axes[0])
sns.lineplot(data=lora_logs, x="epoch", y="val_accuracy", marker="o", label="LoRA", ax=axes[0])
sns.lineplot(data=bf_logs, x="epoch", y="val_f1", marker="o", label="BitFit", ax=axes[1])
sns.lineplot(data=lora_logs, x="epoch", y="val_f1", marker="o", label="LoRA", ax=axes[1])
plt.close(fig)
final_val = pd.DataFrame({
    "Method": ["BitFit", "LoRA"],
    "Best Val F1": [bf_results["best_val_f1"].max(), lora_results["best_val_f1"].max()],
    "Best Val Accuracy": [bf_results["val_accuracy"].max(), lora_results["val_accuracy"].max()],
    "Runtime (s)": [bf_results["runtime_sec"].iloc[0], lora_results["runtime_sec"].iloc[0]],
    "Memory Delta (MB)": [bf_results["memory_delta_mb"].iloc[0], lora_results["memory_delta_mb"].iloc[0]],
})
test_table = pd.DataFrame({
    "Method": ["BitFit", "LoRA"],
    "Accuracy": [bf_inf.loc[0, "accuracy"], lora_inf.loc[0, "accuracy"]],
    "F1 Macro": [bf_inf.loc[0, "f1_macro"], lora_inf.loc[0, "f1_macro"]],
    "F1 Weighted": [bf_inf.loc[0, "f1_weighted"], lora_inf.loc[0, "f1_weighted"]],
    "Inference Time (s)": [bf_inf.loc[0, "inference_time_sec"], lora_inf.loc[0, "inference_time_sec"]],
})
cm = pd.crosstab(lora_pred["label"], lora_pred["prediction"])
sns.heatmap(cm, annot=True, fmt="d")
plt.close("all")
'''
    scope: dict = {}
    exec(cells, scope)
    assert scope["test_table"].shape == (2, 5) and scope["final_val"].notna().all().all()
    assert 0 <= scope["test_table"]["Accuracy"].min() <= 1


def test_predict_cli_texts_and_csv(run_dir, tmp_path, capsys):
    assert main(["predict", str(run_dir / "lora"), "so happy today", "worst day ever"]) == 0
    out = pd.read_csv(__import__("io").StringIO(capsys.readouterr().out))
    assert out.columns.tolist()[:1] == ["text"] and {"prediction", "prob_positive"} <= set(out.columns)
    assert set(out.prediction) <= {0, 1} and out.prob_positive.between(0, 1).all()
    src = tmp_path / "in.csv"
    pd.DataFrame({"id": [7, 3, 5], "text": ["a", "good", "bad"]}).to_csv(src, index=False)
    dst = tmp_path / "out.csv"
    assert main(["predict", str(run_dir / "lora"), "--input", str(src), "--output", str(dst)]) == 0
    res = pd.read_csv(dst)
    assert res.id.tolist() == [7, 3, 5] and {"prediction", "prob_positive"} <= set(res.columns)


def test_evaluate_cli_matches_the_run_on_the_same_file(run_dir, tmp_path):
    test_file = Path(__import__("sendit.data.reading", fromlist=["x"]).embedded_path("testdata.manual.2009.06.14.csv"))
    assert main(["evaluate", str(run_dir / "lora"), "--data", str(test_file), "--out", str(tmp_path)]) == 0
    got = pd.read_csv(tmp_path / "lora_inference_metrics_summary.csv").iloc[0]
    ran = pd.read_csv(run_dir / "lora_inference_metrics_summary.csv").iloc[0]
    assert got.n == 359
    assert got.accuracy == pytest.approx(ran.accuracy)
    assert (tmp_path / "lora_inference_predictions.csv").exists()


def test_evaluate_several_models_then_report_compares_them(run_dir, tmp_path, capsys):
    """Two models scored on the same rows of a file with its own column names; the report pairs them."""
    rows = pd.read_csv(run_dir / "lora_inference_predictions.csv").query("test_set == 'held-out split'")
    data = tmp_path / "my_tweets.csv"
    pd.DataFrame({"tweet_body": rows.text, "gold": rows.label.map({0: "negative", 1: "positive"})}).to_csv(data)
    out = tmp_path / "myeval"
    args = ["evaluate", str(run_dir / "bitfit"), str(run_dir / "lora"), "--data", str(data), "--out", str(out),
            "--text-column", "tweet_body", "--label-column", "gold", "--precision", "fp32"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "bitfit on my_tweets (32 tweets): accuracy" in printed and "(95% CI " in printed
    for method in ("bitfit", "lora"):
        got = pd.read_csv(out / f"{method}_inference_metrics_summary.csv").iloc[0]
        ran = pd.read_csv(run_dir / f"{method}_inference_metrics_summary.csv").set_index("test_set")
        assert got.test_set == "my_tweets" and got.n == 32
        assert got.accuracy == pytest.approx(ran.loc["held-out split", "accuracy"])
    assert main(["report", str(out)]) == 0
    pairs = pd.read_csv(out / "report" / "tables" / "comparisons.csv")
    assert pairs[["a", "b", "test_set"]].values.tolist() == [["bitfit", "lora", "my_tweets"]]
    assert "my_tweets" in (out / "report" / "report.md").read_text()
    assert main(["evaluate", str(run_dir / "bitfit"), str(run_dir / "lora"), "--data", str(data)]) == 2
    assert "--out" in capsys.readouterr().err
    assert main(args[:-6] + ["--text-column", "nope"]) == 2
    assert "--text-column 'nope' is not a column" in capsys.readouterr().err


def test_train_cli_one_method_and_refuses_to_overwrite(tiny_opt, tmp_path, capsys):
    out = tmp_path / "t"
    args = tiny_run_args(tiny_opt, out, "x")
    args[0] = "train"
    i = args.index("--methods")
    args[i : i + 2] = ["--method", "head"]
    args.remove("--no-report")
    assert main(args) == 0
    assert (out / "head_results.csv").exists() and not (out / "bitfit_results.csv").exists()
    assert main(args) == 2
    assert "already exists" in capsys.readouterr().err


def test_data_cli_reports_rows_labels_dropped_and_lengths(capsys):
    assert main(["data", "embedded", "--test-file", "--model", "tests/data/opt-tokenizer"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["rows"] == 359 and info["dropped"] == {"neutral": 139}
    assert info["labels"] == {"negative": 177, "positive": 182}
    assert 10 < info["token_lengths"]["mean"] < 40


def test_methods_cli_lists_the_registry(capsys):
    assert main(["methods"]) == 0
    out = capsys.readouterr().out
    for name in ("full", "head", "bitfit", "lora", "dora", "ia3"):
        assert name in out
    lora = out.split("\nlora ")[1].splitlines()
    assert lora[1].split() == ["settings:", "--lora-r", "(default", "8),", "--lora-alpha", "(default", "16),",
                               "--lora-dropout", "(default", "0.1),", "--target-modules", "(default", "None)"]


def test_every_config_field_is_a_documented_flag():
    parser = build_parser()
    run = next(a for a in parser._subparsers._group_actions[0].choices.items() if a[0] == "run")[1]
    flags = {opt: a.help for a in run._actions for opt in a.option_strings}
    for name, (_, f) in field_index().items():
        flag = "--" + name.replace("_", "-")
        assert flag in flags and f.metadata["help"] in flags[flag]


@pytest.mark.parametrize("path", sorted(CONFIG_DIR.glob("*.yaml")), ids=lambda p: p.stem)
def test_shipped_configs_load_and_validate(path):
    assert path.read_text().startswith("#"), "configs start with the command that runs them"
    raw = yaml.safe_load(path.read_text())
    assert raw, "empty config"
    if "tune" in raw:  # a `sendit tune` preset: its run settings plus a tune: section
        from sendit.config.tune import load_tune_config

        cfg = load_tune_config(path, {}, {})[0]
    else:
        cfg = load_config(path)
    assert cfg.method.methods


def test_flags_override_the_config_file():
    cfg = load_config(CONFIG_DIR / "quick.yaml", {"epochs": "1", "methods": "lora,full", "lora_r": "4"})
    assert cfg.train.epochs == 1 and cfg.method.methods == ["lora", "full"] and cfg.method.lora_r == 4


def test_each_method_owns_its_settings_and_the_command_line_loads_without_torch():
    """LoRA's settings are declared in methods/lora.py and reach the `method:` section and the flags from there;
    method files import torch and peft only when they run, so parsing flags and configs never loads them."""
    import subprocess
    import sys

    from sendit.methods.lora import LoraSettings

    index = field_index()
    for name in ("lora_r", "lora_alpha", "lora_dropout", "target_modules"):
        assert index[name][0] == "method" and index[name][1].metadata == LoraSettings.__dataclass_fields__[name].metadata
    code = ("import sys; from sendit.cli import build_parser; from sendit.config.schema import load_config; build_parser(); "
            "cfg = load_config(None, {'lora_r': '4'}); assert cfg.method.lora_r == 4; "
            "print(sorted({'torch', 'transformers', 'peft'} & set(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
    cfg = load_config(None, {"lora_r": "4", "target_modules": "q_proj,v_proj"})
    for copied in (pickle.loads(pickle.dumps(cfg)), copy.deepcopy(cfg)):  # worker processes get copies
        assert copied == cfg and copied.method.target_modules == ["q_proj", "v_proj"]


def test_a_reader_that_goes_away_stops_the_output_quietly():
    """`sendit methods | head`: the closed pipe is the reader's choice, not an error to report."""
    import subprocess
    import sys

    code = ("import sys; from sendit.cli import main; "
            "sys.stdout.write = lambda *a: (_ for _ in ()).throw(BrokenPipeError(32, 'Broken pipe')); "
            "sys.exit(main(['methods']))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 141 and out.stderr == ""

