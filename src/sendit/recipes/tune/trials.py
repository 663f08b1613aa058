"""One `sendit tune` trial and what is kept of it: search spaces, the trial itself (a real training in the one
engine, scored on validation only), Optuna storage, and `trials.csv`.

A search space maps a parameter to {"low", "high", "log"} (a float range) or {"choices": [...]}. A parameter is
"lr" (the method's learning rate) or any train/method config field (warmup_ratio, weight_decay, lora_r, ...);
`target_modules` takes "attention" (the architecture's attention projections) or comma-separated module names.
"""

from __future__ import annotations

import copy
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import optuna
import pandas as pd
import torch
from optuna.trial import TrialState

from sendit.config.schema import RunConfig, TrainConfig, from_dict, method_config
from sendit.errors import ConfigError, TrainingError
from sendit.methods import get_method, learning_rate
from sendit.run.folder import STUDY_JOURNAL, TRIALS, atomic_write_csv
from sendit.train.engine import fit, training_loss
from sendit.train.features import feature_model
from sendit.train.measure import PeakMemory, count_parameters, resident_mb
from sendit.train.models import load_model

TRIAL_COLUMNS = [
    "method", "trial", "state", "objective", "best_val_accuracy", "best_val_f1", "best_epoch", "epochs_run",
    "val_accuracy_by_epoch", "val_f1_by_epoch", "lr", "params", "trainable_params", "time_sec", "peak_memory_mb",
    "load_avg_1m", "cores", "worker", "started", "note",
]
STATES = {TrialState.COMPLETE: "complete", TrialState.PRUNED: "pruned", TrialState.FAIL: "failed",
          TrialState.RUNNING: "running", TrialState.WAITING: "waiting"}
# Trials that count against a method's budget are all but these two kinds of FAIL: a trial whose process was
# killed (it is re-proposed on --resume) and one created after a parallel worker used up the budget.
NOT_COUNTED = ("interrupted", "over budget")


def method_space(name: str, overrides: dict | None = None) -> dict[str, dict]:
    """The method's own search space with a config's overrides merged in (a parameter set to None is not
    searched: it keeps the config's value)."""
    space = {k: dict(v) for k, v in get_method(name).search_space.items()}
    for key, spec in (overrides or {}).items():
        if spec is None:
            space.pop(key, None)
        else:
            space[key] = dict(spec)
    check_space(name, space)
    return space


def check_space(name: str, space: dict) -> None:
    for key, spec in space.items():
        where = f"tune.space.{name}.{key}"
        settings = [*TrainConfig.__dataclass_fields__, *method_config().__dataclass_fields__]
        if key != "lr" and key not in settings:
            raise ConfigError(f"{where}: '{key}' is neither lr nor a train/method setting, so a trial could not "
                              f"use it. Use lr or one of: {', '.join(k for k in settings if k != 'methods')}.")
        if not isinstance(spec, dict) or not ({"choices"} == set(spec) or {"low", "high"} <= set(spec) <=
                                              {"low", "high", "log"}):
            raise ConfigError(f"{where} must be {{low: A, high: B}} (add log: true for a log scale) or "
                              f"{{choices: [...]}}; got {spec!r}")
        if "choices" in spec and not spec["choices"]:
            raise ConfigError(f"{where}: choices is empty; list at least one value")
        if "low" in spec:
            try:
                low, high = float(spec["low"]), float(spec["high"])
            except (TypeError, ValueError):
                raise ConfigError(f"{where}: low and high must be numbers (got {spec!r})") from None
            if not low <= high or (spec.get("log") and low <= 0):
                raise ConfigError(f"{where}: needs low <= high (and low > 0 on a log scale); got {spec!r}")


def check_space_values(cfg: RunConfig, name: str, space: dict[str, dict]) -> None:
    """Every choice and both ends of every range make a valid config, so no trial fails on a bad value."""
    for key, spec in space.items():
        for value in spec.get("choices") or (spec["low"], spec["high"]):
            try:
                apply_params(cfg, name, {key: value})
            except ConfigError as e:
                raise ConfigError(f"tune.space.{name}.{key}: the value {value!r} is not a valid setting: {e}") from None


def suggest(trial: optuna.Trial, space: dict[str, dict]) -> dict:
    params = {}
    for key, spec in space.items():
        if "choices" in spec:
            params[key] = trial.suggest_categorical(key, list(spec["choices"]))
        else:
            params[key] = trial.suggest_float(key, float(spec["low"]), float(spec["high"]), log=bool(spec.get("log")))
    return params


def default_params(cfg: RunConfig, name: str, space: dict[str, dict]) -> dict:
    """The configuration a plain `sendit run` would train, as a point of the space (the parameters it fits)."""
    out = {}
    for key, spec in space.items():
        if key == "lr":
            value = method_lr(cfg, name)
        elif key == "target_modules":
            value = ",".join(cfg.method.target_modules) if cfg.method.target_modules else "attention"
        else:
            value = getattr(cfg.train if key in TrainConfig.__dataclass_fields__ else cfg.method, key)
        fits = value in spec["choices"] if "choices" in spec else float(spec["low"]) <= value <= float(spec["high"])
        if fits:
            out[key] = value
    return out


