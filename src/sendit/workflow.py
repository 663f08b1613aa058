"""The workflows behind the CLI, each readable top to bottom: `run` (compare methods), `train_method` (one method,
one seed: fit -> save -> test), `evaluate_folder` (a saved model on any labelled file)."""

from __future__ import annotations

import shutil
import time
from datetime import datetime
from pathlib import Path
from typing import Callable

import torch
import yaml
from accelerate import Accelerator
from accelerate.utils import set_seed

from sendit.config import ConfigError, RunConfig
from sendit.data import Splits, Table, load_splits, read_table
from sendit.engine import Encoded, LossFn, TrainingError, cross_entropy, encode, fit, predict
from sendit.measure import count_parameters, hardware
from sendit.methods import get_method
from sendit.metrics import classification_metrics
from sendit.models import check_model, load_model, load_tokenizer
from sendit.outputs import (
    EPOCH_LOGS, INFERENCE_SUMMARY, PREDICTIONS, RESULTS, append_rows, atomic_write_text, git_commit,
    read_manifest, update_manifest, versions,
)
from sendit.predict import load, make_accelerator, save_model_folder


def prepare_run_dir(out: str | None, resume: bool = False, overwrite: bool = False) -> Path:
    run_dir = Path(out or f"runs/{datetime.now():%Y%m%d-%H%M%S}")
    if run_dir.exists() and not run_dir.is_dir():
        raise ConfigError(f"--out '{run_dir}' is a file; the run folder must be a folder. Pass another --out.")
    if resume:
        if not (run_dir / "run.json").exists():
            raise ConfigError(f"--resume {run_dir}: no run.json there, so there is nothing to resume.")
        return run_dir
    if run_dir.exists() and any(run_dir.iterdir()):
        if not (run_dir / "run.json").exists():  # --overwrite deletes run folders only, never `--out .` or ~
            raise ConfigError(f"'{run_dir}' already exists, is not empty and is not a sendit run folder (no "
                              f"run.json), so it is left alone. Pass another --out.")
        if not overwrite:
            raise ConfigError(f"run folder '{run_dir}' already exists and is not empty. Pass --overwrite to replace "
                              f"it, --resume {run_dir} to continue it, or another --out.")
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    return run_dir


def model_folder_name(method: str, seed: int, first_seed: int) -> str:
    return method if seed == first_seed else f"{method}-seed{seed}"


def check_label(label: str) -> str:
    """A method label names files and folders inside the run folder, so it must be one plain path component."""
    if not label or label != Path(label).name or "\\" in label or label.startswith(".") or label in (".", ".."):
        raise ConfigError(f"method label {label!r} cannot name a folder inside the run folder (no path separators, "
                          f"no leading '.'); use letters, digits, '-', '_' and '.'.")
    return label


class Context:
    """What every method of a run shares: data (tokenised once), tokenizer, accelerator, run folder."""

    def __init__(self, cfg: RunConfig, run_dir: Path, log: Callable[[str], None] = print):
        self.cfg, self.run_dir, self.log = cfg, run_dir, log
        if cfg.train.threads:
            torch.set_num_threads(cfg.train.threads)
        self.accelerator = make_accelerator(cfg.train.precision, cfg.train.tracker, str(run_dir))
        if cfg.train.tracker:
            self.accelerator.init_trackers("sendit", config=_flat_config(cfg))
        self.tokenizer = load_tokenizer(cfg.model.model, cfg.model.trust_remote_code)
        self.splits: Splits = load_splits(cfg.data)
        if cfg.train.batch_size > len(self.splits.train):
            raise ConfigError(f"--batch-size {cfg.train.batch_size} is larger than the {len(self.splits.train)} "
                              f"training rows; lower --batch-size or raise --train-size.")
        m = cfg.data.max_length
        self.encoded: dict[str, Encoded] = {
            "train": encode(self.tokenizer, self.splits.train.texts, self.splits.train.labels, m),
            "val": encode(self.tokenizer, self.splits.val.texts, self.splits.val.labels, m),
        }
        # The hand-labelled file first: it is the study's test set, so it is row 0 of every metrics summary.
        self.test_sets: dict[str, Table] = {}
        if self.splits.manual is not None:
            self.test_sets["manual"] = self.splits.manual
        self.test_sets["heldout"] = self.splits.test
        self.encoded_tests = {k: encode(self.tokenizer, t.texts, t.labels, m) for k, t in self.test_sets.items()}

    def main(self) -> bool:
        return self.accelerator.is_main_process


