"""Optional live tracking through accelerate's trackers (off by default)."""

from __future__ import annotations

import pytest
from helpers import tiny_run_args

from sendit.cli import main


def test_tensorboard_tracking_writes_event_files(tiny_opt, tmp_path):
    pytest.importorskip("tensorboard", reason="tensorboard not installed (pip install 'sendit[tracking]')")
    out = tmp_path / "tb"
    assert main(tiny_run_args(tiny_opt, out, "bitfit", "--tracker", "tensorboard")) == 0
    events = list(out.rglob("events.out.tfevents.*"))
    assert events, "no TensorBoard event files written"
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(events[0].parent))
    acc.Reload()
    assert "bitfit/val/f1" in acc.Tags()["scalars"]
    assert [e.step for e in acc.Scalars("bitfit/val/f1")] == [1, 2]


def test_tracking_is_off_by_default(tiny_opt, tmp_path):
    out = tmp_path / "plain"
    assert main(tiny_run_args(tiny_opt, out, "bitfit")) == 0
    assert not list(out.rglob("events.out.tfevents.*"))


def test_wandb_tracking_works_offline_and_records_the_epochs(tiny_opt, tmp_path, monkeypatch):
    pytest.importorskip("wandb", reason="wandb not installed (pip install 'sendit[tracking]')")
    monkeypatch.setenv("WANDB_MODE", "offline")  # no network here: W&B's offline mode writes the run to disk
    monkeypatch.setenv("WANDB_SILENT", "true")
    out = tmp_path / "wb"
    assert main(tiny_run_args(tiny_opt, out, "bitfit", "--tracker", "wandb")) == 0
    runs = list((out / "wandb").glob("offline-run-*"))
    assert len(runs) == 1, "one offline W&B run in the run folder"
    # The offline run is W&B's own record log (written by its Go core; no Python reader ships): its protobuf
    # records hold the metric keys and the config keys as plain bytes.
    (log,) = runs[0].glob("run-*.wandb")
    data = log.read_bytes()
    assert data.count(b"bitfit/val/f1") >= 2 and b"bitfit/train/loss" in data, "each epoch's metrics are logged"
    assert b"train.epochs" in data and b"method.methods" in data, "the run's config is stored as its parameters"


@pytest.mark.usefixtures("one_thread")
def test_a_missing_tracker_package_stops_the_run_before_any_work(tiny_opt, tmp_path, monkeypatch, capsys):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mlflow" else real(name, *a))
    out = tmp_path / "r"
    assert main(tiny_run_args(tiny_opt, out, "head", "--tracker", "mlflow")) == 2
    err = capsys.readouterr().err
    assert "--tracker mlflow needs the mlflow package" in err and "pip install 'sendit[tracking]'" in err
    assert not out.exists()
