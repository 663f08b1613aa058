"""The workflows behind the CLI, each readable top to bottom: `run` (compare methods), `train_method` (one method,
one seed: fit -> save -> test). `sendit evaluate` (saved models on any labelled file) is sendit.evaluate."""

from __future__ import annotations

import importlib.util
import os
import shutil
import time
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Callable

import torch
from accelerate.utils import set_seed
from transformers import PreTrainedTokenizerBase

from sendit.config import EMBEDDED_TEST_NAME, HELDOUT_NAME, ConfigError, RunConfig, test_set_name, validate_for_model
from sendit.data import Splits, Table, load_splits
from sendit.batching import Encoded, encode
from sendit.engine import LossFn, TrainingError, fit, predict, training_loss
from sendit.measure import count_parameters, hardware, resident_mb
from sendit.methods import get_method, learning_rate, method_info
from sendit.metrics import classification_metrics
from sendit.models import ModelError, _why, autoconfig, check_model, load_model, load_tokenizer, resolve
from sendit.run_folder import (
    EPOCH_LOGS, INFERENCE_SUMMARY, LOCK, PREDICTIONS, RESULTS, append_rows, clear_run_folder, holder_of,
    is_run_folder, metrics_row, prediction_rows, read_manifest, start_manifest, update_manifest, writing,
)
from sendit.device import Processes, resolve_precision
from sendit.model_folder import save_model_folder
from sendit.verbosity import quiet_libraries, say


def check_run_dir(out: str | None, resume: bool = False, overwrite: bool = False,
                  sources: dict[str, str | None] | None = None) -> Path:
    """The run folder for --out (or --resume), checked and left untouched. `--overwrite` may replace only a folder
    whose run.json sendit wrote, and never one that holds a source of the run (`sources`: flag -> path) or the
    working directory."""
    run_dir = Path(out or f"runs/{datetime.now():%Y%m%d-%H%M%S}")
    if run_dir.exists() and not run_dir.is_dir():
        raise ConfigError(f"--out '{run_dir}' is a file; the run folder must be a folder. Pass another --out.")
    existing = next(p for p in [run_dir, *run_dir.parents] if p.exists() or p == Path(p.anchor or "."))
    if not existing.is_dir():
        raise ConfigError(f"--out '{run_dir}' cannot be made: '{existing}' is a file (Not a directory). Pass "
                          f"another --out.")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"--out '{run_dir}': no permission to write in '{existing}'. Pass another --out.")
    if resume:
        if not (run_dir / "run.json").exists():
            raise ConfigError(f"--resume {run_dir}: no run.json there, so there is nothing to resume.")
        if not is_run_folder(run_dir):
            raise ConfigError(f"--resume {run_dir}: its run.json was not written by sendit, so there is nothing to "
                              f"resume.")
        return run_dir
    if not run_dir.exists() or not [e for e in run_dir.iterdir() if e.name != LOCK]:
        return run_dir
    if not (run_dir / "run.json").exists():  # --overwrite deletes run folders only, never `--out .` or ~
        raise ConfigError(f"'{run_dir}' already exists, is not empty and is not a sendit run folder (no "
                          f"run.json), so it is left alone. Pass another --out.")
    if not is_run_folder(run_dir):
        raise ConfigError(f"'{run_dir}' holds a run.json that sendit did not write (or a damaged one), so it is not a "
                          f"sendit run folder and is left alone, even with --overwrite. Pass another --out.")
    if not overwrite:
        raise ConfigError(f"run folder '{run_dir}' already exists and is not empty. Pass --overwrite to replace "
                          f"it, --resume {run_dir} to continue it, or another --out.")
    held = holder_of(run_dir, {**(sources or {}), "the working directory": Path.cwd()})
    if held:
        raise ConfigError(f"--overwrite would delete '{run_dir}', which holds {held}; it is left alone. Pass "
                          f"another --out.")
    return run_dir


