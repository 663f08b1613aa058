"""Every user mistake ends in one paragraph on stderr that names the file, line or value and the fix, exit code 2,
and no traceback; nothing computed before it is lost. docs/reliability.md lists the same inputs and messages."""

from __future__ import annotations

import gzip
import json

import pandas as pd
import pytest
import torch
from helpers import save_tiny_opt
from safetensors.torch import load_file

from sendit.cli import main

SENTIMENT140_ROW = '"{y}","{i}","Mon Apr 06 22:19:45 PDT 2009","NO_QUERY","user","{text}"\n'


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return save_tiny_opt(tmp_path_factory.mktemp("opt"))


@pytest.fixture
def restore_threads():
    """Training runs use --threads 1 (a tiny model on a shared 2-core CPU is ~3x faster so); the rest of the
    session keeps torch's own thread count."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def user_error(capsys, argv: list[str]) -> str:
    """Run the CLI; assert exit code 2, no traceback and a one-paragraph `sendit <cmd>: error:` line; return it."""
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("sendit ")]
    assert len(lines) == 1 and lines[0].startswith(f"sendit {argv[0]}: error: "), err
    assert err.rstrip().endswith(lines[0]), err  # nothing after it: the paragraph is the last word
    return lines[0]


def tweets(n: int, label: int, word: str = "day") -> str:
    return "".join(f"{label},tweet number {i} about a {word}\n" for i in range(n))


# ------------------------------------------------------------------------------------------------ data files
DATA_CASES = {
    "wrong column count": (b"label,text\n0,bad day\n1,good,day\n",
                           ["line 3", "expected 2 columns (label, text), found 3", "--bad-rows skip"]),
    "wrong column count, Sentiment140": (
        (SENTIMENT140_ROW.format(y=0, i=1, text="bad day") + '"4","2","d","q","good day"\n').encode(),
        ["line 2", "expected 6 columns (target, id, date, query, user, text), found 5"]),
    "quote never closed": (b'label,text\n0,"bad day\n1,good day\n',
                           ["line 2", "malformed CSV (unexpected end of data)", "read up to line 3", "quotes"]),
    "text after a closing quote": (b'label,text\n0,"good" day\n', ["line 2", "',' expected after '\"'"]),
    "NUL bytes": (b"label,text\n0,bad\x00 day\n1,good day\n", ["line 2", "NUL bytes", "tr -d"]),
    "empty text": (b"label,text\n0,   \n1,good day\n", ["line 2", "the tweet text is empty", "--bad-rows skip"]),
    "labels outside the set": (
        b"label,text\n0,bad day\nbad,awful\ngood,great\ngood,nice\n",
        ["'good': 2 rows (first on line 4)", "'bad': 1 rows (first on line 3)",
         "--label-map \"{'bad': 0, 'good': 4}\"", "--bad-rows skip"]),
    "missing columns": (b"score,body\n0,bad day\n", ["missing column(s) text, label", "found 'score', 'body'"]),
    "empty file": (b"", ["the file is empty"]),
    "whitespace-only file": (b"  \n\n\t\n", ["the file is empty"]),
    "header only": (b"label,text\n", ["no usable rows (it has no data rows)"]),
    "giant field": (b"label,text\n0," + b"x" * 200_000 + b"\n", ["line 2", "field larger than field limit"]),
}


@pytest.mark.parametrize("case", list(DATA_CASES))
def test_bad_data_file(tmp_path, capsys, case):
    content, expected = DATA_CASES[case]
    path = tmp_path / "tweets.csv"
    path.write_bytes(content)
    msg = user_error(capsys, ["data", str(path), "--bad-rows", "error"])
    assert str(path) in msg
    for text in expected:
        assert text in msg


@pytest.mark.parametrize("name, content, expected", [
    ("missing.csv", None, "does not exist. Pass a CSV/JSONL/Parquet file"),  # sendit data has no --data flag
    ("folder", "dir", "is a folder; pass a file"),
    ("broken.csv.gz", b"\x1f\x8bnot gzip at all", "is gzip-compressed but damaged or cut short"),
    ("broken.jsonl", b'{"text": "ok", "label": 0}\n{not json\n', "could not be read"),
    ("broken.parquet", b"PAR1 nope", "could not be read"),
])
def test_missing_or_unreadable_file(tmp_path, capsys, name, content, expected):
    path = tmp_path / name
    if content == "dir":
        path.mkdir()
    elif content is not None:
        path.write_bytes(content)
    msg = user_error(capsys, ["data", str(path)])
    assert str(path) in msg and expected in msg


def test_bytes_outside_the_declared_encoding(tmp_path, capsys):
    path = tmp_path / "latin.csv"
    path.write_bytes("label,text\n1,good day\n0,caf\xe9 closed\n".encode("latin-1"))
    msg = user_error(capsys, ["data", str(path), "--encoding", "utf-8"])
    assert "line 3: byte b'\\xe9' is not valid utf-8" in msg and "--encoding latin-1" in msg
    assert "--encoding 'klingon' is not an encoding" in user_error(capsys, ["data", str(path), "--encoding", "klingon"])
    assert main(["data", str(path)]) == 0  # auto: not UTF-8, so latin-1, like Sentiment140's own files
    assert main(["data", str(path), "--encoding", "latin-1"]) == 0


def test_utf8_with_byte_order_mark_reads(tmp_path, capsys):
    path = tmp_path / "excel.csv"
    path.write_bytes("\ufefflabel,text\n0,café closed 😞\n1,good day\n".encode("utf-8"))
    assert main(["data", str(path), "--bad-rows", "error"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["rows"] == 2 and info["labels"] == {"negative": 1, "positive": 1}


def test_skipped_rows_are_counted_by_reason(tmp_path, capsys):
    path = tmp_path / "messy.csv"
    path.write_text("label,text\n0,bad day\n1,good,day\n1,  \nhappy,yay\n2,meh\n4,great\n")
    assert main(["data", str(path), "--bad-rows", "skip", "--normalize", "false"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["rows"] == 2
    assert info["dropped"] == {"malformed_row": 1, "empty_text": 1, "unknown_label": 1, "neutral": 1}


# ------------------------------------------------------------------------------------------------ configuration
@pytest.mark.parametrize("flags, expected", [
    (["--lr", "0"], "--lr must be > 0 (got 0.0)"),
    (["--lr=-1e-3"], "--lr must be > 0 (got -0.001)"),
    (["--lr", "fast"], "'lr' must be a number, got 'fast'"),
    (["--lora-r", "0"], "--lora-r must be at least 1 (got 0)"),
    (["--epochs", "0"], "--epochs must be at least 1 (got 0)"),
    (["--batch-size", "0"], "--batch-size must be at least 1 (got 0)"),
    (["--warmup-ratio", "1.5"], "--warmup-ratio must be in [0, 1) (got 1.5)"),
    (["--lora-dropout", "1"], "--lora-dropout must be in [0, 1) (got 1.0)"),
    (["--precision", "fp16"], "--precision must be auto, bf16 or fp32 (got fp16)"),
    (["--train-size", "0"], "--train-size must be > 0 (got 0.0)"),
    (["--encoding", "klingon"], "--encoding 'klingon' is not an encoding"),
    (["--methods", "lroa"], "unknown method 'lroa'. Did you mean 'lora'?"),
    (["--method-lr", "{bitfti: 0.01}"], "unknown method 'bitfti'. Did you mean 'bitfit'?"),
    (["--method-lr", "{lora:1e-3}"], "with a space after each colon"),
    (["--method-lr", "{lora: 0}"], "--method-lr values must be numbers > 0"),
    (["--label-map", "{good: 4"],
     "'label_map' must be a mapping like {neg: 0, pos: 4}, got '{good: 4' (not valid YAML"),
    (["--label-map", "[good]"], "'label_map' must be a mapping"),
    (["--model", "embeded"], "Did you mean 'embedded'"),
    (["--model", "./no-such-model"], "model folder './no-such-model' does not exist"),
    (["--config", "no-such-config.yaml"], "config file 'no-such-config.yaml' does not exist. Shipped configs:"),
])
def test_bad_flag(tmp_path, capsys, flags, expected):
    out = tmp_path / "run"
    msg = user_error(capsys, ["run", "--out", str(out), "--no-report", *flags])
    assert expected in msg
    assert not out.exists()  # rejected before the run folder is made


@pytest.mark.parametrize("yaml_text, expected", [
    ("epoch: 3\n", "unknown key 'epoch'. Did you mean 'epochs'?"),
    ("train:\n  batchsize: 8\n", "unknown key 'batchsize'. Did you mean 'batch_size'?"),
    ("train: {lr: [1\n", "is not valid YAML"),
    ("- just\n- a list\n", "must hold a mapping of settings"),
])
def test_bad_config_file(tmp_path, capsys, yaml_text, expected):
    path = tmp_path / "my.yaml"
    path.write_text(yaml_text)
    msg = user_error(capsys, ["run", "--config", str(path), "--out", str(tmp_path / "run")])
    assert expected in msg and "my.yaml" in msg


def test_model_folder_without_config_and_close_name(tmp_path, capsys, model):
    broken = tmp_path / "broken-model"
    broken.mkdir()
    (broken / "model.safetensors").write_bytes(b"")
    msg = user_error(capsys, ["run", "--model", str(broken), "--out", str(tmp_path / "r")])
    assert f"model folder '{broken}' has no config.json (it holds: model.safetensors)" in msg
    typo = str(model)[:-1]
    msg = user_error(capsys, ["run", "--model", typo, "--out", str(tmp_path / "r")])
    assert f"Did you mean '{model}'?" in msg


def test_hub_model_offline_fails_fast_and_clearly(tmp_path, capsys, monkeypatch):
    from sendit.train import models

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    models._hub_reachable.cache_clear()
    try:
        msg = user_error(capsys, ["run", "--model", "someone/no-such-model-xyz", "--out", str(tmp_path / "r")])
    finally:
        models._hub_reachable.cache_clear()
    assert "'someone/no-such-model-xyz' is not a local folder, not in the Hugging Face cache" in msg
    assert "hf download someone/no-such-model-xyz" in msg


def test_run_folder_is_never_overwritten_silently(tmp_path, capsys, model):
    out = tmp_path / "run"
    out.mkdir()
    (out / "precious.csv").write_text("a\n1\n")
    for flags in ([], ["--overwrite"]):  # not a run folder: left alone even with --overwrite
        msg = user_error(capsys, ["run", "--model", str(model), "--out", str(out), *flags])
        assert "is not a sendit run folder (no run.json), so it is left alone" in msg
    (out / "run.json").write_text("{}")  # a run.json, but not sendit's: left alone even with --overwrite
    for flags in ([], ["--overwrite"]):
        msg = user_error(capsys, ["run", "--model", str(model), "--out", str(out), *flags])
        assert "holds a run.json that sendit did not write" in msg and "left alone, even with --overwrite" in msg
    (out / "run.json").write_text('{"config": {}, "status": {}}')  # a run folder from before the sendit mark
    msg = user_error(capsys, ["run", "--model", str(model), "--out", str(out)])
    assert "already exists and is not empty. Pass --overwrite" in msg and f"--resume {out}" in msg
    assert (out / "precious.csv").read_text() == "a\n1\n"
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    assert "is a file" in user_error(capsys, ["run", "--model", str(model), "--out", str(a_file)])
    msg = user_error(capsys, ["run", "--resume", str(tmp_path / "nothing-here")])
    assert "no run.json with a config there, nothing to resume" in msg
    msg = user_error(capsys, ["run", "--model", str(model), "--out", str(a_file / "sub")])
    assert "Not a directory" in msg and str(a_file) in msg  # OSError: no traceback either


def _csv(tmp_path, text: str):
    path = tmp_path / "tweets.csv"
    path.write_text("label,text\n" + text)
    return path


SMALL = ["--val-size", "4", "--test-size", "4", "--test-file", "none", "--no-report"]


@pytest.mark.parametrize("rows, flags, expected", [
    (tweets(60, 0, "rain") + tweets(2, 1, "sun"), ["--train-size", "10"],
     "the 10-row training split holds only negative tweets (the source has 60 negative and 2 positive"),
    (tweets(30, 1), ["--train-size", "10"], "only positive tweets (30 rows); a sentiment classifier needs both"),
    (tweets(10, 0, "rain") + tweets(10, 1, "sun"), ["--train-size", "30"],
     "need 38 rows but only 20 remain after dropping nothing"),
    (tweets(20, 0, "rain") + tweets(20, 1, "sun"), ["--train-size", "8", "--batch-size", "16"],
     "--batch-size 16 is larger than the 8 training rows"),
    (tweets(20, 0, "rain") + "happy,yay\n", ["--train-size", "8", "--label-map", "{happy: 7}"],
     "--label-map maps 'happy' to 7, which is not a label"),
])
def test_bad_training_data(tmp_path, capsys, model, rows, flags, expected):
    path = _csv(tmp_path, rows)
    msg = user_error(capsys, ["run", "--model", str(model), "--data", str(path), "--out", str(tmp_path / "r"),
                              *SMALL, *flags])
    assert expected in msg


def test_interrupt_says_how_to_resume(capsys, monkeypatch):
    import sendit.recipes.compare

    def interrupted(*a, **kw):
        raise KeyboardInterrupt

    monkeypatch.setattr(sendit.recipes.compare, "run", interrupted)
    assert main(["run"]) == 130
    assert "interrupted. Finished work is saved; continue a run with --resume RUN_DIR" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------ in training
def test_nan_fails_one_method_the_others_go_on_and_skipped_rows_are_reported(tmp_path, capsys, model,
                                                                              restore_threads):
    rows = tweets(30, 0, "rain") + tweets(30, 1, "sun") + "1,a,b\n0,  \nhappy,yay\n2,meh\n"
    out = tmp_path / "run"
    # Labels 0/1 plus 2: --label-map says that 2 is neutral here (0/1/2 alone could be TweetEval's 1 = neutral).
    code = main(["run", "--model", str(model), "--data", str(_csv(tmp_path, rows)), "--bad-rows", "skip",
                 "--label-map", "{2: neutral}", "--methods", "bitfit,head", "--method-lr", "{bitfit: 1e30, head: 0.01}", "--train-size", "32",
                 "--val-size", "8", "--test-size", "8", "--test-file", "none", "--epochs", "1", "--batch-size", "16",
                 "--threads", "1", "--out", str(out), "--no-report"])
    captured = capsys.readouterr()
    assert code == 1  # a failed run, not bad input (2)
    assert "Traceback" not in captured.err
    last = captured.err.strip().splitlines()[-1]
    assert last.startswith("sendit run: error: 1 of 2 method runs failed (bitfit/seed0 failed: bitfit: the "
                           "training loss became nan in epoch 1. Lower the learning rate (now 1e+30)")
    assert f"The others finished and are saved in {out}" in last
    shown = next(line for line in captured.out.splitlines() if line.startswith("rows dropped (also in run.json): "))
    assert sorted(shown.removeprefix("rows dropped (also in run.json): data: ").split(", ")) == [
        "1 empty_text", "1 malformed_row", "1 neutral", "1 unknown_label"]
    manifest = json.loads((out / "run.json").read_text())
    assert manifest["status"]["head/seed0"] == "done"
    assert manifest["status"]["bitfit/seed0"].startswith("failed: bitfit: the training loss became nan")
    assert {k: v for k, v in manifest["data"]["dropped"]["data"].items() if v} == {
        "malformed_row": 1, "empty_text": 1, "unknown_label": 1, "neutral": 1}
    assert len(pd.read_csv(out / "head_results.csv")) == 1
    assert not (out / "bitfit_results.csv").exists()


def test_nan_keeps_the_best_epoch_in_the_saved_model_folder(tmp_path, model, restore_threads):
    from sendit.config.schema import load_config
    from sendit.errors import TrainingError
    from sendit.train.engine import cross_entropy
    from sendit.train.models import load_model
    from sendit.run.context import Context
    from sendit.run.method import train_method

    cfg = load_config(None, {"model": str(model), "train_size": 32, "val_size": 16, "test_size": 8,
                             "test_file": "none", "epochs": 4, "batch_size": 16, "patience": 9, "lr": 0.05,
                             "threads": 1,
                             "out": str(tmp_path / "run")})
    weights: dict[int, dict] = {}
    steps = {"n": 0}
    holder = {}

    def log(line: str) -> None:  # after each epoch's validation: keep that epoch's weights
        if " epoch " in line and ": train loss" in line:
            epoch = int(line.split(" epoch ")[1].split(":")[0])
            weights[epoch] = {n: p.detach().clone() for n, p in holder["model"].named_parameters() if p.requires_grad}

    def nan_in_epoch_3(logits, batch):
        steps["n"] += 1
        loss, extras = cross_entropy(logits, batch)
        return (loss * float("nan") if steps["n"] > 4 else loss), extras  # 2 batches per epoch

    def factory():
        holder["model"] = load_model(str(model), ctx.tokenizer)
        return holder["model"]

    (tmp_path / "run").mkdir()
    ctx = Context.build(cfg, tmp_path / "run", log=log)
    with pytest.raises(TrainingError) as info:
        train_method(ctx, "bitfit", 0, model_factory=factory, loss_fn=nan_in_epoch_3)
    best = info.value.result.best_epoch
    assert best in (1, 2) and sorted(weights) == [1, 2]
    assert "the training loss became nan in epoch 3" in str(info.value)
    assert f"the model keeps epoch {best}'s weights, the best so far" in str(info.value)
    saved = load_file(str(tmp_path / "run" / "bitfit" / "trained_params.safetensors"))
    assert saved.keys() == weights[best].keys()
    assert all(torch.equal(saved[n], weights[best][n]) for n in saved)
    assert all(torch.isfinite(t).all() for t in saved.values())
    assert pd.read_csv(tmp_path / "run" / "bitfit_epoch_logs.csv")["epoch"].tolist() == [1, 2]
    manifest = json.loads((tmp_path / "run" / "bitfit" / "sendit_model.json").read_text())
    assert manifest["best_epoch"] == best and "nan" in manifest["failed"]


def test_gzip_sentiment140_reads(tmp_path, capsys):
    path = tmp_path / "s140.csv.gz"
    path.write_bytes(gzip.compress("".join(SENTIMENT140_ROW.format(y=y, i=i, text=f"tweet {i}")
                                           for i, y in enumerate([0, 4, 2, 4])).encode("latin-1")))
    assert main(["data", str(path), "--bad-rows", "error"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["labels"] == {"negative": 1, "positive": 2} and info["dropped"] == {"neutral": 1}
