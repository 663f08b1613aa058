"""Two-process DDP (gloo, CPU) under `accelerate launch` gives the single-process result at the same global batch."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from helpers import tiny_run_args
from safetensors.torch import load_file

WEIGHTS = {"bitfit": "trained_params.safetensors", "lora": "adapter_model.safetensors"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def runs(tiny_opt, tmp_path_factory):
    """The same tiny run twice: in this process, and as two `accelerate launch` processes.

    97 training rows in batches of 16: each epoch ends with a 1-row batch, so one of the two processes gets no
    row of it and must still join the gradient all-reduce, and the other's loss must count for the whole batch."""
    from sendit.cli import main

    tmp = tmp_path_factory.mktemp("ddp")
    # LoRA dropout off: dropout masks are drawn per process, so they would differ between the two runs.
    # One thread per process: on a busy 2-core machine two OpenMP threads stall each other.
    # fp32 on every machine: the test is about DDP's arithmetic (sharding, weighting, gathering), which must match
    # one process to float rounding; bf16 would add its own rounding to both runs (tests/test_precision.py covers it).
    flags = ("--lora-dropout", "0", "--threads", "1", "--train-size", "97", "--precision", "fp32")
    args = tiny_run_args(tiny_opt, tmp / "single", "bitfit,lora", *flags)
    threads = torch.get_num_threads()
    try:
        assert main(args) == 0
    finally:
        torch.set_num_threads(threads)
    accelerate = shutil.which("accelerate", path=str(Path(sys.executable).parent)) or "accelerate"
    # --multi_gpu is accelerate's torchrun launcher; on a machine without GPUs sendit makes it a gloo job.
    # (`accelerate launch --cpu` without MPI starts a single process.)
    cmd = [accelerate, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(_free_port()),
           "-m", "sendit.cli",
           *tiny_run_args(tiny_opt, tmp / "ddp", "bitfit,lora", *flags)]
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return tmp / "single", tmp / "ddp", proc.stdout + proc.stderr


def test_two_processes_really_ran(runs):
    single, ddp, log = runs
    assert json.loads((ddp / "run.json").read_text())["hardware"]["processes"] == 2
    assert json.loads((single / "run.json").read_text())["hardware"]["processes"] == 1
    assert json.loads((ddp / "run.json").read_text())["data"]["split_sizes"]["train"] == 97  # a 1-row last batch
    assert json.loads((ddp / "run.json").read_text())["status"] == {"bitfit/seed0": "done", "lora/seed0": "done"}
    assert "resuming" not in log  # each process trains from epoch 1; none picks up another's checkpoint


@pytest.mark.parametrize("method", ["bitfit", "lora"])
def test_ddp_matches_single_process(runs, method):
    single, ddp, _ = runs
    a, b = load_file(str(single / method / WEIGHTS[method])), load_file(str(ddp / method / WEIGHTS[method]))
    assert set(a) == set(b) and a
    for name in a:
        np.testing.assert_allclose(b[name].numpy(), a[name].numpy(), atol=1e-4, err_msg=name)
    for csv, cols in [(f"{method}_epoch_logs.csv", ["train_loss", "val_loss", "val_accuracy", "val_f1"]),
                      (f"{method}_inference_metrics_summary.csv", ["accuracy", "f1_macro"]),
                      (f"{method}_inference_predictions.csv", ["prob_positive"])]:
        x, y = pd.read_csv(single / csv), pd.read_csv(ddp / csv)
        assert len(x) == len(y) > 0
        np.testing.assert_allclose(y[cols].to_numpy(float), x[cols].to_numpy(float), atol=1e-4, err_msg=csv)
    preds = pd.read_csv(ddp / f"{method}_inference_predictions.csv")
    assert (preds.groupby("test_set")["row_id"].apply(lambda r: list(r) == list(range(len(r))))).all()
    assert not (ddp / ".checkpoints").exists()


@pytest.mark.parametrize("rows", [1, 3, 16])
def test_train_shard_weights_give_the_batch_mean_loss_however_rows_split(rows):
    """DDP averages the processes' gradients: with each process's mean loss weighted by train_shard, that average
    is the gradient of the batch's mean loss, also for a short batch that leaves a process without rows (it then
    runs one borrowed row at weight 0, so that it still joins the all-reduce)."""
    from types import SimpleNamespace

    from sendit.train.batching import train_shard

    batch = list(range(100, 100 + rows))
    losses = np.random.default_rng(rows).random(200)
    world = 2
    parts = [train_shard(batch, SimpleNamespace(process_index=r, num_processes=world)) for r in range(world)]
    assert all(mine and set(mine) <= set(batch) for mine, _ in parts)
    assert sorted(i for mine, w in parts if w for i in mine) == batch  # each row counted once
    ddp_mean = sum(w * losses[mine].mean() for mine, w in parts) / world
    assert ddp_mean == pytest.approx(losses[batch].mean(), rel=1e-12)