def prepare_run_dir(out: str | None, resume: bool = False, overwrite: bool = False,
                    sources: dict[str, str | None] | None = None) -> Path:
    """check_run_dir, then an empty (or resumed) run folder; for callers that take no lock (scripts)."""
    run_dir = check_run_dir(out, resume, overwrite, sources)
    if run_dir.exists() and not resume:
        clear_run_folder(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    return run_dir


def run_sources(cfg: RunConfig) -> dict[str, str | None]:
    """The files and folders a run reads, by flag: a folder that holds one is never deleted."""
    return {"--data": cfg.data.data, "--test-file": cfg.data.test_file, "--extra-train-file": cfg.data.extra_train_file,
            "--model": cfg.model.model}


def model_folder_name(method: str, seed: int, first_seed: int) -> str:
    return method if seed == first_seed else f"{method}-seed{seed}"


def check_label(label: str) -> str:
    """A method label names files and folders inside the run folder, so it must be one plain path component."""
    if not label or label != Path(label).name or "\\" in label or label.startswith(".") or label in (".", ".."):
        raise ConfigError(f"method label {label!r} cannot name a folder inside the run folder (no path separators, "
                          f"no leading '.'); use letters, digits, '-', '_' and '.'.")
    return label


@dataclass
class Context:
    """What every method of a run shares: data (tokenised once), tokenizer, processes, run folder (see build)."""

    cfg: RunConfig
    run_dir: Path
    log: Callable[[str], None]
    accelerator: Processes
    precision: str  # the run's precision for its inference passes (training resolves it from cfg.train.precision)
    tokenizer: PreTrainedTokenizerBase
    splits: Splits
    encoded: dict[str, Encoded]  # "train" and "val"
    # The hand-labelled file first (the study's test set: row 0 of every summary), each named by config.test_set_name.
    test_sets: dict[str, Table]
    encoded_tests: dict[str, Encoded]

    @classmethod
    def build(cls, cfg: RunConfig, run_dir: Path, log: Callable[[str], None] = say,
              splits: Splits | None = None) -> Context:
        """Set up a run: threads, processes and trackers, the tokenizer, the data split (read unless given) and
        its tokenised train/val/test sets."""
        check_tracker(cfg.train.tracker)  # distill and tune come here without run()'s earlier checks
        if cfg.train.threads:
            torch.set_num_threads(cfg.train.threads)
        accelerator = Processes(cfg.train.tracker, str(run_dir))
        accelerator.start_trackers(cfg.to_dict())
        precision = resolve_precision(cfg.train.precision, accelerator.device)
        tokenizer = load_tokenizer(cfg.model.model, cfg.model.trust_remote_code)
        splits = splits or load_data(cfg)
        test_sets: dict[str, Table] = {}
        if splits.manual is not None:
            test_sets[test_set_name(cfg.data) or EMBEDDED_TEST_NAME] = splits.manual
        test_sets[HELDOUT_NAME] = splits.test

        def enc(table: Table) -> Encoded:
            return encode(tokenizer, table.texts, table.labels, cfg.data.max_length)

        return cls(cfg, run_dir, log, accelerator, precision, tokenizer, splits,
                   {"train": enc(splits.train), "val": enc(splits.val)}, test_sets,
                   {k: enc(t) for k, t in test_sets.items()})

    def main(self) -> bool:
        return self.accelerator.is_main_process


def load_data(cfg: RunConfig) -> Splits:
    """The run's data split, with the checks that need it."""
    splits = load_splits(cfg.data)
    if cfg.train.batch_size > len(splits.train):
        raise ConfigError(f"--batch-size {cfg.train.batch_size} is larger than the {len(splits.train)} "
                          f"training rows; lower --batch-size or raise --train-size.")
    return splits


# The package each --tracker imports (accelerate's TensorBoardTracker, MLflowTracker and WandBTracker).
TRACKER_MODULES = {"tensorboard": "tensorboard", "mlflow": "mlflow", "wandb": "wandb"}


def check_tracker(tracker: str | None) -> None:
    """--tracker needs its package: without it accelerate only warns and the run tracks nothing."""
    if tracker and importlib.util.find_spec(TRACKER_MODULES[tracker]) is None:
        raise ConfigError(f"--tracker {tracker} needs the {TRACKER_MODULES[tracker]} package, which is not installed. "
                          f"Install it with pip install 'sendit[tracking]' (tensorboard, mlflow, wandb), or leave out "
                          f"--tracker.")


# What save_pretrained writes (one file, or the index of a sharded checkpoint).
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")


def check_against_model(cfg: RunConfig) -> None:
    """The options that depend on the model (--max-length, --target-modules, --lora-r), from its config alone: a
    model built on the meta device has every module name and no weights, so this takes a fraction of a second."""
    from transformers import AutoModelForSequenceClassification

    folder = Path(resolve(cfg.model.model))
    if folder.is_dir() and not any((folder / name).exists() for name in WEIGHT_FILES):
        raise ModelError(f"model folder '{cfg.model.model}' has no weights (none of {', '.join(WEIGHT_FILES)}). Pass "
                         f"a folder written by save_pretrained, a hub id such as facebook/opt-125m, or 'embedded'.")
    # transformers builds an empty tokenizer for a folder without tokenizer files; training then fails mid-epoch.
    tokenizer = load_tokenizer(cfg.model.model, cfg.model.trust_remote_code)
    if not tokenizer("a good day", add_special_tokens=False)["input_ids"]:
        raise ModelError(f"model '{cfg.model.model}' has no usable tokenizer (its vocabulary has {len(tokenizer)} "
                         f"tokens: tokenizer.json or vocab files missing?). Save the tokenizer into the model folder "
                         f"(tokenizer.save_pretrained), or pass a complete model folder, a hub id, or 'embedded'.")
    try:
        config = autoconfig(cfg.model.model, cfg.model.trust_remote_code)
        names = None
        if getattr(cfg.method, "target_modules", None):
            with torch.device("meta"):
                model = AutoModelForSequenceClassification.from_config(
                    config, trust_remote_code=cfg.model.trust_remote_code)
            names = [n for n, module in model.named_modules() if n and not any(module.children())]
    except (OSError, ValueError) as e:
        raise ModelError(f"could not load model '{cfg.model.model}': " + _why(e, "Pass a folder written by "
                         "save_pretrained, a hub id such as facebook/opt-125m, or 'embedded'.")) from None
    validate_for_model(cfg, config, names)


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


def train_method(
    ctx: Context,
    name: str,
    seed: int,
    model_factory: Callable[[], torch.nn.Module] | None = None,
    loss_fn: LossFn | None = None,
    label: str | None = None,
    extra_results: dict | None = None,
    base_model: str | None = None,
    features: dict | None = None,
) -> dict:
    """One method, one seed: prepare -> fit (with `loss_fn`, else `engine.training_loss`) -> save -> test, then the
    four CSV files. Returns the results row.
    `features` (a cache, from `sendit tune`): a head-only method trains on the frozen model's features, as its
    trials did (features.py); the head trained is the model's own, so saving and testing are unchanged."""
    label, method = check_label(label or name), get_method(name)
    cfg, acc, classes = ctx.cfg, ctx.accelerator, ctx.splits.classes
    loss_fn = loss_fn or training_loss(cfg.data.class_balance, ctx.splits.train.labels, len(classes))
    set_seed(seed)
    baseline_mb = resident_mb(acc.device)  # what earlier work holds: not this training's memory
    base = model_factory() if model_factory else load_model(
        cfg.model.model, ctx.tokenizer, cfg.model.trust_remote_code, announce=True, classes=classes)
    with quiet_libraries():  # peft's FutureWarnings about transformers internals
        model = method.prepare(base, cfg.method).to(acc.device)
    params = count_parameters(model)
    lr = learning_rate(name, cfg.train.lr, cfg.method.method_lr)
    ctx.log(f"{label} (seed {seed}): {params['trainable_params']:,} of {params['total_params']:,} parameters "
            f"train ({params['trainable_pct']:.3f}%), lr {lr:g}")
    checkpoint = ctx.run_dir / ".checkpoints" / f"{label}-seed{seed}"
    folder = ctx.run_dir / model_folder_name(label, seed, cfg.seed_list()[0])
    info = {"max_length": cfg.data.max_length, "normalize": cfg.data.normalize, "seed": seed, "lr": lr,
            "labels": list(classes), "method_config": vars(cfg.method), **(extra_results or {})}
    trained, feature_sec, t0 = model, 0.0, time.perf_counter()
    if features is not None and getattr(method, "frozen_features", False):
        from sendit.features import feature_model

        trained = feature_model(model, [ctx.encoded["train"], ctx.encoded["val"]], ctx.precision, features,
                                key=(cfg.model.model, seed, ctx.precision)) or model
        feature_sec = time.perf_counter() - t0
    try:
        result = fit(trained, ctx.encoded["train"], ctx.encoded["val"], cfg.train, lr, acc, seed, loss_fn=loss_fn,
                     checkpoint_dir=checkpoint, log=ctx.log, desc=label)
        result.runtime_sec += feature_sec  # the features are part of what this training cost
    except TrainingError as e:
        if e.result is None or not ctx.main():
            raise
        # The model holds its best epoch's weights: keep them and the epochs that did run, then report.
        save_model_folder(acc.unwrap(model), ctx.tokenizer, folder, name, base_model or cfg.model.model,
                          {**info, "best_epoch": e.result.best_epoch, "failed": str(e)})
        logs = [{**h, "method": label, "seed": seed} for h in e.result.history]
        append_rows(ctx.run_dir, EPOCH_LOGS, label, logs, replace_seed=seed)
        raise TrainingError(f"{e} Saved in {folder}.", e.result) from None
    acc.wait_for_everyone()
    model = acc.unwrap(model)
    saved_mb = save_model_folder(model, ctx.tokenizer, folder, name, base_model or cfg.model.model, info) if ctx.main() else 0.0
    inference_model = method.merge(model)
    inference_model.eval()
    merged_params = sum(p.numel() for p in inference_model.parameters())
    summary_rows, predicted = [], []
    for test_name, enc in ctx.encoded_tests.items():
        p = predict(inference_model, enc, acc, cfg.train.eval_batch_size, precision=ctx.precision,
                    desc=f"{label} on {test_name}")
        m = classification_metrics(enc.labels, p.preds, len(classes))
        summary_rows.append(metrics_row(m, p.seconds, p.tweets_per_sec, label, seed, test_name,
                                        params=merged_params, model_size_mb=merged_params * 4 / 2**20))
        predicted += prediction_rows(ctx.test_sets[test_name].texts, enc.labels, p.preds, p.probs, label,
                                     seed, test_name, classes)
        ctx.log(f"{label} (seed {seed}) on {test_name} ({m['n']} tweets): accuracy {m['accuracy']:.4f}  "
                f"F1 {m['f1_macro']:.4f}  ({p.tweets_per_sec:.0f} tweets/s)")
    row = {
        "best_val_f1": result.best_val_f1, "val_accuracy": result.best_val_accuracy,
        "runtime_sec": result.runtime_sec, "memory_delta_mb": result.memory_delta_mb, "method": label,
        "model": base_model or cfg.model.model, "seed": seed, "best_epoch": result.best_epoch,
        "epochs_run": result.epochs_run, "peak_memory_mb": max(result.peak_memory_mb - baseline_mb, 0.0),
        "process_peak_memory_mb": result.peak_memory_mb, **params,
        "saved_size_mb": saved_mb, "lr": lr, "train_tweets_per_sec": result.tweets_per_sec,
        "train_tokens_per_sec": result.tokens_per_sec, "stopped": result.stopped, **(extra_results or {}),
    }
    if ctx.main():
        logs = [{**h, "method": label, "seed": seed} for h in result.history]
        append_rows(ctx.run_dir, EPOCH_LOGS, label, logs, replace_seed=seed)
        append_rows(ctx.run_dir, INFERENCE_SUMMARY, label, summary_rows, replace_seed=seed)
        append_rows(ctx.run_dir, PREDICTIONS, label, predicted, replace_seed=seed)
        append_rows(ctx.run_dir, RESULTS, label, [row], replace_seed=seed)
        shutil.rmtree(checkpoint, ignore_errors=True)
    return row


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


def _resumed_config(run_dir: Path, cfg: RunConfig) -> RunConfig:
    """On --resume the run's own config wins: the run must finish as it started."""
    from sendit.config import from_dict

    saved = read_manifest(run_dir).get("config")
    if not saved:
        return cfg
    saved["out"] = str(run_dir)
    return from_dict(saved, source=str(run_dir / "run.json"))


def run_hardware(ctx: Context) -> dict:
    """The machine, the number of processes and the precision of the run's inference passes."""
    h = hardware(ctx.accelerator.device)
    h.update(processes=ctx.accelerator.num_processes, precision=ctx.precision)
    return h


def _print_dropped(ctx: Context, log: Callable[[str], None]) -> None:
    dropped = {k: c for k, v in ctx.splits.dropped.items() if (c := {reason: n for reason, n in v.items() if n})}
    if dropped:
        log("rows dropped (also in run.json): " + "; ".join(
            f"{src}: " + ", ".join(f"{n} {reason}" for reason, n in counts.items()) for src, counts in dropped.items()))
