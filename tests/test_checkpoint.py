"""Epoch checkpoints (sendit.train.checkpoint): safetensors plus a weights-only state that restores
everything, never an unpickled payload; a full disk keeps the last good checkpoint; nothing in the package unpickles."""

from __future__ import annotations

import errno
import pickle
import random
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import run_cli, tiny_training_state

import sendit
from sendit.errors import CheckpointError
from sendit.train.checkpoint import load_checkpoint, save_checkpoint
from sendit.train.engine import FitResult


@pytest.mark.usefixtures("one_thread")
def test_full_disk_while_saving_a_checkpoint_keeps_the_last_good_one(tmp_path):
    from helpers import tiny_training_state

    from sendit.train import checkpoint
    from sendit.train.checkpoint import load_checkpoint, save_checkpoint
    from sendit.train.engine import FitResult

    model, optimizer, scheduler = tiny_training_state()
    best = {n: p.detach().clone() for n, p in model.named_parameters()}
    save_checkpoint(tmp_path, 1, model, optimizer, scheduler, vars(FitResult(best_epoch=1)), best, 0)
    good = {p.name: p.read_bytes() for p in tmp_path.iterdir()}

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    for target in ("save_file", "torch_save", "second_save_file"):
        calls = {"n": 0}
        original = checkpoint.save_file

        def second_save_file(*args, **kwargs):
            calls["n"] += 1
            return original(*args, **kwargs) if calls["n"] == 1 else full()

        patches = {"save_file": ("save_file", full), "second_save_file": ("save_file", second_save_file)}
        with pytest.MonkeyPatch.context() as mp:
            if target == "torch_save":
                mp.setattr(checkpoint.torch, "save", full)
            else:
                mp.setattr(checkpoint, patches[target][0], patches[target][1])
            with pytest.raises(OSError) as info:
                save_checkpoint(tmp_path, 2, model, optimizer, scheduler, vars(FitResult(best_epoch=2)), best, 0)
        assert info.value.errno == errno.ENOSPC
        assert "No space left on device while saving the checkpoint of epoch 2" in str(info.value)
        assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == good  # the partial epoch-2 files are gone
    model2, optimizer2, scheduler2 = tiny_training_state()
    assert load_checkpoint(tmp_path, model2, optimizer2, scheduler2)[0] == 2  # epoch 1's checkpoint still loads


@pytest.mark.usefixtures("one_thread")
def test_full_disk_in_a_run_exits_1_and_says_how_to_resume(world, capsys, monkeypatch):
    from sendit.train import checkpoint

    saves = {"n": 0}
    original = checkpoint.torch.save

    def full_on_second_epoch(obj, f, *args, **kwargs):
        saves["n"] += 1
        if saves["n"] == 2:
            raise RuntimeError("[enforce fail at inline_container.cc:672] . PytorchStreamWriter failed writing file "
                               "data/0: file write failed")  # what torch.save says on a full disk
        return original(obj, f, *args, **kwargs)

    monkeypatch.setattr(checkpoint.torch, "save", full_on_second_epoch)
    out = world / "run"
    code, err = run_cli(capsys, ["run", "--model", str(world / "opt"), "--data", str(world / "forty.csv"),
                                 "--test-file", "none", "--train-size", "20", "--val-size", "8", "--test-size", "8",
                                 "--methods", "head", "--epochs", "3", "--patience", "9", "--batch-size", "10",
                                 "--out", str(out), "--no-report"])
    assert code == 1, err
    last = err.rstrip().splitlines()[-1]
    assert "No space left on device while saving the checkpoint of epoch 2" in last
    assert f"continue a run with --resume {out}" in last
    ckpt = out / ".checkpoints" / "head-seed0"
    assert sorted(p.name for p in ckpt.iterdir()) == ["best-epoch1.safetensors", "state.pt",
                                                      "trainable-epoch1.safetensors"]


SRC = Path(sendit.__file__).parent


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