def apply_params(cfg: RunConfig, name: str, params: dict) -> RunConfig:
    """`cfg` with a trial's parameters set (validated like any config)."""
    d = copy.deepcopy(cfg.to_dict())
    for key, value in params.items():
        if key == "lr":
            d["train"]["lr"] = None
            d["method"]["method_lr"] = {**d["method"]["method_lr"], name: float(value)}
        elif key == "target_modules":
            d["method"][key] = None if value == "attention" else [m.strip() for m in str(value).split(",")]
        else:
            d["train" if key in TrainConfig.__dataclass_fields__ else "method"][key] = value
    return from_dict(d, source=f"tuned {name} configuration")


def method_lr(cfg: RunConfig, name: str) -> float:
    return learning_rate(name, cfg.train.lr, cfg.method.method_lr)


# ------------------------------------------------------------------------------------------------ one trial
@dataclass
class Budget:
    """What each method gets: `trials` trials (finished, pruned and failed all count) and, when set, `seconds`
    of trial time summed over its trials."""

    trials: int
    seconds: float | None = None


def counted(trials: list[optuna.trial.FrozenTrial]) -> list[optuna.trial.FrozenTrial]:
    return [t for t in trials if t.user_attrs.get("note", "").split(":")[0] not in NOT_COUNTED]


def used_seconds(trials: list[optuna.trial.FrozenTrial]) -> float:
    return sum(t.user_attrs.get("time_sec", 0.0) for t in counted(trials) if t.state != TrialState.RUNNING)


def is_oom(e: BaseException) -> bool:
    if isinstance(e, MemoryError) or type(e).__name__ == "OutOfMemoryError":
        return True
    return isinstance(e, RuntimeError) and ("out of memory" in str(e) or "can't allocate memory" in str(e))


def train_trial(ctx, name: str, params: dict, seed: int, attrs: dict, on_epoch: Callable[[int, dict], None],
                log: Callable[[str], None], desc: str, features: dict | None = None) -> float:
    """Train one configuration on the training split and return its best validation macro-F1. Only
    `ctx.encoded["train"]` and `ctx.encoded["val"]` are read: the test sets play no part in the search.

    `features` (a dict kept across trials; None: off) lets a method that trains only the head (`frozen_features`)
    train on the frozen model's features, computed on its first trial (sendit/features.py).

    `attrs` collects what trials.csv records, also when `on_epoch` stops the trial (its exception passes
    through) or training fails (TrialFailed)."""
    cfg = apply_params(ctx.cfg, name, params)
    lr = method_lr(cfg, name)
    attrs.update(val_accuracy_by_epoch=[], val_f1_by_epoch=[], pid=os.getpid(), lr=lr)
    t0 = time.perf_counter()

    def record(epoch: int, row: dict) -> None:
        attrs["val_accuracy_by_epoch"].append(row["val_accuracy"])
        attrs["val_f1_by_epoch"].append(row["val_f1"])
        attrs["time_sec"] = time.perf_counter() - t0
        attrs["peak_memory_mb"] = max(mem.peak_mb - baseline_mb, 0.0)  # so far: what a Ray trial reports
        on_epoch(epoch, row)

    torch.manual_seed(seed)
    method, device = get_method(name), ctx.accelerator.device
    baseline_mb = resident_mb(device)  # earlier trials' leftovers are not this trial's memory
    model = method.prepare(load_model(cfg.model.model, ctx.tokenizer, cfg.model.trust_remote_code,
                                      classes=ctx.splits.classes), cfg.method).to(device)
    attrs["trainable_params"] = count_parameters(model)["trainable_params"]
    log(f"{desc}: " + ", ".join(f"{k} {_show(v)}" for k, v in params.items()))
    mem = PeakMemory(device)
    try:
        with mem:  # computing the features is part of the trial that needed them: in its time and memory
            trained = None
            if features is not None and getattr(method, "frozen_features", False):
                trained = feature_model(model, [ctx.encoded["train"], ctx.encoded["val"]], ctx.precision, features,
                                        key=(cfg.model.model, seed, ctx.precision))
            if trained is None:  # no features (off, another method, or a head that reads whole sequences)
                trained = model
            result = fit(trained, ctx.encoded["train"], ctx.encoded["val"], cfg.train, lr, ctx.accelerator, seed,
                         log=lambda s: None, desc=desc, on_epoch=record, precision=ctx.precision, loss_fn=training_loss(
                             cfg.data.class_balance, ctx.splits.train.labels, len(ctx.splits.classes)))
        attrs["best_epoch"] = result.best_epoch
        return result.best_val_f1
    except Exception as e:
        if not (isinstance(e, TrainingError) or is_oom(e)):
            raise
        attrs["note"] = f"failed: {' '.join(str(e).split())[:300]}"
        raise TrialFailed(attrs["note"]) from None
    finally:
        attrs.update(time_sec=time.perf_counter() - t0, peak_memory_mb=max(mem.peak_mb - baseline_mb, 0.0),
                     load_avg_1m=os.getloadavg()[0], cores=os.cpu_count())
        del model


