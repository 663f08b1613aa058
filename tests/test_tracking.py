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
