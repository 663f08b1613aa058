"""`sendit tune`'s Optuna backend: per-method studies in the run folder's journal (or --storage), TPE proposals,
pruning after an epoch, --workers N processes sharing the study. The Ray backend is ray_tune.py; both write
trials.csv through trials.py."""

from __future__ import annotations

import multiprocessing
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Iterator

import optuna
import pandas as pd
import torch
from optuna.trial import TrialState

from sendit.config.schema import RunConfig, from_dict
from sendit.config.tune import TuneConfig, tune_config
from sendit.errors import TrainingError
from sendit.recipes.tune.trials import (
    Budget,
    TrialFailed,
    counted,
    default_params,
    mark_interrupted,
    method_space,
    open_storage,
    run_trial,
    trials_frame,
    used_seconds,
    write_trials,
)
from sendit.run.context import Context




def search_optuna(ctx: Context, tcfg: TuneConfig, spaces: dict, resume: bool) -> pd.DataFrame:
    """The Optuna backend: this process and --workers N-1 more share one study per method; returns trials.csv."""
    studies = open_studies(ctx.run_dir, tcfg, ctx.cfg.method.methods, worker=0)
    for name, study in studies.items():
        if resume and (n := mark_interrupted(study)):
            ctx.log(f"{name}: {n} trial(s) stopped by the kill are failed as 'interrupted' and proposed again")
        if tcfg.start_from_defaults and not study.get_trials(deepcopy=False):
            study.enqueue_trial(default_params(ctx.cfg, name, spaces[name]))
    threads = torch.get_num_threads()
    with _workers(ctx.run_dir, ctx.cfg, tcfg, threads) as share:  # this process is worker 0 of --workers
        torch.set_num_threads(share)
        search(ctx, tcfg, studies, spaces, worker=0)
    torch.set_num_threads(threads)
    write_trials(ctx.run_dir, studies)
    return trials_frame(studies)


def open_studies(run_dir: Path, tcfg: TuneConfig, methods: list[str], worker: int) -> dict[str, optuna.Study]:
    """One study per method in the shared storage; each worker samples with its own seed (otherwise two
    workers would propose the same random start-up trials)."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = open_storage(tcfg.storage, run_dir)
    prefix = f"{Path(run_dir).resolve().name}-" if tcfg.storage else ""
    if tcfg.pruner == "median":
        pruner = optuna.pruners.MedianPruner(n_startup_trials=tcfg.prune_after_trials, n_warmup_steps=0)
    elif tcfg.pruner == "halving":
        pruner = optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=3)
    else:
        pruner = optuna.pruners.NopPruner()
    studies = {}
    for name in methods:
        study = optuna.create_study(study_name=f"{prefix}{name}", storage=storage, direction="maximize",
                                    load_if_exists=True, pruner=pruner)
        # TPE samples at random for its first n_startup_trials; a third of the budget keeps a model-guided
        # majority. The seed moves on with the trials already in the study, so that a resumed sweep or a late
        # worker does not replay the random proposals the study has already tried.
        done = len(study.get_trials(deepcopy=False))
        study.sampler = optuna.samplers.TPESampler(seed=tcfg.search_seed + worker + 1009 * done, constant_liar=True,
                                                   n_startup_trials=max(2, tcfg.trials // 3))
        studies[name] = study
    return studies


def search(ctx: Context, tcfg: TuneConfig, studies: dict[str, optuna.Study], spaces: dict[str, dict],
           worker: int = 0) -> None:
    """Run trials method after method until each method's budget is spent (by this and any other worker)."""
    budget = Budget(tcfg.trials, tcfg.budget_seconds)
    seed = tcfg.trial_seed_for(ctx.cfg.seed_list())  # never a confirmation seed: selection stays out of the evidence
    features: dict | None = {} if tcfg.head_features else None  # head-only features, computed once per process
    for name, study in studies.items():
        while _budget_left(study, budget):
            trial = study.ask()
            earlier = [t for t in counted(study.get_trials(deepcopy=False)) if t.number < trial.number]
            if len(earlier) >= budget.trials:  # a parallel worker took the last trial meanwhile
                trial.set_user_attr("note", "over budget: another worker took the last trial")
                study.tell(trial, state=TrialState.FAIL)
                break
            try:
                value = run_trial(ctx, name, trial, spaces[name], seed, budget, worker, ctx.log, features)
                study.tell(trial, value)
                ctx.log(f"{name} trial {trial.number}: validation F1 {value:.4f}")
            except optuna.TrialPruned as e:
                study.tell(trial, state=TrialState.PRUNED)
                ctx.log(f"{name} trial {trial.number}: {e}")
            except TrialFailed as e:
                study.tell(trial, state=TrialState.FAIL)
                ctx.log(f"{name} trial {trial.number} {e}; the sweep goes on")
            write_trials(ctx.run_dir, studies)


def _budget_left(study: optuna.Study, budget: Budget) -> bool:
    trials = counted(study.get_trials(deepcopy=False))
    started = [t for t in trials if t.state != TrialState.WAITING]
    if budget.seconds is not None and used_seconds(trials) >= budget.seconds:
        return False
    return len(started) < budget.trials


# ------------------------------------------------------------------------------------------------ workers
@contextmanager
def _workers(run_dir: Path, cfg: RunConfig, tcfg: TuneConfig, threads: int) -> Iterator[int]:
    """Start workers 1..N-1 of --workers N (processes sharing the study through its storage); yields the torch
    threads each worker gets (its share of the run's), and waits for them on the way out."""
    share = max(1, threads // tcfg.workers)
    mp = multiprocessing.get_context("spawn")  # fork after torch has started its thread pool can deadlock
    procs = [mp.Process(target=_worker, args=(str(run_dir), cfg.to_dict(), asdict(tcfg), i, share))
             for i in range(1, tcfg.workers)]
    for p in procs:
        p.start()
    try:
        yield share
        for p in procs:
            p.join()
    finally:
        for p in procs:
            if p.is_alive():
                p.terminate()
                p.join()
    failed = [i for i, p in enumerate(procs, 1) if p.exitcode != 0]
    if failed:
        raise TrainingError(f"search worker(s) {failed} stopped with an error (see above); finished trials are "
                            f"kept in {run_dir}; continue with sendit tune --resume {run_dir}.")


def _worker(run_dir: str, cfg_dict: dict, tcfg_dict: dict, worker: int, threads: int) -> None:
    cfg_dict = {**cfg_dict, "train": {**cfg_dict["train"], "threads": threads, "tracker": None}}
    cfg, tcfg = from_dict(cfg_dict), tune_config(tcfg_dict)
    ctx = Context.build(cfg, Path(run_dir), log=lambda s: print(f"[worker {worker}] {s}", flush=True))
    spaces = {name: method_space(name, tcfg.space.get(name)) for name in cfg.method.methods}
    search(ctx, tcfg, open_studies(Path(run_dir), tcfg, cfg.method.methods, worker), spaces, worker)
