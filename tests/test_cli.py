"""End-to-end CLI: `sendit run/train/evaluate/predict/data/methods` on a tiny OPT model, asserting on the files;
the careless user's table (each command line's exit code, one-paragraph message, files left alone; exit 2 = bad
input, 1 = a run failed part-way, 130 = interrupted; docs/reliability.md "Misuse"), --version and --help."""

from __future__ import annotations

import copy
import json
import pickle
import shlex
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from helpers import LIBRARY_NOISE, run_cli, snapshot, tiny_run_args

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


def test_interrupt_says_how_to_resume(capsys, monkeypatch):
    import sendit.recipes.compare

    def interrupted(*a, **kw):
        raise KeyboardInterrupt

    monkeypatch.setattr(sendit.recipes.compare, "run", interrupted)
    assert main(["run"]) == 130
    assert "interrupted. Finished work is saved; continue a run with --resume RUN_DIR" in capsys.readouterr().err


RUN = "run --model {w}/opt --no-report --out {w}/new"


SMALL = "--data {w}/forty.csv --test-file none --train-size 20 --val-size 8 --test-size 8"


TREE = ["oldrun", "photos", "other", "afile.txt", "corrupt", "listrun", "tweets.csv", "prior.csv", "oldexport"]


# (name, command line, exit code, phrase in the message); every case also checks that TREE is untouched.
CASES = [
    # Options: each names the flag, the value and what is allowed, before anything is loaded.
    ("epochs not a number", f"{RUN} --epochs abc", 2, "'epochs' must be an integer, got 'abc'"),
    ("epochs inf", f"{RUN} --epochs inf", 2, "'epochs' must be an integer, got 'inf'"),
    ("epochs fractional", f"{RUN} --epochs 2.5", 2, "'epochs' must be an integer, got '2.5'"),
    ("epochs negative", f"{RUN} --epochs=-3", 2, "--epochs must be at least 1 (got -3)"),
    ("lr nan", f"{RUN} --lr nan", 2, "--lr must be a finite number > 0 (got nan)"),
    ("lr inf", f"{RUN} --lr inf", 2, "--lr must be a finite number > 0 (got inf)"),
    ("lr overflows to inf", f"{RUN} --lr 1e400", 2, "--lr must be a finite number > 0 (got inf)"),
    ("lr words", f"{RUN} --lr fast", 2, "'lr' must be a number, got 'fast'"),
    ("negative clip norm (gradient ascent)", f"{RUN} --max-grad-norm -1", 2, "--max-grad-norm must be >= 0 (got -1.0)"),
    ("clip norm nan", f"{RUN} --max-grad-norm nan", 2, "--max-grad-norm must be a finite number >= 0 (got nan)"),
    ("eval batch size 0 (loops forever)", f"{RUN} --eval-batch-size 0", 2, "--eval-batch-size must be at least 1 (got 0)"),
    ("negative batch size", f"{RUN} --batch-size=-5", 2, "--batch-size must be at least 1 (got -5)"),
    ("negative weight decay", f"{RUN} --weight-decay=-0.01", 2, "--weight-decay must be >= 0 (got -0.01)"),
    ("weight decay inf", f"{RUN} --weight-decay inf", 2, "--weight-decay must be a finite number >= 0 (got inf)"),
    ("negative seed", f"{RUN} --seed=-1", 2, "--seed must be a whole number from 0 to 4294967295 (got -1)"),
    ("seed too large", f"{RUN} --seed 99999999999", 2, "--seed must be a whole number from 0 to 4294967295"),
    ("negative split seed", f"{RUN} --split-seed=-3", 2, "--split-seed must be a whole number from 0"),
    ("seed listed twice", f"{RUN} --seeds 0,1,0", 2, "--seeds lists seed 0 twice"),
    ("seed not a number", f"{RUN} --seeds 0,x", 2, "'seeds' must be an integer, got 'x'"),
    ("zero threads", f"{RUN} --threads 0", 2, "--threads must be at least 1 (got 0)"),
    ("absurd threads", f"{RUN} --threads 100000", 2, "--threads must be at most 1024 (got 100000)"),
    ("zero grad accum", f"{RUN} --grad-accum 0", 2, "--grad-accum must be at least 1 (got 0)"),
    ("zero patience", f"{RUN} --patience 0", 2, "--patience must be at least 1 (got 0)"),
    ("zero log every", f"{RUN} --log-every 0", 2, "--log-every must be at least 1 (got 0)"),
    ("warmup 1", f"{RUN} --warmup-ratio 1", 2, "--warmup-ratio must be in [0, 1) (got 1.0)"),
    ("negative warmup", f"{RUN} --warmup-ratio=-0.1", 2, "--warmup-ratio must be in [0, 1) (got -0.1)"),
    ("lora alpha 0", f"{RUN} --lora-alpha 0", 2, "--lora-alpha must be at least 1 (got 0)"),
    ("lora dropout nan", f"{RUN} --lora-dropout nan", 2, "--lora-dropout must be a finite number in [0, 1)"),
    ("size neither count nor fraction", f"{RUN} --train-size 1.5", 2, "--train-size 1.5 is neither a row count"),
    ("fractions over 1", f"{RUN} --train-size 0.6 --val-size 0.5", 2, "add up to 1.1, more than all the rows"),
    ("size inf", f"{RUN} --test-size inf", 2, "--test-size must be a finite number"),
    ("max length 0", f"{RUN} --max-length 0", 2, "--max-length must be at least 8 (got 0)"),
    ("label map to a non-label", f"{RUN} --label-map '{{happy: 7}}'", 2, "--label-map maps 'happy' to 7"),
    ("bool flag not a bool", f"{RUN} --compile maybe", 2, "'compile' must be true or false, got 'maybe'"),
    ("empty methods", f"{RUN} --methods ,", 2, "--methods is empty"),
    # Options whose range is the model's: checked from its config before any training.
    ("max length beyond the model's positions", f"{RUN} --max-length 500", 2,
     "--max-length 500 is longer than model"),
    ("unknown LoRA target module", f"{RUN} --methods lora --target-modules q_projj", 2,
     "--target-modules q_projj: model"),
    ("LoRA rank above the model width", f"{RUN} --methods lora --lora-r 100", 2, "--lora-r 100 is larger than the 16-wide"),
    # Data: rows that are no tweet, labels whose meaning is a guess, splits that cannot be made.
    ("JSON null text", "data {w}/null_text.jsonl --bad-rows error", 2, "line 2: the text is missing (null)"),
    ("JSON object text", "data {w}/object_text.jsonl --bad-rows error", 2, "the text is a JSON object"),
    ("JSON list text", "data {w}/list_text.jsonl --bad-rows error", 2, "the text is a JSON list"),
    ("JSON number text", "data {w}/number_text.jsonl --bad-rows error", 2, "the text is a number ('42')"),
    ("TweetEval 0/1/2 labels", "data {w}/tweeteval.csv --bad-rows skip", 2,
     "--label-map \"{0: negative, 1: neutral, 2: positive}\""),
    ("1-5 ratings", "data {w}/ratings.csv", 2,
     "--label-map \"{1: negative, 2: negative, 3: neutral, 4: positive, 5: positive}\""),
    ("-1/0/1 polarities", "data {w}/polarity.csv", 2, "the labels -1 (10 rows), 0 (10 rows), 1 (10 rows) have no"),
    ("ambiguous labels in a run", f"{RUN} --data {{w}}/tweeteval.csv --test-file none", 2, "have no single reading"),
    ("test file typo", f"{RUN} --data {{w}}/forty.csv --test-file {{w}}/typo.csv", 2,
     "data file '{w}/typo.csv' does not exist. Pass --test-file with"),
    ("extra training file typo", f"{RUN} {SMALL} --extra-train-file {{w}}/typo.csv", 2,
     "Pass --extra-train-file with"),
    ("config is a folder", f"{RUN} --config {{w}}/photos", 2, "is a folder; pass a YAML file"),
    ("fraction that rounds to 0 rows", f"{RUN} {SMALL} --val-size 0.001", 2, "--val-size 0.001 of the 40 rows"),
    # Paths: --overwrite replaces only sendit's own run folders, never a source, and only after every check.
    ("overwrite a folder of photos", f"{RUN.replace('{w}/new', '{w}/photos')} --overwrite", 2,
     "is not a sendit run folder (no run.json), so it is left alone"),
    ("overwrite a foreign run.json", f"{RUN.replace('{w}/new', '{w}/other')} --overwrite", 2,
     "holds a run.json that sendit did not write"),
    ("overwrite a run with a data typo", f"{RUN.replace('{w}/new', '{w}/oldrun')} --overwrite --data {{w}}/typo.csv",
     2, "data file '{w}/typo.csv' does not exist"),
    ("overwrite a run with a bad option", f"{RUN.replace('{w}/new', '{w}/oldrun')} --overwrite --max-length 500", 2,
     "--max-length 500 is longer"),
    ("overwrite a run with a model folder without weights",
     f"{RUN.replace('{w}/new', '{w}/oldrun').replace('{w}/opt', '{w}/noweights')} --overwrite", 2, "has no weights"),
    ("overwrite a run with a model folder without a tokenizer",
     f"{RUN.replace('{w}/new', '{w}/oldrun').replace('{w}/opt', '{w}/notokenizer')} --overwrite", 2,
     "has no usable tokenizer (its vocabulary has 1 tokens"),
    ("overwrite the run that holds the data", f"{RUN.replace('{w}/new', '{w}/oldrun')} --overwrite "
     f"--data {{w}}/oldrun/mine.csv --test-file none", 2, "which holds --data {w}/oldrun/mine.csv; it is left alone"),
    ("overwrite the run that holds the model",
     "run --model {w}/oldrun/opt --no-report --out {w}/oldrun --overwrite", 2, "which holds --model {w}/oldrun/opt"),
    ("overwrite a parent of the model", "run --model {w}/opt --no-report --out {w} --overwrite", 2,
     "is not a sendit run folder"),
    ("out below a file", f"{RUN.replace('{w}/new', '{w}/afile.txt/sub')}", 2, "is a file (Not a directory)"),
    ("out is a file", f"{RUN.replace('{w}/new', '{w}/afile.txt')}", 2, "is a file; the run folder must be a folder"),
    ("resume a corrupt run.json", "run --resume {w}/corrupt", 2, "is damaged (not valid JSON"),
    ("resume a run.json that is a list", "run --resume {w}/listrun", 2, "not a sendit run manifest (a JSON list"),
    ("resume somebody else's run.json", "run --resume {w}/other", 2, "no run.json with a config there"),
    ("export over photos", "export {w}/oldrun/lora --out {w}/photos --overwrite", 2, "is not a sendit export"),
    ("export over the run that holds the model", "export {w}/oldrun/lora --out {w}/oldrun --overwrite", 2,
     "holds the model folder being exported"),
    ("export over a file", "export {w}/oldrun/lora --out {w}/afile.txt --overwrite", 2, "is a file, which an export"),
    ("export into itself", "export {w}/oldrun/lora --out {w}/oldrun/lora --overwrite", 2,
     "is the model folder being exported"),
    ("export over an earlier export, no flag", "export {w}/oldrun/lora --out {w}/oldexport", 2, "Pass --overwrite"),
    # evaluate / predict flags and inputs, checked before the model loads.
    ("evaluate batch size 0", "evaluate {w}/oldrun/lora --data {w}/tweets.csv --batch-size 0", 2,
     "--batch-size must be at least 1 (got 0)"),
    ("evaluate batch size not a number", "evaluate {w}/oldrun/lora --data {w}/tweets.csv --batch-size abc", 2,
     "invalid int value: 'abc'"),
    ("evaluate a missing file", "evaluate {w}/oldrun/lora --data {w}/typo.csv", 2, "does not exist"),
    ("predict batch size 0", "predict {w}/oldrun/lora 'so happy' --batch-size 0", 2, "--batch-size must be at least 1"),
    ("predict chunk size 0", "predict {w}/oldrun/lora --input {w}/texts.csv --chunk-size 0", 2,
     "--chunk-size must be at least 1"),
    ("predict a header-only file", "predict {w}/oldrun/lora --input {w}/header_only.csv", 2,
     "has a header but no rows"),
    ("predict onto its input", "predict {w}/oldrun/lora --input {w}/prior.csv --output {w}/prior.csv", 2,
     "is the --input file"),
    ("predict onto a user's file", "predict {w}/oldrun/lora --input {w}/texts.csv --output {w}/prior.csv", 2,
     "is not an output of sendit predict"),
    ("predict into a folder", "predict {w}/oldrun/lora --input {w}/texts.csv --output {w}/photos", 2, "is a folder"),
    # Reports of damaged CSV files.
    ("report with words in a number column", "report {w}/badreport", 2,
     "lora_results.csv, line 2: column 'best_val_f1' holds 'abc', not a number"),
    ("report of a garbage CSV", "report {w}/garbagereport", 2, "is not a readable CSV file"),
]


