"""`sendit tune --backend ray`: the same search through Ray Tune, on a local Ray instance or a cluster
(`--address auto` joins the running one). Optuna's TPE still proposes (Ray's OptunaSearch, with the same seed
and search space), ASHA stops bad trials after an epoch, and each trial is the same `train_trial` in the one
engine, scored on validation only. `trials.csv` has the Optuna backend's columns. Needs `sendit[ray]`.

Every node reads the data itself: `embedded` and hub data work anywhere, a file path must exist on every node.
"""

from __future__ import annotations

import os
import re
from datetime import datetime
from pathlib import Path

import pandas as pd
import torch

from sendit.config.schema import from_dict
from sendit.config.tune import TuneConfig
from sendit.errors import ConfigError
from sendit.recipes.tune.trials import TRIAL_COLUMNS, TrialFailed, default_params, train_trial, trial_row
from sendit.run.context import Context
from sendit.run.folder import RAY, TRIALS, atomic_write_csv

# The key of the extra report a trial makes when it trained to its end (its last epoch or early stopping): Ray
# sets done=True also of a trial its scheduler stopped, so only this report tells the two apart.
FINISHED = "sendit_finished"


def check_ray(tcfg: TuneConfig) -> None:
    try:
        import ray.tune  # noqa: F401
        from ray.tune.search.optuna import OptunaSearch  # noqa: F401
    except ModuleNotFoundError:
        raise ConfigError("--backend ray needs Ray Tune; install it with pip install 'sendit[ray]', or use the "
                          "default --backend optuna.") from None


