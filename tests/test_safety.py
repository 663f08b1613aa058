"""Safety of what sendit loads and shows: no unpickling of untrusted files, no custom model code without the flag,
no writes outside the run folder, tweets escaped in the HTML report."""

from __future__ import annotations

import pickle
import random
import re
import types
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from helpers import save_tiny_opt, tiny_training_state

import sendit
from sendit.cli import main
from sendit.errors import CheckpointError, ConfigError
from sendit.train.checkpoint import load_checkpoint, save_checkpoint
from sendit.train.engine import FitResult
from sendit.run.method import check_label, train_method

SRC = Path(sendit.__file__).parent


@pytest.fixture
def restore_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_no_unsafe_loading_anywhere_in_the_package():
    calls = []
    for path in SRC.rglob("*.py"):
        text = path.read_text()
        calls += [(path.name, m.group(0)) for m in re.finditer(r"torch\.load\([^)]*\)", text)]
        assert not re.search(r"pickle\.loads?\(|dill\.|joblib\.load|allow_pickle=True|Unpickler\(", text), path
        assert "trust_remote_code=True" not in text, path
    assert calls, "the scan found no torch.load at all: the pattern is broken"
    assert all("weights_only=True" in call for _, call in calls), calls


def _draws():
    return torch.rand(3).tolist(), np.random.rand(3).tolist(), [random.random() for _ in range(3)]


def test_checkpoint_is_safetensors_plus_weights_only_state_and_restores_everything(tmp_path):
    model, optimizer, scheduler = tiny_training_state()
    result = FitResult(history=[{"epoch": 1, "val_f1": 0.5}], best_epoch=1, best_val_f1=0.5)
    best = {n: p.detach().clone() for n, p in model.named_parameters()}
    np.random.seed(7)
    random.seed(7)
    np.random.rand(5)  # the numpy generator mid-stream, not at a fresh seed
    save_checkpoint(tmp_path, 1, model, optimizer, scheduler, vars(result), best, 0)
    expected_draws, expected_params = _draws(), [p.detach().clone() for p in model.parameters()]

    assert sorted(p.name for p in tmp_path.iterdir()) == ["best-epoch1.safetensors", "state.pt",
                                                          "trainable-epoch1.safetensors"]
    torch.load(tmp_path / "state.pt", weights_only=True)  # plain tensors and Python values only

    model2, optimizer2, scheduler2 = tiny_training_state()  # other weights, optimizer moments, RNG positions
    start, progress, best2, bad_epochs = load_checkpoint(tmp_path, model2, optimizer2, scheduler2)
    result2 = FitResult(**progress)
    assert (start, bad_epochs, result2.history, result2.best_epoch) == (2, 0, result.history, 1)
    assert all(torch.equal(a, b) for a, b in zip(model2.parameters(), expected_params))
    assert all(torch.equal(best2[n], best[n]) for n in best)
    assert scheduler2.state_dict() == scheduler.state_dict()
    for a, b in zip(optimizer2.state.values(), optimizer.state.values()):
        assert all(torch.equal(a[k], b[k]) for k in a)
    assert _draws() == expected_draws  # torch, numpy and python RNG continue exactly where they were


def test_next_checkpoint_replaces_the_previous_one(tmp_path):
    model, optimizer, scheduler = tiny_training_state()
    for epoch in (1, 2):
        save_checkpoint(tmp_path, epoch, model, optimizer, scheduler, vars(FitResult()), None, 0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.pt", "trainable-epoch2.safetensors"]


class _Payload:
    def __init__(self, sentinel: Path):
        self.sentinel = sentinel

    def __reduce__(self):
        return (Path.touch, (self.sentinel,))


def test_a_pickle_planted_in_a_checkpoint_is_never_executed(tmp_path):
    model, optimizer, scheduler = tiny_training_state()
    save_checkpoint(tmp_path, 1, model, optimizer, scheduler, vars(FitResult()), None, 0)
    sentinel = tmp_path / "pwned"
    for planted in (lambda f: torch.save({"epoch": _Payload(sentinel)}, f),
                    lambda f: f.write_bytes(pickle.dumps(_Payload(sentinel)))):
        planted(tmp_path / "state.pt")
        with pytest.raises(CheckpointError, match="holds more than tensors and plain values, so it was not loaded"):
            load_checkpoint(tmp_path, model, optimizer, scheduler)
        assert not sentinel.exists()


def test_custom_model_code_is_not_run_without_the_flag(tmp_path, capsys):
    folder = save_tiny_opt(tmp_path / "custom")
    config = (folder / "config.json").read_text()
    (folder / "config.json").write_text(config.replace(
        '"model_type": "opt"',
        '"model_type": "custom_opt", "auto_map": {"AutoConfig": "custom.CustomConfig", '
        '"AutoModelForSequenceClassification": "custom.CustomModel"}'))
    sentinel = tmp_path / "code-ran"
    (folder / "custom.py").write_text(f"from pathlib import Path\nPath({str(sentinel)!r}).touch()\n")
    code = main(["run", "--model", str(folder), "--methods", "head", "--train-size", "32", "--val-size", "8",
                 "--test-size", "8", "--test-file", "none", "--out", str(tmp_path / "run"), "--no-report"])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert "sendit runs only with --trust-remote-code true" in err
    assert not sentinel.exists()


@pytest.mark.parametrize("label", ["../escape", "a/b", "/abs", ".hidden", "..", ".", "", "a\\b"])
def test_method_labels_cannot_leave_the_run_folder(label, tmp_path):
    with pytest.raises(ConfigError, match="cannot name a folder inside the run folder"):
        check_label(label)
    if label:  # an empty label means "the method's name"
        ctx = types.SimpleNamespace(cfg=None, accelerator=None, run_dir=tmp_path)
        with pytest.raises(ConfigError):
            train_method(ctx, "head", 0, label=label)
        assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("label", ["lora", "distill-3L-full", "distill-opt-125m-lora", "a.b_c"])
def test_ordinary_labels_pass(label):
    assert check_label(label) == label


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
