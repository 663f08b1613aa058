"""The training loop and its evaluation (sendit.train.engine, sendit.run.method): a nan loss fails one method
and keeps the best epoch; inference shows a progress bar unless quiet."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch
from helpers import _csv, save_tiny_opt, tweets
from safetensors.torch import load_file

from sendit.cli import main


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """A tiny OPT classifier folder of this module's own (the typo and bad-input checks name it)."""
    return save_tiny_opt(tmp_path_factory.mktemp("opt"))


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
    from sendit.run.context import Context
    from sendit.run.method import train_method
    from sendit.train.engine import cross_entropy
    from sendit.train.models import load_model

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


@pytest.mark.usefixtures("one_thread")
def test_inference_shows_a_progress_bar_with_throughput_unless_quiet(monkeypatch, capsys):
    from types import SimpleNamespace

    import numpy as np
    import torch

    from sendit import verbosity
    from sendit.train import engine
    from sendit.train.batching import Encoded

    class Constant(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.bias = torch.nn.Parameter(torch.zeros(2))

        def forward(self, input_ids, attention_mask):
            return SimpleNamespace(logits=self.bias.expand(len(input_ids), 2))

    data = Encoded([[1, 2, 3]] * 50, np.zeros(50, dtype=np.int64), 0)
    monkeypatch.setattr(engine, "PROGRESS_DELAY", 0.0)  # the bar of a phase longer than PROGRESS_DELAY
    engine.predict(Constant(), data, None, batch_size=8, desc="scoring")
    err = capsys.readouterr().err
    assert "scoring" in err and "/50 [" in err and "tweet/s]" in err  # rows done/total, elapsed<ETA, rate
    try:
        verbosity.set_level(verbosity.QUIET)
        engine.predict(Constant(), data, None, batch_size=8, desc="scoring")
        assert capsys.readouterr().err == ""
    finally:
        verbosity.set_level(verbosity.NORMAL)
    engine.predict(Constant(), data, None, batch_size=8, desc=None)  # a caller with its own bar
    assert capsys.readouterr().err == ""
