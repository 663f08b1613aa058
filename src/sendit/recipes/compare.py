"""`sendit run` / `train`: every method of a config once per seed, in one run folder, then the report."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

from sendit.config.schema import RunConfig
from sendit.methods import get_method, method_info
from sendit.run.context import Context, check_against_model, check_tracker, load_data, run_hardware
from sendit.run.folder import CHECKPOINTS, start_manifest
from sendit.run.lifecycle import Job, check_run_dir, finish_run, open_run, resumed_config, run_jobs, run_sources
from sendit.run.method import train_method
from sendit.train.models import check_model
from sendit.verbosity import say


def run(cfg: RunConfig, resume: bool = False, overwrite: bool = False, report: bool = True,
        log: Callable[[str], None] = say) -> Path:
    """Train and test every method of `cfg` once per seed; write the run folder and its report.

    Every input, option and path is checked, and the data read, before the run folder is created, replaced or
    resumed; then the folder is locked against a second writer for the whole run."""
    run_dir = check_run_dir(cfg.out, resume, overwrite, run_sources(cfg))
    if resume:
        cfg = resumed_config(run_dir)
    for name in [*cfg.method.methods, *cfg.method.method_lr]:
        get_method(name)  # fail on a typo (also in --method-lr) before any work
    check_model(cfg.model.model)
    check_tracker(cfg.train.tracker)
    check_against_model(cfg)
    splits = load_data(cfg)
    with open_run(run_dir, fresh=not resume):
        t0 = time.perf_counter()
        ctx = Context.build(cfg, run_dir, log, splits)
        if ctx.main():
            start_manifest(run_dir, cfg.to_dict(), cfg.seed_list(), run_hardware(ctx), ctx.splits.summary(),
                           methods=cfg.method.methods, method_info=method_info(cfg.method.methods))
        log(_plan(ctx))
        jobs = [Job(f"{name}/seed{seed}", lambda name=name, seed=seed: train_method(ctx, name, seed),
                    title=f"{name}, seed {seed}") for seed in cfg.seed_list() for name in cfg.method.methods]
        run_jobs(run_dir, jobs, log, main=ctx.main())
        if ctx.main():
            _print_dropped(ctx, log)
            if (run_dir / CHECKPOINTS).is_dir() and not any((run_dir / CHECKPOINTS).iterdir()):
                (run_dir / CHECKPOINTS).rmdir()
        ctx.accelerator.end_trackers()
        wall = finish_run(run_dir, t0, main=ctx.main())
        if report and ctx.main():
            from sendit.report import report_run  # matplotlib and pandas only when a report is written

            report_run(run_dir, log)
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


def _print_dropped(ctx: Context, log: Callable[[str], None]) -> None:
    dropped = {k: c for k, v in ctx.splits.dropped.items() if (c := {reason: n for reason, n in v.items() if n})}
    if dropped:
        log("rows dropped (also in run.json): " + "; ".join(
            f"{src}: " + ", ".join(f"{n} {reason}" for reason, n in counts.items()) for src, counts in dropped.items()))
