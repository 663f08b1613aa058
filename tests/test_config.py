"""The run's settings from flags and config files: every bad value or key ends in one paragraph on stderr
that names it and the fix, exit code 2, no traceback, and no run folder made."""

from __future__ import annotations

import pytest
from helpers import user_error


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
