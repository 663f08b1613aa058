"""One method, one seed, in a run folder: prepare -> fit -> save -> test, then its four CSV files."""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Callable

import torch
from accelerate.utils import set_seed

from sendit.errors import ConfigError, TrainingError
from sendit.methods import get_method, learning_rate
from sendit.run.context import Context
from sendit.run.folder import (
    EPOCH_LOGS,
    INFERENCE_SUMMARY,
    PREDICTIONS,
    RESULTS,
    append_rows,
    checkpoint_folder,
    metrics_row,
    model_folder_name,
    prediction_rows,
)
from sendit.run.model_folder import save_model_folder
from sendit.train.engine import LossFn, fit, predict, training_loss
from sendit.train.measure import count_parameters, resident_mb
from sendit.train.metrics import classification_metrics
from sendit.train.models import load_model
from sendit.verbosity import quiet_libraries


def check_label(label: str) -> str:
    """A method label names files and folders inside the run folder, so it must be one plain path component."""
    if not label or label != Path(label).name or "\\" in label or label.startswith(".") or label in (".", ".."):
        raise ConfigError(f"method label {label!r} cannot name a folder inside the run folder (no path separators, "
                          f"no leading '.'); use letters, digits, '-', '_' and '.'.")
    return label


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
    cfg, accelerator, classes = ctx.cfg, ctx.accelerator, ctx.splits.classes
    loss_fn = loss_fn or training_loss(cfg.data.class_balance, ctx.splits.train.labels, len(classes))
    set_seed(seed)
    baseline_mb = resident_mb(accelerator.device)  # what earlier work holds: not this training's memory
    base = model_factory() if model_factory else load_model(
        cfg.model.model, ctx.tokenizer, cfg.model.trust_remote_code, announce=True, classes=classes)
    with quiet_libraries():  # peft's FutureWarnings about transformers internals
        model = method.prepare(base, cfg.method).to(accelerator.device)
    params = count_parameters(model)
    lr = learning_rate(name, cfg.train.lr, cfg.method.method_lr)
    ctx.log(f"{label} (seed {seed}): {params['trainable_params']:,} of {params['total_params']:,} parameters "
            f"train ({params['trainable_pct']:.3f}%), lr {lr:g}")
    checkpoint = checkpoint_folder(ctx.run_dir, label, seed)
    folder = ctx.run_dir / model_folder_name(label, seed, cfg.seed_list()[0])
    info = {"max_length": cfg.data.max_length, "normalize": cfg.data.normalize, "seed": seed, "lr": lr,
            "labels": list(classes), "method_config": vars(cfg.method), **(extra_results or {})}
    trained, feature_sec, t0 = model, 0.0, time.perf_counter()
    if features is not None and getattr(method, "frozen_features", False):
        from sendit.train.features import feature_model

        trained = feature_model(model, [ctx.encoded["train"], ctx.encoded["val"]], ctx.precision, features,
                                key=(cfg.model.model, seed, ctx.precision)) or model
        feature_sec = time.perf_counter() - t0
    try:
        result = fit(trained, ctx.encoded["train"], ctx.encoded["val"], cfg.train, lr, accelerator, seed, loss_fn=loss_fn,
                     checkpoint_dir=checkpoint, log=ctx.log, desc=label, precision=ctx.precision)
        result.runtime_sec += feature_sec  # the features are part of what this training cost
    except TrainingError as e:
        if e.result is None or not ctx.main():
            raise
        # The model holds its best epoch's weights: keep them and the epochs that did run, then report.
        save_model_folder(accelerator.unwrap(model), ctx.tokenizer, folder, name, base_model or cfg.model.model,
                          {**info, "best_epoch": e.result.best_epoch, "failed": str(e)})
        logs = [{**h, "method": label, "seed": seed} for h in e.result.history]
        append_rows(ctx.run_dir, EPOCH_LOGS, label, logs, replace_seed=seed)
        raise TrainingError(f"{e} Saved in {folder}.", e.result) from None
    accelerator.wait_for_everyone()
    model = accelerator.unwrap(model)
    saved_mb = (save_model_folder(model, ctx.tokenizer, folder, name, base_model or cfg.model.model, info)
                if ctx.main() else 0.0)
    summary_rows, predicted = _test(ctx, method.merge(model), label, seed)
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


def _test(ctx: Context, inference_model: torch.nn.Module, label: str, seed: int) -> tuple[list[dict], list[dict]]:
    """The trained model (the method merged in) on every test set of the run: summary rows and prediction rows."""
    inference_model.eval()
    merged_params = sum(p.numel() for p in inference_model.parameters())
    classes = ctx.splits.classes
    summary_rows, predicted = [], []
    for test_name, enc in ctx.encoded_tests.items():
        p = predict(inference_model, enc, ctx.accelerator, ctx.cfg.train.eval_batch_size, precision=ctx.precision,
                    desc=f"{label} on {test_name}")
        m = classification_metrics(enc.labels, p.preds, len(classes))
        summary_rows.append(metrics_row(m, p.seconds, p.tweets_per_sec, label, seed, test_name,
                                        params=merged_params, model_size_mb=merged_params * 4 / 2**20))
        predicted += prediction_rows(ctx.test_sets[test_name].texts, enc.labels, p.preds, p.probs, label,
                                     seed, test_name, classes)
        ctx.log(f"{label} (seed {seed}) on {test_name} ({m['n']} tweets): accuracy {m['accuracy']:.4f}  "
                f"F1 {m['f1_macro']:.4f}  ({p.tweets_per_sec:.0f} tweets/s)")
    return summary_rows, predicted
