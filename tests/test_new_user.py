"""What a new user meets: test sets named after what they are, quiet model loading in sendit's own words, a run's
plan, `--version`, value names in `--help`, a missing tracker package caught before any work."""

from __future__ import annotations

import os
import sys
import tempfile
import warnings
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
import pytest
from helpers import OPT_TOKENIZER, tiny_opt_config, tiny_run_args

from sendit.cli import build_parser, main
from sendit.data.reading import embedded_path

pytestmark = pytest.mark.usefixtures("one_thread")
LIBRARY_NOISE = ("MISSING", "newly initialized", "LOAD REPORT", "FutureWarning", "Loading weights")


@contextmanager
def captured_fds():
    """Everything the process prints, at the file-descriptor level (progress bars, C libraries) and through
    Python's sys.stdout/sys.stderr (which pytest replaces), plus the warnings that were not filtered out."""
    import logging
    from contextlib import redirect_stderr, redirect_stdout

    saved = {fd: os.dup(fd) for fd in (1, 2)}
    files = {fd: tempfile.TemporaryFile(mode="w+") for fd in (1, 2)}
    # transformers logs through a handler bound to the sys.stderr of its import: point it at ours too
    handlers = [h for h in logging.getLogger("transformers").handlers if isinstance(h, logging.StreamHandler)]
    streams = [h.setStream(files[2]) for h in handlers]
    out: dict = {}
    try:
        sys.stdout.flush(), sys.stderr.flush()
        for fd, f in files.items():
            os.dup2(f.fileno(), fd)
        with redirect_stdout(files[1]), redirect_stderr(files[2]), warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield out
    finally:
        for h, stream in zip(handlers, streams):
            h.setStream(stream)
        for fd in (1, 2):
            files[fd].flush()
            os.dup2(saved[fd], fd)
            os.close(saved[fd])
            files[fd].seek(0)
        out.update(stdout=files[1].read(), stderr=files[2].read(), warnings=[w.category.__name__ for w in caught])


def save_headless_opt(folder: Path) -> Path:
    """A tiny OPT saved without a classification head, like a hub base model: loading it for classification
    makes transformers report the head as MISSING."""
    from transformers import AutoTokenizer, OPTModel

    import torch

    torch.manual_seed(0)
    OPTModel(tiny_opt_config()).save_pretrained(folder)
    AutoTokenizer.from_pretrained(OPT_TOKENIZER).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def custom_run(tmp_path_factory):
    """A run of LoRA on a head-less base model with a custom test file, its console output captured."""
    root = tmp_path_factory.mktemp("new-user")
    model = save_headless_opt(root / "opt-base")
    test_file = root / "my_tweets.csv"
    test_file.write_bytes(embedded_path("testdata.manual.2009.06.14.csv").read_bytes())
    args = tiny_run_args(model, root / "run", "lora", "--test-file", str(test_file), "--epochs", "1")
    with captured_fds() as out:
        rc = main(args)
    return {"rc": rc, "run": root / "run", "test_file": test_file, **out}


def test_a_custom_test_file_is_named_after_the_file(custom_run):
    assert custom_run["rc"] == 0, custom_run["stderr"]
    summary = pd.read_csv(custom_run["run"] / "lora_inference_metrics_summary.csv")
    assert summary.test_set.tolist() == ["my_tweets", "held-out split"]
    preds = pd.read_csv(custom_run["run"] / "lora_inference_predictions.csv")
    assert set(preds.test_set) == {"my_tweets", "held-out split"}
    assert "lora (seed 0) on my_tweets (359 tweets): accuracy" in custom_run["stdout"]
    assert "manual" not in custom_run["stdout"] and "heldout" not in custom_run["stdout"]