def search_ray(ctx: Context, tcfg: TuneConfig, spaces: dict[str, dict], resume: bool) -> pd.DataFrame:
    """One Ray Tune experiment per method (in RUN_DIR/ray); returns and writes trials.csv. On --resume the
    methods already in trials.csv are not searched again."""
    import ray
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
    from ray.tune.search.optuna import OptunaSearch

    path = ctx.run_dir / TRIALS
    frames = [pd.read_csv(path)] if resume and path.exists() else []
    searched = set(frames[0]["method"]) if frames else set()
    cpus = max(1, (ctx.cfg.train.threads or torch.get_num_threads()) // tcfg.workers)
    started_here = not ray.is_initialized()
    if started_here:
        ray.init(address=tcfg.address, include_dashboard=False, log_to_driver=False)
    try:
        for name in ctx.cfg.method.methods:
            if name in searched:
                ctx.log(f"{name}: already searched, kept")
                continue
            points = [default_params(ctx.cfg, name, spaces[name])] if tcfg.start_from_defaults else None
            epochs = ctx.cfg.train.epochs
            scheduler = FIFOScheduler() if tcfg.pruner == "none" else ASHAScheduler(
                time_attr="epoch", metric="val_f1", mode="max", max_t=epochs, grace_period=1, reduction_factor=3)
            trainable = tune.with_parameters(_trial, name=name, cfg=ctx.cfg.to_dict(), run_dir=str(ctx.run_dir),
                                             seed=tcfg.trial_seed_for(ctx.cfg.seed_list()),
                                             threads=cpus, head_features=tcfg.head_features)
            tuner = tune.Tuner(
                tune.with_resources(trainable, {"cpu": cpus}),
                param_space={k: _dimension(tune, spec) for k, spec in spaces[name].items()},
                tune_config=tune.TuneConfig(
                    search_alg=OptunaSearch(metric="val_f1", mode="max", seed=tcfg.search_seed,
                                            points_to_evaluate=points),
                    scheduler=scheduler, num_samples=tcfg.trials, time_budget_s=tcfg.budget_seconds,
                    max_concurrent_trials=tcfg.workers),
                run_config=tune.RunConfig(storage_path=str((ctx.run_dir / RAY).resolve()), name=name, verbose=0),
            )
            frames.append(trial_rows(name, list(tuner.fit())))
            atomic_write_csv(pd.concat(frames, ignore_index=True)[TRIAL_COLUMNS], path)
            ctx.log(f"{name}: {len(frames[-1])} trials through Ray Tune")
    finally:
        if started_here:
            ray.shutdown()
    return pd.concat(frames, ignore_index=True)[TRIAL_COLUMNS] if frames else pd.DataFrame(columns=TRIAL_COLUMNS)


def _dimension(tune, spec: dict):
    if "choices" in spec:
        return tune.choice(list(spec["choices"]))
    low, high = float(spec["low"]), float(spec["high"])
    return tune.loguniform(low, high) if spec.get("log") else tune.uniform(low, high)


def _trial(config: dict, name: str, cfg: dict, run_dir: str, threads: int, seed: int,
           head_features: bool = True) -> None:
    """One Ray trial: the run's data and model in this worker process, then `train_trial`, reporting each epoch
    (ASHA may stop the trial at a report). A Ray trial is its own process, so head-only features are computed
    once per trial (not per epoch)."""
    from ray import tune

    torch.set_num_threads(threads)
    run_cfg = from_dict({**cfg, "train": {**cfg["train"], "threads": threads, "tracker": None}})
    ctx = Context.build(run_cfg, Path(run_dir), log=lambda s: None)
    attrs: dict = {"worker": f"{os.uname().nodename}:{os.getpid()}"}

    last: dict = {}  # the latest report
    epochs = int(config.get("epochs", run_cfg.train.epochs))

    def on_epoch(epoch: int, row: dict) -> None:
        last.update({
            "epoch": epoch, "val_f1": row["val_f1"], "val_accuracy": row["val_accuracy"],
            "time_sec": attrs["time_sec"], "trainable_params": attrs["trainable_params"], "lr": attrs["lr"],
            "peak_memory_mb": attrs["peak_memory_mb"],  # over the baseline train_trial took before the model
            "load_avg_1m": os.getloadavg()[0], "cores": os.cpu_count(), "worker": attrs["worker"],
        })
        # the last planned epoch is the end (ASHA stops a trial at max_t, so no report after it would arrive)
        tune.report({**last, FINISHED: True} if epoch >= epochs else dict(last))

    try:
        train_trial(ctx, name, dict(config), seed, attrs, on_epoch, lambda s: None,
                    f"{name} trial", features={} if head_features else None)
    except TrialFailed as e:  # Ray records it as an errored trial; trials.csv says failed, with the reason
        raise RuntimeError(str(e)) from None
    if last and last["epoch"] < epochs:  # stopped early by its own patience: say so in one more report
        tune.report({**last, FINISHED: True})


def trial_rows(method: str, results: list) -> pd.DataFrame:
    """trials.csv rows from Ray results, numbered in creation order: complete (the trainable returned and made its
    FINISHED report), pruned (stopped by the scheduler) or failed (it raised)."""
    rows = []
    for r in results:
        df = r.metrics_dataframe if r.metrics_dataframe is not None else pd.DataFrame()
        ended = df[FINISHED].fillna(False).astype(bool) if FINISHED in df else pd.Series(False, index=df.index)
        finished = bool(ended.any())
        df = df.drop_duplicates("epoch") if "epoch" in df else df  # an extra FINISHED report repeats its epoch
        f1s = df["val_f1"].tolist() if "val_f1" in df else []
        accs = df["val_accuracy"].tolist() if "val_accuracy" in df else []
        last = df.iloc[-1].to_dict() if len(df) else {}
        state = "failed" if r.error else "complete" if finished else "pruned"
        start = df["timestamp"].min() if "timestamp" in df and len(df) else None  # None: failed before a report
        tag = re.search(r"_[0-9a-f]{8}_(\d+)(?:_|$)", Path(r.path).name) if r.path else None
        rows.append({"order": int(tag.group(1)) if tag else len(rows) + 10**6, **trial_row(
            method, state, None if state == "failed" or not f1s else max(f1s) if state == "complete" else f1s[-1],
            f1s, accs, r.config, last,
            datetime.fromtimestamp(start).isoformat(timespec="seconds") if start is not None else None,
            f"failed: {' '.join(str(r.error).split())[:300]}" if r.error else
            "" if state == "complete" else f"stopped by ASHA after epoch {len(f1s)}")})
    if not rows:
        return pd.DataFrame(columns=TRIAL_COLUMNS)
    # Ray numbers trials in the order the search algorithm created them, in each trial's folder name
    # (`_trial_<id>_<number>_lr=...`); reports may arrive in another order when trials run side by side.
    out = pd.DataFrame(rows).sort_values("order", kind="stable").reset_index(drop=True)
    out.insert(1, "trial", range(len(out)))
    return out[TRIAL_COLUMNS]