@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize("name, command, code, phrase", CASES, ids=[c[0] for c in CASES])
def test_misuse(world, capsys, name, command, code, phrase):
    before = snapshot(world, TREE)
    got, err = run_cli(capsys, shlex.split(command.replace("{w}", str(world))))
    assert got == code, err
    assert phrase.replace("{w}", str(world)) in err, err
    if code == 2 and "invalid int value" not in phrase:  # argparse's usage lines come first; ours is one paragraph
        lines = err.rstrip().splitlines()
        assert lines[-1].startswith(f"sendit {command.split()[0]}: error: "), err
    assert snapshot(world, TREE) == before
    assert not (world / "new").exists()  # refused before the run folder was made


@pytest.mark.usefixtures("one_thread")
def test_interrupt_names_the_run_folder_only_when_a_run_was_interrupted(world, capsys, monkeypatch):
    import sendit.recipes.compare

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(sendit.recipes.compare, "train_method", interrupted)
    out = world / "run"
    code, err = run_cli(capsys, ["run", "--model", str(world / "opt"), "--data", str(world / "forty.csv"),
                                 "--test-file", "none", "--train-size", "20", "--val-size", "8", "--test-size", "8",
                                 "--methods", "head", "--batch-size", "8", "--out", str(out), "--no-report"])
    assert code == 130 and f"continue a run with --resume {out}." in err
    assert json.loads((out / "run.json").read_text())["sendit"]["kind"] == "run"  # the mark --overwrite checks
    monkeypatch.setattr(pd, "read_csv", interrupted)
    code, err = run_cli(capsys, ["report", str(world / "oldrun")])
    assert code == 130 and err.strip() == "sendit report: interrupted."


