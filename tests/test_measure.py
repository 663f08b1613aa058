"""Peak memory measures the training, not what earlier work left resident (budgets and the Pareto table use it)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from helpers import tiny_run_args

from sendit.cli import main
from sendit.train.measure import resident_mb

pytestmark = [pytest.mark.usefixtures("one_thread"),
              pytest.mark.skipif(not __import__("os").path.exists("/proc/self/status"), reason="reads /proc")]


def test_a_trainings_peak_memory_leaves_out_what_earlier_work_holds_or_freed(tiny_opt, tmp_path):
    held = np.ones(400 * 2**20 // 8)  # 400 MB an earlier step keeps (a loaded model, a dataset)
    freed = [bytearray(64 * 1024) for _ in range(4000)]  # 250 MB of small heap blocks, freed: glibc keeps them
    del freed
    assert main(tiny_run_args(tiny_opt, tmp_path / "run", "bitfit")) == 0
    row = pd.read_csv(tmp_path / "run" / "bitfit_results.csv").iloc[0]
    assert row["process_peak_memory_mb"] > 400, "the process's own peak includes the held array"
    assert 0 < row["peak_memory_mb"] < 150, "the training's own peak does not"
    assert held[0] == 1.0


def test_resident_memory_gives_back_what_was_freed():
    device = torch.device("cpu")
    before = resident_mb(device)
    blocks = [bytearray(64 * 1024) for _ in range(3000)]
    grown = resident_mb(device)
    del blocks
    assert grown - before > 150 and resident_mb(device) - before < 50


def test_a_block_inside_another_hands_the_peak_it_resets_to_the_outer_one():
    """A tune trial measures features + fit in one block while fit measures each epoch in its own; both reset the
    one per-process peak counter, so the trial's block must still see an earlier epoch's peak."""
    from sendit.train.measure import PeakMemory

    device = torch.device("cpu")
    with PeakMemory(device) as outer:
        with PeakMemory(device):  # epoch 1: 200 MB at its peak, freed at its end
            np.ones(200 * 2**20 // 8).sum()
        with PeakMemory(device):  # epoch 2: little
            pass
    assert outer.peak_mb - outer.start_mb > 150
