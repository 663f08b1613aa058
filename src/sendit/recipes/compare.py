"""`sendit run` / `train`: every method of a config once per seed, in one run folder, then the report."""

from __future__ import annotations

import os
import time
from contextlib import nullcontext
from datetime import datetime
from pathlib import Path
from typing import Callable


from sendit.run.lifecycle import Context, _resumed_config, check_against_model, check_run_dir, check_tracker, load_data, run_hardware, run_sources
from sendit.run.method import train_method
from sendit.config.schema import RunConfig
from sendit.errors import TrainingError
from sendit.data.dataset import Splits
from sendit.methods import get_method, method_info
from sendit.train.models import check_model
from sendit.run.folder import (
    clear_run_folder,
    read_manifest,
    start_manifest,
    update_manifest,
    writing,
)
from sendit.verbosity import say




def run(cfg: RunConfig, resume: bool = False, overwrite: bool = False, report: bool = True,
        log: Callable[[str], None] = say) -> Path:
    """Train and test every method of `cfg` once per seed; write the run folder and its report.

    Every input, option and path is checked, and the data read, before the run folder is created, replaced or
    resumed; then the folder is locked against a second writer for the whole run."""
    run_dir = check_run_dir(cfg.out, resume, overwrite, run_sources(cfg))
    if resume:
        cfg = _resumed_config(run_dir, cfg)
    for name in [*cfg.method.methods, *cfg.method.method_lr]:
        get_method(name)  # fail on a typo (also in --method-lr) before any work
    check_model(cfg.model.model)
    check_tracker(cfg.train.tracker)
    check_against_model(cfg)
    splits = load_data(cfg)
    # Under `accelerate launch` every process runs this; the main one owns the folder.
    main = os.environ.get("RANK", "0") == "0"
    with writing(run_dir) if main else nullcontext(run_dir):
        if main and not resume:
            clear_run_folder(run_dir)  # a folder check_run_dir allowed: empty, or a sendit run with --overwrite
        return _run(cfg, run_dir, splits, report, log)


def _run(cfg: RunConfig, run_dir: Path, splits: Splits, report: bool, log: Callable[[str], None]) -> Path:
    t0 = time.perf_counter()
    ctx = Context.build(cfg, run_dir, log, splits)
    manifest = read_manifest(run_dir)
    status: dict = manifest.get("status", {})
    if ctx.main():
        start_manifest(run_dir, cfg.to_dict(), cfg.seed_list(), run_hardware(ctx), ctx.splits.summary(),
                       methods=cfg.method.methods, method_info=method_info(cfg.method.methods))
    log(_plan(ctx))
    jobs = [(seed, name) for seed in cfg.seed_list() for name in cfg.method.methods]
    trained_seconds, trained = 0.0, 0
    for job, (seed, name) in enumerate(jobs, 1):
        key = f"{name}/seed{seed}"
        if status.get(key) == "done":
            log(f"[{job}/{len(jobs)}] {key}: already done, skipped")
            continue
        log(f"[{job}/{len(jobs)}] {name}, seed {seed}" + _time_left(trained_seconds, trained, len(jobs) - job + 1))
        started = time.perf_counter()
        try:
            train_method(ctx, name, seed)
            status[key] = "done"
        except TrainingError as e:
            status[key] = f"failed: {e}"
            log(f"{key} FAILED: {e}\nThe other methods go on.")
        trained_seconds, trained = trained_seconds + time.perf_counter() - started, trained + 1
        if ctx.main():
            update_manifest(run_dir, status=status)
    wall = time.perf_counter() - t0 + manifest.get("wall_time_sec", 0.0)
    if ctx.main():
        update_manifest(run_dir, finished=datetime.now().isoformat(timespec="seconds"), wall_time_sec=wall)
        _print_dropped(ctx, log)
        if (run_dir / ".checkpoints").is_dir() and not any((run_dir / ".checkpoints").iterdir()):
            (run_dir / ".checkpoints").rmdir()
    ctx.accelerator.end_trackers()
    if report and ctx.main():
        from sendit.report import build_report

        out = build_report([run_dir], log=log)
        log(f"report: {Path(out) / 'index.html'}")
    log(f"results: {run_dir.resolve()}  ({wall:.0f} s)")
    return run_dir


def _plan(ctx: Context) -> str:
    """The run's plan in one line: what trains how often, on how much data, tested where."""
    cfg, s = ctx.cfg, ctx.splits
    methods, seeds, epochs = cfg.method.methods, cfg.seed_list(), cfg.train.epochs
    tests = " and ".join(f"{name} ({len(t)})" for name, t in ctx.test_sets.items())
    return (f"plan: {_count(len(methods), 'method')} ({', '.join(methods)}) x {_count(len(seeds), 'seed')} = "
            f"{_count(len(methods) * len(seeds), 'training')} of up to {_count(epochs, 'epoch')} on {len(s.train)} "
            f"tweets (validation {len(s.val)}); {len(s.classes)} classes ({', '.join(s.classes)}); tested on {tests}")


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'s' * (n != 1)}"


def _time_left(seconds: float, done: int, left: int) -> str:
    """A rough estimate from the trainings finished so far (methods differ in cost), or nothing before the first."""
    rest = seconds / max(done, 1) * left
    when = f"{rest:.0f} s" if rest < 90 else f"{rest / 60:.0f} min"
    return f" (about {when} left, from the {done} finished so far)" if done else ""


def _print_dropped(ctx: Context, log: Callable[[str], None]) -> None:
    dropped = {k: c for k, v in ctx.splits.dropped.items() if (c := {reason: n for reason, n in v.items() if n})}
    if dropped:
        log("rows dropped (also in run.json): " + "; ".join(
            f"{src}: " + ", ".join(f"{n} {reason}" for reason, n in counts.items()) for src, counts in dropped.items()))
