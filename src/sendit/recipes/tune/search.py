"""`sendit tune`: every method at its best under one budget, then repeated over seeds, readable top to bottom.

setup (config, run folder, data tokenised once) -> search (per method, Optuna's TPE proposes; each trial is a
real training in the one engine on the training split, scored on validation macro-F1 only; bad trials are
pruned after an epoch; failed trials are recorded, not fatal) -> confirm (each method's best configuration is
retrained with every seed and tested on the held-out split and the hand-labelled file, writing the same CSV
files as `sendit run`) -> report.

The study lives in the run folder's journal file (`study.journal`), so a killed sweep continues with --resume
and N processes can share it (--workers N); --storage puts it in an RDB that workers anywhere can share.
"""

from __future__ import annotations

import copy
import json
import os
import time
from dataclasses import asdict
from datetime import datetime
from pathlib import Path
from typing import Callable

import pandas as pd
import torch

from sendit.config.schema import RunConfig
from sendit.config.tune import TuneConfig, tune_config
from sendit.errors import ConfigError
from sendit.methods import get_method, method_info
from sendit.recipes.tune.trials import (
    NOT_COUNTED,
    apply_params,
    check_space_values,
    default_params,
    method_lr,
    method_space,
)
from sendit.run.context import Context, check_against_model, load_data, run_hardware
from sendit.run.folder import (
    EPOCH_LOGS,
    INFERENCE_SUMMARY,
    PREDICTIONS,
    RESULTS,
    RUN_MANIFEST,
    append_rows,
    read_manifest,
    start_manifest,
    update_manifest,
)
from sendit.run.lifecycle import Job, check_run_dir, finish_run, open_run, resumed_config, run_jobs, run_sources
from sendit.run.method import train_method
from sendit.train.models import check_model


def tune(cfg: RunConfig, tcfg: TuneConfig, resume: bool = False, overwrite: bool = False, report: bool = True,
         log: Callable[[str], None] = print) -> Path:
    """Search each method's hyperparameters under the same budget, retrain the best with every seed, report.

    Every input is checked and the data read before the run folder is created, replaced or resumed; the folder
    is locked against a second `sendit` writer (the sweep's own --workers write only the study and trials.csv)."""
    run_dir = check_run_dir(cfg.out, resume, overwrite, run_sources(cfg))
    if resume:
        cfg, tcfg = _resumed(run_dir)
    if tcfg.backend == "ray":
        from sendit.recipes.tune.ray_tune import check_ray

        check_ray(tcfg)
    for name in tcfg.space:
        get_method(name)  # a typo in tune.space fails before any work
    if tcfg.trial_seed_for(cfg.seed_list()) in cfg.seed_list():
        raise ConfigError(f"--trial-seed {tcfg.trial_seed} is also a confirmation seed (--seeds "
                          f"{','.join(map(str, cfg.seed_list()))}): the run that won the search would be retrained as "
                          f"evidence for itself. Pick a trial seed outside the seeds, or leave it out (default: one "
                          f"past the largest seed).")
    spaces = {name: method_space(name, tcfg.space.get(name)) for name in cfg.method.methods}
    for name, space in spaces.items():
        check_space_values(cfg, name, space)
    check_model(cfg.model.model)
    check_against_model(cfg)
    splits = load_data(cfg)
    with open_run(run_dir, fresh=not resume):
        return _tune(cfg, tcfg, spaces, run_dir, splits, resume, report, log)


def _tune(cfg: RunConfig, tcfg: TuneConfig, spaces: dict, run_dir: Path, splits, resume: bool, report: bool,
          log: Callable[[str], None]) -> Path:
    t0 = time.perf_counter()
    ctx = Context.build(cfg, run_dir, log, splits)
    start_manifest(run_dir, cfg.to_dict(), cfg.seed_list(), run_hardware(ctx), ctx.splits.summary(),
                   config_file={**cfg.to_dict(), "tune": asdict(tcfg)}, tune=asdict(tcfg), methods=cfg.method.methods,
                   method_info=method_info(cfg.method.methods))
    log(budget_text(ctx, tcfg))

    if tcfg.backend == "ray":
        from sendit.recipes.tune.ray_tune import search_ray

        trials = search_ray(ctx, tcfg, spaces, resume)
    else:
        from sendit.recipes.tune.optuna_search import search_optuna

        trials = search_optuna(ctx, tcfg, spaces, resume)

    tuned = best_configurations(cfg, tcfg, trials, log)
    update_manifest(run_dir, tuned=tuned, search_finished=datetime.now().isoformat(timespec="seconds"))
    confirm(ctx, tcfg, tuned, spaces, log)
    ctx.accelerator.end_trackers()
    wall = finish_run(run_dir, t0)
    if report:
        from sendit.report import report_run  # matplotlib and pandas only when a report is written

        report_run(run_dir, log)
    log(f"results: {run_dir.resolve()}  ({wall:.0f} s)")
    return run_dir


def budget_text(ctx: Context, tcfg: TuneConfig) -> str:
    """The budget every method gets, printed before any trial runs."""
    cfg, sizes = ctx.cfg, ctx.splits.summary()["split_sizes"]
    cap = (f" (a safety net of {tcfg.time_cap_minutes:g} min of trial time; a method it stops is flagged)"
           if tcfg.time_cap_minutes else "")
    pruner = {"median": f"median pruner after each epoch (from trial {tcfg.prune_after_trials} on)",
              "halving": "successive halving after each epoch", "none": "no pruning"}[tcfg.pruner]
    return (f"budget per method: {tcfg.trials} trials{cap}; each trial up to {cfg.train.epochs} epochs on the same "
            f"{sizes.get('train')} training rows (training seed {tcfg.trial_seed_for(cfg.seed_list())}, apart from "
            f"the confirmation seeds), scored on validation macro-F1 "
            f"({sizes.get('val')} rows); {pruner}; TPE seed {tcfg.search_seed}. The test sets are untouched until "
            f"the best configurations are retrained with seeds {', '.join(map(str, cfg.seed_list()))}. "
            f"Methods: {', '.join(cfg.method.methods)}.")