def run(cfg: RunConfig, resume: bool = False, overwrite: bool = False, report: bool = True,
        log: Callable[[str], None] = print) -> Path:
    """Train and test every method of `cfg` once per seed; write the run folder and its report."""
    for name in [*cfg.method.methods, *cfg.method.method_lr]:
        get_method(name)  # fail on a typo (also in --method-lr) before any work
    check_model(cfg.model.model)
    run_dir = prepare_run_dir(cfg.out, resume, overwrite)
    if resume:
        cfg = _resumed_config(run_dir, cfg)
    t0 = time.perf_counter()
    ctx = Context(cfg, run_dir, log)
    manifest = read_manifest(run_dir)
    status: dict = manifest.get("status", {})
    if ctx.main():
        update_manifest(
            run_dir, config=cfg.to_dict(), methods=cfg.method.methods, seeds=cfg.seed_list(),
            versions=versions(), git_commit=git_commit(), hardware=_hardware(ctx),
            data=ctx.splits.summary(), started=manifest.get("started", datetime.now().isoformat(timespec="seconds")),
            status=status,
        )
        atomic_write_text(run_dir / "config.yaml", yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    log(f"data: {ctx.splits.summary()['split_sizes']}  dropped: {ctx.splits.summary()['dropped']}")
    for seed in cfg.seed_list():
        for name in cfg.method.methods:
            key = f"{name}/seed{seed}"
            if status.get(key) == "done":
                log(f"{key}: already done, skipped")
                continue
            try:
                train_method(ctx, name, seed)
                status[key] = "done"
            except TrainingError as e:
                status[key] = f"failed: {e}"
                log(f"{key} FAILED: {e}\nThe other methods go on.")
            if ctx.main():
                update_manifest(run_dir, status=status)
    wall = time.perf_counter() - t0 + manifest.get("wall_time_sec", 0.0)
    if ctx.main():
        update_manifest(run_dir, finished=datetime.now().isoformat(timespec="seconds"), wall_time_sec=wall)
        _print_dropped(ctx, log)
        if (run_dir / ".checkpoints").is_dir() and not any((run_dir / ".checkpoints").iterdir()):
            (run_dir / ".checkpoints").rmdir()
    ctx.accelerator.end_training()
    if report and ctx.main():
        from sendit.report import build_report

        out = build_report([run_dir])
        log(f"report: {Path(out) / 'index.html'}")
    log(f"results: {run_dir.resolve()}  ({wall:.0f} s)")
    return run_dir


def train_method(
    ctx: Context,
    name: str,
    seed: int,
    model_factory: Callable[[], torch.nn.Module] | None = None,
    loss_fn: LossFn = cross_entropy,
    label: str | None = None,
    extra_results: dict | None = None,
    base_model: str | None = None,
) -> dict:
    """One method, one seed: prepare -> fit -> save -> test, then the four CSV files. Returns the results row."""
    cfg, acc = ctx.cfg, ctx.accelerator
    label = check_label(label or name)
    method = get_method(name)
    set_seed(seed)
    base = model_factory() if model_factory else load_model(cfg.model.model, ctx.tokenizer, cfg.model.trust_remote_code)
    model = method.prepare(base, cfg.method).to(acc.device)
    params = count_parameters(model)
    lr = cfg.train.lr or cfg.method.method_lr.get(name) or method.default_lr
    ctx.log(f"{label} (seed {seed}): {params['trainable_params']:,} of {params['total_params']:,} parameters "
            f"train ({params['trainable_pct']:.3f}%), lr {lr:g}")
    checkpoint = ctx.run_dir / ".checkpoints" / f"{label}-seed{seed}"
    folder = ctx.run_dir / model_folder_name(label, seed, cfg.seed_list()[0])
    info = {"max_length": cfg.data.max_length, "normalize": cfg.data.normalize, "seed": seed, "lr": lr,
            "method_config": vars(cfg.method), **(extra_results or {})}
    try:
        result = fit(model, ctx.encoded["train"], ctx.encoded["val"], cfg.train, lr, acc, seed,
                     loss_fn=loss_fn, checkpoint_dir=checkpoint, log=ctx.log, desc=label)
    except TrainingError as e:
        if e.result is None or not ctx.main():
            raise
        # The model holds its best epoch's weights: keep them and the epochs that did run, then report.
        save_model_folder(acc.unwrap_model(model), ctx.tokenizer, folder, name, base_model or cfg.model.model,
                          {**info, "best_epoch": e.result.best_epoch, "failed": str(e)})
        logs = [{**h, "method": label, "seed": seed} for h in e.result.history]
        append_rows(ctx.run_dir, EPOCH_LOGS, label, logs, replace_seed=seed)
        raise TrainingError(f"{e} Saved in {folder}.", e.result) from None
    acc.wait_for_everyone()
    model = acc.unwrap_model(model)
    saved_mb = save_model_folder(model, ctx.tokenizer, folder, name, base_model or cfg.model.model, info) if ctx.main() else 0.0
    inference_model = method.merge(model)
    inference_model.eval()
    merged_params = sum(p.numel() for p in inference_model.parameters())
    summary_rows, prediction_rows = [], []
    for test_name, enc in ctx.encoded_tests.items():
        p = predict(inference_model, enc, acc, cfg.train.eval_batch_size)
        m = classification_metrics(enc.labels, p.preds)
        summary_rows.append({
            **{k: m[k] for k in ("accuracy", "f1_macro", "f1_weighted")}, "inference_time_sec": p.seconds,
            "method": label, "seed": seed, "test_set": test_name, "n": m["n"], "precision": m["precision"],
            "recall": m["recall"], "tweets_per_sec": p.tweets_per_sec, "params": merged_params,
            "model_size_mb": merged_params * 4 / 2**20,
        })
        texts = ctx.test_sets[test_name].texts
        prediction_rows += [
            {"text": t, "label": int(y), "prediction": int(pr), "prob_positive": float(pp), "method": label,
             "seed": seed, "test_set": test_name, "row_id": i}
            for i, (t, y, pr, pp) in enumerate(zip(texts, enc.labels, p.preds, p.probs[:, 1]))
        ]
        ctx.log(f"{label} (seed {seed}) on {test_name} ({m['n']} tweets): accuracy {m['accuracy']:.4f}  "
                f"F1 {m['f1_macro']:.4f}  ({p.tweets_per_sec:.0f} tweets/s)")
    row = {
        "best_val_f1": result.best_val_f1, "val_accuracy": result.best_val_accuracy,
        "runtime_sec": result.runtime_sec, "memory_delta_mb": result.memory_delta_mb, "method": label,
        "model": base_model or cfg.model.model, "seed": seed, "best_epoch": result.best_epoch,
        "epochs_run": result.epochs_run, "peak_memory_mb": result.peak_memory_mb, **params,
        "saved_size_mb": saved_mb, "lr": lr, "train_tweets_per_sec": result.tweets_per_sec,
        "train_tokens_per_sec": result.tokens_per_sec, "stopped": result.stopped, **(extra_results or {}),
    }
    if ctx.main():
        logs = [{**h, "method": label, "seed": seed} for h in result.history]
        append_rows(ctx.run_dir, EPOCH_LOGS, label, logs, replace_seed=seed)
        append_rows(ctx.run_dir, INFERENCE_SUMMARY, label, summary_rows, replace_seed=seed)
        append_rows(ctx.run_dir, PREDICTIONS, label, prediction_rows, replace_seed=seed)
        append_rows(ctx.run_dir, RESULTS, label, [row], replace_seed=seed)
        shutil.rmtree(ctx.run_dir / ".checkpoints" / f"{label}-seed{seed}", ignore_errors=True)
    acc.free_memory()
    return row


def evaluate_folder(model_dir: str | Path, data: str, out: str | None = None, batch_size: int = 256,
                    log: Callable[[str], None] = print) -> Path:
    """A saved model on any labelled file: the same metrics and CSV files as a run's test sets."""
    from sendit.config import DataConfig

    sm = load(model_dir)
    method = sm.manifest["method"]
    table = read_table(data, DataConfig(normalize=False))
    enc = sm.encode(table.texts)
    enc.labels = table.labels
    p = predict(sm.model, enc, sm.accelerator, batch_size)
    m = classification_metrics(table.labels, p.preds)
    out_dir = Path(out or Path(model_dir) / f"eval-{Path(data).stem}")
    out_dir.mkdir(parents=True, exist_ok=True)
    test_set = Path(data).stem
    append_rows(out_dir, INFERENCE_SUMMARY, method, [{
        **{k: m[k] for k in ("accuracy", "f1_macro", "f1_weighted")}, "inference_time_sec": p.seconds,
        "method": method, "seed": sm.manifest.get("seed", 0), "test_set": test_set, "n": m["n"],
        "precision": m["precision"], "recall": m["recall"], "tweets_per_sec": p.tweets_per_sec,
        "dropped": sum(table.dropped.values()),
    }], replace_seed=sm.manifest.get("seed", 0))
    append_rows(out_dir, PREDICTIONS, method, [
        {"text": t, "label": int(y), "prediction": int(pr), "prob_positive": float(pp), "method": method,
         "seed": sm.manifest.get("seed", 0), "test_set": test_set, "row_id": i}
        for i, (t, y, pr, pp) in enumerate(zip(table.texts, table.labels, p.preds, p.probs[:, 1]))
    ], replace_seed=sm.manifest.get("seed", 0))
    log(f"{method} on {data} ({m['n']} tweets, {dict(table.dropped) or 'none'} dropped): accuracy "
        f"{m['accuracy']:.4f}  F1 {m['f1_macro']:.4f}  -> {out_dir}")
    return out_dir


def _resumed_config(run_dir: Path, cfg: RunConfig) -> RunConfig:
    """On --resume the run's own config wins: the run must finish as it started."""
    from sendit.config import from_dict

    saved = read_manifest(run_dir).get("config")
    if not saved:
        return cfg
    saved["out"] = str(run_dir)
    return from_dict(saved, source=str(run_dir / "run.json"))


def _hardware(ctx: Context) -> dict:
    h = hardware(ctx.accelerator.device)
    h.update(processes=ctx.accelerator.num_processes, mixed_precision=ctx.accelerator.mixed_precision)
    return h


def _flat_config(cfg: RunConfig) -> dict:
    out = {}
    for section, values in cfg.to_dict().items():
        if isinstance(values, dict):
            out.update({f"{section}.{k}": str(v) if isinstance(v, (list, dict)) else v for k, v in values.items()})
    return {k: v for k, v in out.items() if v is not None}


def _print_dropped(ctx: Context, log: Callable[[str], None]) -> None:
    dropped = {k: {reason: n for reason, n in v.items() if n} for k, v in ctx.splits.dropped.items()}
    dropped = {k: v for k, v in dropped.items() if v}
    if dropped:
        log("rows dropped (also in run.json): " + "; ".join(
            f"{src}: " + ", ".join(f"{n} {reason}" for reason, n in counts.items()) for src, counts in dropped.items()))