def run_trial(ctx, name: str, trial: optuna.Trial, space: dict, seed: int, budget: Budget, worker: int,
              log: Callable[[str], None], features: dict | None = None) -> float:
    """An Optuna trial: its proposal trained by `train_trial`, reported after each epoch, pruned when the
    pruner says so or the method's time cap is reached; what it did is kept in the trial's user attributes."""
    params = suggest(trial, space)
    epochs = params.get("epochs", ctx.cfg.train.epochs)
    earlier = trial.study.get_trials(deepcopy=False)
    spent_before = used_seconds(earlier)
    # The time cap never stops a method's first finished trial (its default configuration): a slow method on a
    # busy machine would otherwise end its search with nothing to confirm, and drop out of the comparison.
    capped = budget.seconds is not None and any(t.state == TrialState.COMPLETE for t in earlier)
    attrs: dict = {"worker": worker}
    t0 = time.perf_counter()

    def on_epoch(epoch: int, row: dict) -> None:
        trial.report(row["val_f1"], epoch)
        if epoch < epochs and trial.should_prune():
            raise optuna.TrialPruned(f"pruned after epoch {epoch}")
        if capped and epoch < epochs and spent_before + time.perf_counter() - t0 >= budget.seconds:
            raise optuna.TrialPruned(f"time cap reached after epoch {epoch}")

    try:
        return train_trial(ctx, name, params, seed, attrs, on_epoch, log, f"{name} trial {trial.number}", features)
    except optuna.TrialPruned as e:
        attrs["note"] = str(e)
        raise
    finally:
        for k, v in attrs.items():
            trial.set_user_attr(k, v)


class TrialFailed(RuntimeError):
    """A trial that could not train (NaN loss, out of memory): recorded as failed, the sweep goes on."""


def _show(v: object) -> str:
    return f"{v:.3g}" if isinstance(v, float) else str(v)


# ------------------------------------------------------------------------------------------------ storage
def open_storage(url: str | None, run_dir: Path) -> optuna.storages.BaseStorage:
    """The run folder's journal file (safe for many processes on one machine; SQLite is not), or an RDB URL."""
    if url:
        try:
            return optuna.storages.RDBStorage(url)
        except Exception as e:  # a bad URL or an unreachable server: say which flag to fix
            raise ConfigError(f"--storage {url!r} cannot be opened ({type(e).__name__}: {e}). Give an RDB URL "
                              f"such as postgresql://user@host/db, or leave --storage out to use the run "
                              f"folder's journal file.") from None
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    return JournalStorage(JournalFileBackend(str(Path(run_dir) / STUDY_JOURNAL)))


def mark_interrupted(study: optuna.Study) -> int:
    """Trials left running by a killed process are failed with the note 'interrupted' (not counted, so the
    budget proposes them again); returns how many."""
    stale = [t for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))]
    for t in stale:
        study._storage.set_trial_user_attr(t._trial_id, "note", "interrupted: its process was stopped")
        study._storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
    return len(stale)


def trial_row(method: str, state: str, objective: float | None, f1s: list, accs: list, params: dict, attrs: dict,
              started: str | None, note: str) -> dict:
    """One row of trials.csv, for either backend: the epochs' validation scores, the best epoch's, and what the
    trial recorded of itself (`attrs`: lr, trainable_params, time_sec, peak_memory_mb, load_avg_1m, cores,
    worker). `trial` is numbered by the caller."""
    best = max(range(len(f1s)), key=f1s.__getitem__) if f1s else None
    return {
        "method": method, "state": state, "objective": objective,
        "best_val_accuracy": accs[best] if best is not None else None,
        "best_val_f1": f1s[best] if best is not None else None, "best_epoch": best + 1 if best is not None else None,
        "epochs_run": len(f1s), "val_accuracy_by_epoch": json.dumps([round(x, 6) for x in accs]),
        "val_f1_by_epoch": json.dumps([round(x, 6) for x in f1s]), "params": json.dumps(params, sort_keys=True),
        **{k: attrs.get(k) for k in ("lr", "trainable_params", "time_sec", "peak_memory_mb", "load_avg_1m", "cores",
                                     "worker")},
        "started": started, "note": note,
    }


def trials_frame(studies: dict[str, optuna.Study]) -> pd.DataFrame:
    rows = []
    for method, study in studies.items():
        for t in study.get_trials(deepcopy=False):
            a = t.user_attrs
            rows.append({"trial": t.number, **trial_row(
                method, STATES.get(t.state, t.state.name.lower()), t.value, a.get("val_f1_by_epoch", []),
                a.get("val_accuracy_by_epoch", []), t.params, a,
                t.datetime_start.isoformat(timespec="seconds") if t.datetime_start else None, a.get("note", ""))})
    return pd.DataFrame(rows, columns=TRIAL_COLUMNS)


def write_trials(run_dir: Path, studies: dict[str, optuna.Study]) -> Path:
    path = Path(run_dir) / TRIALS
    atomic_write_csv(trials_frame(studies), path)
    return path