@pytest.mark.usefixtures("one_thread")
def test_file_errors_outside_a_run_give_no_resume_hint(world, capsys):
    code, err = run_cli(capsys, ["report", str(world / "oldrun"), "--out", str(world / "afile.txt" / "rep")])
    assert code == 2 and "--resume" not in err and "sendit report: error:" in err


@pytest.mark.usefixtures("one_thread")
def test_a_run_is_quiet_and_says_what_it_does(custom_run):
    printed = custom_run["stdout"] + custom_run["stderr"]
    for noise in LIBRARY_NOISE:
        assert noise not in printed, noise
    assert "FutureWarning" not in custom_run["warnings"]
    assert "new classification head (2 labels), trained by each method" in custom_run["stdout"]
    assert custom_run["stdout"].startswith("plan: 1 method (lora) x 1 seed = 1 training of up to 1 epoch on 96")
    assert "[1/1] lora, seed 0" in custom_run["stdout"]


@pytest.mark.usefixtures("one_thread")
def test_version_flag(capsys):
    from sendit import __version__

    with pytest.raises(SystemExit) as stop:
        main(["--version"])
    assert stop.value.code == 0 and capsys.readouterr().out.strip() == f"sendit {__version__}"


@pytest.mark.usefixtures("one_thread")
def test_help_shows_value_names_not_config_sections():
    sub = build_parser()._subparsers._group_actions[0].choices
    metavars = {opt: a.metavar for a in sub["run"]._actions for opt in a.option_strings}
    assert metavars["--train-size"] == "N" and metavars["--epochs"] == "N" and metavars["--lora-r"] == "N"
    assert metavars["--lr"] == "FLOAT" and metavars["--test-file"] == "PATH" and metavars["--methods"] == "LIST"
    assert metavars["--precision"] == "{auto,bf16,fp32}" and metavars["--method-lr"] == "MAPPING"
    assert not {"DATA", "TRAIN", "METHOD"} & set(metavars.values())
    distill = {opt: a.metavar for a in sub["distill"]._actions for opt in a.option_strings}
    assert distill["--kd-ratio"] == "FLOAT" and distill["--teacher"] == "PATH"
    assert {"--precision", "--label-column", "--text-column"} <= {
        opt for a in sub["evaluate"]._actions for opt in a.option_strings}
    assert "--precision" in {opt for a in sub["predict"]._actions for opt in a.option_strings}


@pytest.mark.usefixtures("one_thread")
def test_distill_help_and_docs_agree_on_where_out_goes():
    sub = build_parser()._subparsers._group_actions[0].choices
    out = next(a for a in sub["distill"]._actions if "--out" in a.option_strings)
    assert "default: the teacher's run folder" in out.help
    docs = (Path(__file__).parents[1] / "docs" / "distillation.md").read_text()
    assert "Default output is the teacher's run folder" in docs
