"""Fault injection: a real `sendit run` is killed with SIGKILL at several points and resumed with
`sendit run --resume RUN_DIR`; the final CSV files equal those of an uninterrupted run with the same seed.

How the kill points are made deterministic, with no hook in the package: a "zygote" Python process imports
sendit once (torch + transformers take 5-10 s to import on this CPU, so that is paid once), then forks one child
per run. Each child runs the real `sendit.cli.main(argv)`, with one function wrapped (or torch's optimizer-step
hook set) so that the child prints `PAUSED-AT <point>` and sleeps at the named point:

    step:<method>:<n>       before the method's n-th optimizer step in this process (torch's global step hook):
                            mid-epoch, 4 steps per epoch here
    save_file:<n>           after the n-th weights file of a checkpoint is written, before state.pt commits it
    after_method:<method>   after the method's CSV files and model folder are written, before run.json says done

The test waits for the marker line, sends SIGKILL, checks what is on disk, and resumes. The uninterrupted reference
runs `sendit.cli.main` in the test process itself (another interpreter, with another hash seed, than the zygote's).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
from helpers import save_tiny_opt
from safetensors.torch import load_file

from sendit.cli import main
from sendit.run.folder import EPOCH_LOGS, INFERENCE_SUMMARY, PREDICTIONS, RESULTS

ZYGOTE = r'''
import json, os, signal, sys, time
from torch.optim.optimizer import register_optimizer_step_pre_hook
import sendit.train.checkpoint, sendit.cli, sendit.recipes.compare  # the slow imports, paid once before forking


def install(spec):
    kind, _, arg = spec.partition(":")

    def pause():
        print(f"PAUSED-AT {spec}", flush=True)
        time.sleep(600)

    checkpoint, workflow = sendit.train.checkpoint, sendit.recipes.compare
    current, steps = [None], [0]
    train_method = workflow.train_method

    def traced_train_method(ctx, name, seed, *a, **kw):
        current[0], steps[0] = name, 0
        row = train_method(ctx, name, seed, *a, **kw)
        if kind == "after_method" and arg == name:
            pause()
        return row

    workflow.train_method = traced_train_method
    if kind == "step":  # torch's global optimizer hook: independent of how the loop is written
        method, n = arg.split(":")

        def before_step(optimizer, args, kwargs):
            steps[0] += 1
            if current[0] == method and steps[0] == int(n):
                pause()

        register_optimizer_step_pre_hook(before_step)
    elif kind == "save_file":
        calls, save_file = [0], checkpoint.save_file

        def paused_save_file(*a, **kw):
            save_file(*a, **kw)
            calls[0] += 1
            if calls[0] == int(arg):
                pause()

        checkpoint.save_file = paused_save_file


for line in sys.stdin:
    cmd = json.loads(line)
    if cmd["op"] == "run":
        sys.stdout.flush()
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                import ctypes
                ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG: die with the zygote
                fd = os.open(cmd["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
                os.dup2(fd, 1)
                os.dup2(fd, 2)
                if cmd["kill_at"]:
                    install(cmd["kill_at"])
                code = sendit.cli.main(cmd["argv"])
            except BaseException:
                import traceback
                traceback.print_exc()
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        print(json.dumps({"pid": pid}), flush=True)
    elif cmd["op"] == "wait":
        _, status = os.waitpid(cmd["pid"], 0)
        print(json.dumps({"code": os.waitstatus_to_exitcode(status)}), flush=True)
'''

TIMING = ("runtime_sec", "memory_delta_mb", "peak_memory_mb", "process_peak_memory_mb", "train_tweets_per_sec", "train_tokens_per_sec",
          "inference_time_sec", "tweets_per_sec", "epoch_time_sec")
MARKER_TIMEOUT_S = 180


class Zygote:
    """Forks runs of `sendit.cli.main` from one process that has imported sendit already."""

    def __init__(self):
        self.running: set[int] = set()
        self.proc = subprocess.Popen([sys.executable, "-c", ZYGOTE], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True, env={**os.environ, "TOKENIZERS_PARALLELISM": "false"})

    def _ask(self, **cmd) -> dict:
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        assert line, "the zygote process died"
        return json.loads(line)

    def start(self, argv: list[str], log: Path, kill_at: str = "") -> int:
        log.touch()
        pid = self._ask(op="run", argv=argv, log=str(log), kill_at=kill_at)["pid"]
        self.running.add(pid)
        return pid

    def wait(self, pid: int) -> int:
        self.running.discard(pid)
        return self._ask(op="wait", pid=pid)["code"]

    def kill_at(self, point: str, argv: list[str], log: Path) -> None:
        """Run until `point`, then SIGKILL."""
        pid = self.start(argv, log, point)
        deadline = time.monotonic() + MARKER_TIMEOUT_S
        while f"PAUSED-AT {point}" not in log.read_text(errors="replace"):
            if time.monotonic() > deadline or _exited(pid):
                os.kill(pid, signal.SIGKILL)
                self.wait(pid)
                pytest.fail(f"never reached {point}:\n{log.read_text(errors='replace')[-3000:]}")
            time.sleep(0.05)
        os.kill(pid, signal.SIGKILL)
        assert self.wait(pid) == -signal.SIGKILL

    def close(self) -> None:
        for pid in list(self.running):  # a failed test leaves no paused child behind
            os.kill(pid, signal.SIGKILL)
            self.wait(pid)
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


def _exited(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[-1].startswith("Z")  # a zombie: finished, not yet reaped
    except FileNotFoundError:
        return True


def _state_epoch(checkpoint: Path) -> int:
    return torch.load(checkpoint / "state.pt", weights_only=True)["epoch"]


def _status(run: Path) -> dict:
    return json.loads((run / "run.json").read_text()).get("status", {})


def _frame(path: Path) -> pd.DataFrame:
    return pd.read_csv(path).drop(columns=list(TIMING), errors="ignore")


def test_sigkill_mid_epoch_mid_checkpoint_and_between_methods_then_resume_matches(tmp_path):
    # Dropout on, so a resumed run only matches if the RNG state at the epoch boundary is restored too.
    model = save_tiny_opt(tmp_path / "opt", dropout=0.1, attention_dropout=0.1)
    args = ["run", "--model", str(model), "--methods", "bitfit,lora", "--train-size", "64", "--val-size", "16",
            "--test-size", "16", "--test-file", "none", "--epochs", "2", "--batch-size", "16", "--threads", "1",
            "--no-report", "--method-lr", "{bitfit: 0.01, lora: 0.01}"]
    ref, run = tmp_path / "ref", tmp_path / "run"
    resume = ["run", "--resume", str(run), "--no-report"]
    zygote = Zygote()  # imports sendit in the background while the reference trains here
    threads = torch.get_num_threads()
    try:
        assert main([*args, "--out", str(ref)]) == 0
    finally:
        torch.set_num_threads(threads)  # --threads 1 must not slow down the rest of the test session
    try:
        zygote.kill_at("step:bitfit:7", [*args, "--out", str(run)], tmp_path / "1.log")  # epoch 2, 3rd batch
        bitfit_ckpt = run / ".checkpoints" / "bitfit-seed0"
        log = (tmp_path / "1.log").read_text()
        assert "bitfit epoch 1: train loss" in log and "bitfit epoch 2: train loss" not in log  # mid-epoch 2
        assert _state_epoch(bitfit_ckpt) == 1

        zygote.kill_at("save_file:1", resume, tmp_path / "2.log")
        assert "resuming bitfit from the checkpoint after epoch 1" in (tmp_path / "2.log").read_text()
        assert (bitfit_ckpt / "trainable-epoch2.safetensors").exists()  # written ...
        assert _state_epoch(bitfit_ckpt) == 1  # ... but not committed

        zygote.kill_at("after_method:bitfit", resume, tmp_path / "3.log")
        assert len(pd.read_csv(run / "bitfit_results.csv")) == 1
        assert "bitfit/seed0" not in _status(run)  # CSVs written, not marked done: retrained, rows replaced

        zygote.kill_at("step:lora:6", resume, tmp_path / "4.log")  # epoch 2, 2nd batch
        assert _status(run) == {"bitfit/seed0": "done"}
        log = (tmp_path / "4.log").read_text()
        assert "lora epoch 1: train loss" in log and "lora epoch 2: train loss" not in log
        assert _state_epoch(run / ".checkpoints" / "lora-seed0") == 1

        final = zygote.start([*resume, "--epochs", "9"], tmp_path / "5.log")  # the run's own config wins
        assert zygote.wait(final) == 0, (tmp_path / "5.log").read_text()[-3000:]
    finally:
        zygote.close()
    log = (tmp_path / "5.log").read_text()
    assert "bitfit/seed0: already done, skipped" in log
    assert "resuming lora from the checkpoint after epoch 1" in log
    assert "--resume finishes the run with the config it started with; ignoring --epochs" in log

    assert _status(run) == {"bitfit/seed0": "done", "lora/seed0": "done"}
    for method in ("bitfit", "lora"):
        for template in (RESULTS, EPOCH_LOGS, INFERENCE_SUMMARY, PREDICTIONS):
            name = template.format(method=method)
            pd.testing.assert_frame_equal(_frame(run / name), _frame(ref / name), check_exact=True, obj=name)
    for weights in ("bitfit/trained_params.safetensors", "lora/adapter_model.safetensors"):
        a, b = load_file(str(run / weights)), load_file(str(ref / weights))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), weights
    assert not (run / ".checkpoints").exists()
    assert not list(run.rglob("*.tmp"))