def test_test_name_flag_names_the_test_set(tiny_opt, tmp_path):
    args = tiny_run_args(tiny_opt, tmp_path / "r", "head", "--test-name", "Go et al. 2009", "--epochs", "1")
    assert main(args) == 0
    summary = pd.read_csv(tmp_path / "r" / "head_inference_metrics_summary.csv")
    assert summary.test_set.tolist() == ["Go et al. 2009", "held-out split"]
    assert main(tiny_run_args(tiny_opt, tmp_path / "r2", "head", "--test-name", "held-out split")) == 2


def test_a_run_is_quiet_and_says_what_it_does(custom_run):
    printed = custom_run["stdout"] + custom_run["stderr"]
    for noise in LIBRARY_NOISE:
        assert noise not in printed, noise
    assert "FutureWarning" not in custom_run["warnings"]
    assert "new classification head (2 labels), trained by each method" in custom_run["stdout"]
    assert custom_run["stdout"].startswith("plan: 1 method (lora) x 1 seed = 1 training of up to 1 epoch on 96")
    assert "[1/1] lora, seed 0" in custom_run["stdout"]


def test_predict_is_quiet_and_verbose_shows_the_libraries(custom_run):
    model = str(custom_run["run"] / "lora")
    with captured_fds() as quiet:
        assert main(["predict", model, "so happy today"]) == 0
    assert "prob_positive" in quiet["stdout"]
    for noise in LIBRARY_NOISE:
        assert noise not in quiet["stdout"] + quiet["stderr"], noise
    assert "new classification head" not in quiet["stdout"]  # a trained model's head is loaded, not new
    with captured_fds() as verbose:
        assert main(["predict", model, "so happy today", "-v"]) == 0
    assert "MISSING" in verbose["stderr"]  # transformers' own report, kept for -v
    with captured_fds() as silent:
        assert main(["-q", "run", *tiny_run_args(Path(model).parent.parent / "opt-base", Path(model).parent.parent
                                                 / "run-q", "head", "--epochs", "1")[1:]]) == 0
    assert silent["stdout"] == "" and "epoch" not in silent["stderr"]


def test_version_flag(capsys):
    from sendit import __version__

    with pytest.raises(SystemExit) as stop:
        main(["--version"])
    assert stop.value.code == 0 and capsys.readouterr().out.strip() == f"sendit {__version__}"


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


def test_a_missing_tracker_package_stops_the_run_before_any_work(tiny_opt, tmp_path, monkeypatch, capsys):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mlflow" else real(name, *a))
    out = tmp_path / "r"
    assert main(tiny_run_args(tiny_opt, out, "head", "--tracker", "mlflow")) == 2
    err = capsys.readouterr().err
    assert "--tracker mlflow needs the mlflow package" in err and "pip install 'sendit[tracking]'" in err
    assert not out.exists()


def test_the_python_api_is_listed_and_a_model_prints_in_one_line(custom_run):
    import sendit

    assert {"load", "run", "evaluate", "export", "build_report", "load_config", "__version__"} <= set(dir(sendit))
    with captured_fds() as out:
        model = sendit.load(custom_run["run"] / "lora", precision="fp32")
        model.predict(["so happy today"])
    assert "FutureWarning" not in out["warnings"] and "MISSING" not in out["stderr"]
    text = repr(model)
    assert "\n" not in text and len(text) < 200
    assert text.startswith("SenditModel(method='lora', base_model=") and "precision='fp32', device='cpu'" in text


def test_distill_help_and_docs_agree_on_where_out_goes():
    sub = build_parser()._subparsers._group_actions[0].choices
    out = next(a for a in sub["distill"]._actions if "--out" in a.option_strings)
    assert "default: the teacher's run folder" in out.help
    docs = (Path(__file__).parents[1] / "docs" / "distillation.md").read_text()
    assert "Default output is the teacher's run folder" in docs


def test_inference_shows_a_progress_bar_with_throughput_unless_quiet(monkeypatch, capsys):
    from types import SimpleNamespace

    import numpy as np
    import torch

    from sendit.train import engine
    from sendit import verbosity
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