def best_configurations(cfg: RunConfig, tcfg: TuneConfig, trials: pd.DataFrame, log: Callable[[str], None]) -> dict:
    """Per method: the finished trial with the best validation F1 (earliest on a tie) and its parameters; a method
    whose search the time cap stopped before its trial budget is flagged `cut_short`."""
    tuned = {}
    for name in cfg.method.methods:
        mine = trials[trials["method"] == name]
        done = mine[mine["state"] == "complete"].sort_values(["objective", "trial"], ascending=[False, True])
        if done.empty:
            log(f"{name}: no trial finished, so there is no tuned configuration to confirm")
            continue
        best = done.iloc[0]
        params = json.loads(best["params"])
        lr = method_lr(apply_params(cfg, name, params), name)
        used = int((~mine["note"].fillna("").astype(str).str.split(":").str[0].isin(NOT_COUNTED)).sum())
        capped = mine["note"].fillna("").astype(str).str.startswith("time cap").any()
        tuned[name] = {"trial": int(best["trial"]), "val_f1": float(best["objective"]), "params": params, "lr": lr,
                       "default_lr": method_lr(cfg, name), "trials": used,
                       "cut_short": (f"time cap after {used} of {tcfg.trials} trials"
                                     if used < tcfg.trials or capped else None)}
        log(f"{name}: best trial {tuned[name]['trial']}, validation F1 {best['objective']:.4f}, lr {lr:.3g} "
            f"(default {tuned[name]['default_lr']:.3g})" + (f"; CUT SHORT: {tuned[name]['cut_short']}"
                                                            if tuned[name]["cut_short"] else ""))
    return tuned


def confirm(ctx: Context, tcfg: TuneConfig, tuned: dict, spaces: dict, log: Callable[[str], None]) -> None:
    """Retrain each method's best configuration (and, with --defaults, its default one) with every seed on the
    training split; test on the held-out split and the hand-labelled file; the CSV files of `sendit run`. Trained
    as the trials were (head-only on features when they were); a default arm whose configuration is the tuned one
    reuses the tuned runs instead of retraining them."""
    arms = [(name, name, apply_params(ctx.cfg, name, t["params"])) for name, t in tuned.items()]
    if tcfg.defaults:
        arms += [(name, f"{name}-default", ctx.cfg) for name in tuned]
    features: dict | None = {} if tcfg.head_features else None

    def confirm_one(name: str, label: str, cfg: RunConfig, seed: int) -> None:
        same = label != name and tuned[name]["params"] == default_params(ctx.cfg, name, spaces[name])
        done = read_manifest(ctx.run_dir).get("status", {})  # run_jobs records each job as it finishes
        if same and done.get(f"{name}/seed{seed}") == "done":  # the tuned arm of this seed ran before this one
            reuse_runs(ctx.run_dir, name, label, seed)
            log(f"{label}/seed{seed}: the tuned configuration is the default one: {name}/seed{seed} reused, not "
                f"retrained")
            return
        extra = {"tuned_trial": tuned[name]["trial"] if label == name else None, "load_avg_1m_before":
                 os.getloadavg()[0], "torch_threads": torch.get_num_threads()}
        train_method(_with_config(ctx, cfg), name, seed, label=label, extra_results=extra, features=features)

    jobs = [Job(f"{label}/seed{seed}", lambda a=(name, label, cfg, seed): confirm_one(*a))
            for seed in ctx.cfg.seed_list() for name, label, cfg in arms]
    run_jobs(ctx.run_dir, jobs, log)


def reuse_runs(run_dir: Path, name: str, label: str, seed: int) -> None:
    """`label`'s rows of one seed are `name`'s (the same configuration, trained once), marked `same_as`."""
    for template in (RESULTS, EPOCH_LOGS, INFERENCE_SUMMARY, PREDICTIONS):
        rows = pd.read_csv(run_dir / template.format(method=name), keep_default_na=False, na_values=[""])
        rows = rows[rows["seed"] == seed].assign(method=label, same_as=name)
        append_rows(run_dir, template, label, rows.to_dict("records"), replace_seed=seed)


def _with_config(ctx: Context, cfg: RunConfig) -> Context:
    """The run's context (data, tokenizer, processes) with one method's tuned settings."""
    view = copy.copy(ctx)
    view.cfg = cfg
    return view


def _resumed(run_dir: Path) -> tuple[RunConfig, TuneConfig]:
    """On --resume the sweep's own settings win: it must finish as it started."""
    m = read_manifest(run_dir)
    if "tune" not in m or "config" not in m:
        raise ConfigError(f"--resume {run_dir}: its {RUN_MANIFEST} holds no tune settings, so it is not a sweep "
                          f"folder; continue a `sendit run` folder with sendit run --resume.")
    return resumed_config(run_dir), tune_config(m["tune"])


# ------------------------------------------------------------------------------------------------ CLI
def tune_settings(config: str | None, overrides: dict, tune_flags: dict, resume: str | None
                  ) -> tuple[RunConfig, TuneConfig]:
    """`sendit tune`'s settings: --config < flags, or the sweep's own on --resume (which ignores the others)."""
    from sendit.config.schema import resolve_config_path
    from sendit.config.tune import load_tune_config

    if resume:
        return _resumed(Path(resume))
    return load_tune_config(resolve_config_path(config) if config else None, overrides, tune_flags)
