"""The one training loop (`fit`) and the one inference loop (`predict`), for every method, with the training
losses and the epoch checkpoints that make a killed run resume bit-identically. Batches come from `batching.py`."""

from __future__ import annotations

import functools
import math
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from accelerate.utils import gather_object
from torch import nn
from tqdm.auto import tqdm
from transformers import get_linear_schedule_with_warmup

from sendit.config.schema import TrainConfig
from sendit.errors import CheckpointError, TrainingError
from sendit.train.batching import Encoded, collate, length_grouped_batches, shard, token_batches, train_shard
from sendit.train.checkpoint import STATE, load_checkpoint, save_checkpoint, trainable_state
from sendit.train.device import Processes, autocast, resolve_precision
from sendit.train.measure import PeakMemory, Timer
from sendit.train.metrics import classification_metrics
from sendit.verbosity import bars_disabled

# ------------------------------------------------------------------------------------------------ losses
LossFn = Callable[[torch.Tensor, dict], tuple[torch.Tensor, dict]]


def cross_entropy(logits: torch.Tensor, batch: dict) -> tuple[torch.Tensor, dict]:
    loss = F.cross_entropy(logits, batch["labels"])
    return loss, {}


def class_weights(labels: np.ndarray, num_classes: int) -> torch.Tensor:
    """Inverse class frequency, n / (k * n_c) (1 for every class of a balanced split): --class-balance weight."""
    n_c = np.bincount(np.asarray(labels, dtype=np.int64), minlength=num_classes).astype(np.float64)
    return torch.as_tensor(len(labels) / (num_classes * np.maximum(n_c, 1.0)), dtype=torch.float32)


def training_loss(class_balance: str, train_labels: np.ndarray, num_classes: int) -> LossFn:
    """The loss of `sendit run` and `tune`: cross-entropy, weighted by inverse class frequency with
    --class-balance weight."""
    if class_balance != "weight":
        return cross_entropy
    return weighted_cross_entropy(class_weights(train_labels, num_classes))


def weighted_cross_entropy(weights: torch.Tensor) -> LossFn:
    """Cross-entropy with each row weighted by its class's weight (mean over the batch's weights, as torch does)."""

    def loss_fn(logits: torch.Tensor, batch: dict) -> tuple[torch.Tensor, dict]:
        return F.cross_entropy(logits, batch["labels"], weight=weights.to(logits.device)), {}

    return loss_fn


# ------------------------------------------------------------------------------------------------ inference
@dataclass
class Predictions:
    logits: np.ndarray  # (n, k classes), in the input order
    seconds: float
    tokens: int

    @functools.cached_property
    def probs(self) -> np.ndarray:
        return torch.softmax(torch.from_numpy(self.logits), -1).numpy()

    @property
    def preds(self) -> np.ndarray:
        return self.logits.argmax(-1)

    @property
    def tweets_per_sec(self) -> float:
        return len(self.probs) / self.seconds if self.seconds else float("nan")


# Padded tokens per inference batch. On CPU a batch of a few hundred rows already runs the matrix products at full
# speed, so larger batches only add padding. OPT-125m shape, quiet machine, medians of 3: 64 tweets ran at 29.8
# tweets/s with 256-token batches, 24.8 with 512 and 20.5 with 1,024; on 512 tweets all three ran at 29-32 tweets/s
# (within the noise). A GPU wants large batches; there the row limit decides.
MAX_TOKENS = {"cpu": 256}
# Seconds before an inference progress bar appears: a phase that ends sooner (a small validation set) stays silent.
PROGRESS_DELAY = 3.0


@torch.inference_mode()
def predict(model: nn.Module, data: Encoded, accelerator: Processes | None, batch_size: int = 256,
            max_tokens: int | None = None, precision: str = "fp32", desc: str | None = "predict") -> Predictions:
    """Logits for every row, longest first in batches of similar length (little padding), returned in input
    order. With `accelerator` None this process predicts every row itself (the model's device); otherwise each
    process takes its share and all of them receive every row. `precision` ('bf16' or 'fp32') is the model's.
    A progress bar named `desc` appears when the work takes more than a few seconds (not when quiet, nor for
    desc None: a caller with its own bar)."""
    model.eval()
    device = accelerator.device if accelerator is not None else next(model.parameters()).device
    max_tokens = max_tokens or MAX_TOKENS.get(device.type, batch_size * 128)
    batches = token_batches(data.lengths, batch_size, max_tokens)
    idx_out, logit_out = [], []
    main = accelerator is None or accelerator.process_index == 0
    bar = tqdm(total=len(data), desc=desc, unit="tweet", delay=PROGRESS_DELAY, leave=False, dynamic_ncols=True,
               disable=bars_disabled() or not main or desc is None)
    with Timer(device) as timer, bar:
        for batch in batches:
            mine = shard(batch, accelerator) if accelerator is not None else batch
            if not mine:
                continue
            b = collate(data, mine, device)
            with autocast(device, precision):
                logits = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits
            logit_out.append(logits.float().cpu().numpy())
            idx_out.append(np.asarray(mine))
            bar.update(len(batch))
    if accelerator is not None and accelerator.num_processes > 1:
        idx_out, logit_out = gather_object(idx_out), gather_object(logit_out)
    out = np.zeros((len(data), 2), dtype=np.float32)
    if idx_out:
        out = np.zeros((len(data), logit_out[0].shape[-1]), dtype=np.float32)
        out[np.concatenate(idx_out)] = np.concatenate(logit_out)
    return Predictions(out, timer.seconds, int(data.lengths.sum()))


def evaluate_loss(model: nn.Module, data: Encoded, accelerator: Processes, batch_size: int,
                  precision: str = "fp32") -> dict:
    p = predict(model, data, accelerator, batch_size, precision=precision, desc="validation")
    nll = -np.log(np.clip(p.probs[np.arange(len(data)), data.labels], 1e-12, None)).mean()
    m = classification_metrics(data.labels, p.preds, p.logits.shape[1])
    return {"loss": float(nll), "accuracy": m["accuracy"], "f1": m["f1_macro"]}


# ------------------------------------------------------------------------------------------------ training
@dataclass
class FitResult:
    history: list[dict] = field(default_factory=list)
    best_epoch: int = 0
    best_val_f1: float = -1.0
    best_val_accuracy: float = 0.0
    runtime_sec: float = 0.0
    train_examples: int = 0
    train_tokens: int = 0
    train_seconds: float = 0.0
    peak_memory_mb: float = 0.0
    memory_delta_mb: float = 0.0
    epochs_run: int = 0
    stopped: str = "max_epochs"

    @property
    def tweets_per_sec(self) -> float:
        return self.train_examples / self.train_seconds if self.train_seconds else 0.0

    @property
    def tokens_per_sec(self) -> float:
        return self.train_tokens / self.train_seconds if self.train_seconds else 0.0


def make_optimizer(model: nn.Module, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    decay, no_decay = [], []
    for n, p in model.named_parameters():
        if p.requires_grad:
            (no_decay if p.ndim < 2 else decay).append(p)  # biases and LayerNorm weights are not decayed
    groups = [g for g in ({"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0})
              if g["params"]]
    # Fused AdamW: one kernel over all parameters. On this 2-core CPU a step over 138M parameters (full
    # fine-tuning of OPT-125m) took 0.4-0.8 s fused against 6 s with foreach; CUDA and CPU have it (torch >= 2.4).
    try:
        return torch.optim.AdamW(groups, lr=lr, fused=True)
    except (RuntimeError, ValueError):  # a device or torch without the fused kernel
        return torch.optim.AdamW(groups, lr=lr, foreach=True)


@dataclass
class _Loop:
    """What every epoch of one `fit` shares."""

    model: nn.Module  # as driven: DDP-wrapped and/or compiled
    unwrapped: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: object
    trainable: list
    cfg: TrainConfig
    processes: Processes
    precision: str
    loss_fn: LossFn
    batches_per_epoch: int
    steps_per_epoch: int


@dataclass
class _Epoch:
    train_loss: float
    seen: int
    tokens: int
    seconds: float
    lr: float  # the mean rate of the epoch's optimizer steps, not the rate after its last one
    extras: dict


def fit(
    model: nn.Module,
    train: Encoded,
    val: Encoded,
    cfg: TrainConfig,
    lr: float,
    accelerator: Processes,
    seed: int,
    loss_fn: LossFn = cross_entropy,
    checkpoint_dir: Path | None = None,
    log: Callable[[str], None] = print,
    desc: str = "train",
    max_batches: int | None = None,
    on_epoch: Callable[[int, dict], None] | None = None,
    precision: str | None = None,
) -> FitResult:
    """Train `model` (already frozen/wrapped by its method) with AdamW and linear warm-up/decay, validate each
    epoch, stop early on validation F1, and leave the best epoch's weights in the model. `on_epoch(epoch, row)`
    sees each epoch's log row once it is checkpointed; an exception it raises (a pruned `sendit tune` trial)
    ends training there. Runtime and peak memory cover training and validation only, not the best-epoch
    snapshots and checkpoint writes, and add up over a resumed run's segments. `precision` ('bf16' or 'fp32') is
    the run's, resolved once (`Context.precision`); None resolves `cfg.precision`, for a caller without a run."""
    loop = _setup(model, train, cfg, lr, accelerator, loss_fn, max_batches, precision)
    result, best_state, bad_epochs, start_epoch = FitResult(), None, 0, 1
    if checkpoint_dir is not None and (checkpoint_dir / STATE).exists():
        try:
            start_epoch, progress, best_state, bad_epochs = load_checkpoint(checkpoint_dir, loop.unwrapped,
                                                                            loop.optimizer, loop.scheduler)
        except CheckpointError as e:
            raise TrainingError(str(e)) from None
        result = FitResult(**progress)
        log(f"resuming {desc} from the checkpoint after epoch {start_epoch - 1}")
    for epoch in range(start_epoch, cfg.epochs + 1):
        if result.stopped == "early_stopping":
            break
        with PeakMemory(accelerator.device) as mem, Timer(accelerator.device) as measured:
            e = _train_epoch(loop, train, seed, epoch, f"{desc} epoch {epoch}/{cfg.epochs}")
            if not math.isfinite(e.train_loss):
                _diverged(loop, result, best_state, desc, epoch, e.train_loss, lr)
            v = evaluate_loss(loop.model, val, accelerator, cfg.eval_batch_size, loop.precision)
        result.runtime_sec += measured.seconds
        result.peak_memory_mb = max(result.peak_memory_mb, mem.peak_mb)
        result.memory_delta_mb = max(result.memory_delta_mb, mem.delta_mb)
        result.train_examples, result.train_tokens = result.train_examples + e.seen, result.train_tokens + e.tokens
        result.train_seconds += e.seconds
        row = {
            "epoch": epoch, "train_loss": e.train_loss, "val_loss": v["loss"], "val_accuracy": v["accuracy"],
            "val_f1": v["f1"], "lr": e.lr, "epoch_time_sec": e.seconds, "train_tweets_per_sec": e.seen / e.seconds,
            **{f"train_{k}": x for k, x in e.extras.items()},
        }
        result.history.append(row)
        accelerator.log({f"{desc}/train/loss": e.train_loss, f"{desc}/val/loss": v["loss"],
                         f"{desc}/val/accuracy": v["accuracy"], f"{desc}/val/f1": v["f1"]}, step=epoch)
        log(f"{desc} epoch {epoch}: train loss {e.train_loss:.4f}  val loss {v['loss']:.4f}  "
            f"val acc {v['accuracy']:.4f}  val F1 {v['f1']:.4f}  ({e.seen / e.seconds:.0f} tweets/s)")
        if v["f1"] > result.best_val_f1:
            result.best_val_f1, result.best_val_accuracy, result.best_epoch = v["f1"], v["accuracy"], epoch
            best_state, bad_epochs = trainable_state(loop.unwrapped), 0
        else:
            bad_epochs += 1
            if bad_epochs >= cfg.patience:
                result.stopped = "early_stopping"
        result.epochs_run = epoch
        if checkpoint_dir is not None and accelerator.is_main_process:
            save_checkpoint(checkpoint_dir, epoch, loop.unwrapped, loop.optimizer, loop.scheduler, vars(result),
                            best_state, bad_epochs)
        accelerator.wait_for_everyone()
        if on_epoch is not None:
            on_epoch(epoch, row)
    if best_state is not None:
        loop.unwrapped.load_state_dict(best_state, strict=False)
    return result


def _setup(model: nn.Module, train: Encoded, cfg: TrainConfig, lr: float, processes: Processes, loss_fn: LossFn,
           max_batches: int | None, precision: str | None = None) -> _Loop:
    world = processes.num_processes
    if cfg.batch_size % world:
        raise TrainingError(f"--batch-size {cfg.batch_size} must be divisible by the {world} processes")
    if cfg.batch_size > len(train):
        raise TrainingError(f"--batch-size {cfg.batch_size} is larger than the {len(train)} training rows; "
                            f"lower it or add data")
    driven = processes.wrap(model)
    if cfg.compile:  # opt-in: on CPU the compile time outweighs the gain of a short run (docs/speed.md)
        driven = torch.compile(driven, dynamic=True)
    optimizer = make_optimizer(model, lr, cfg.weight_decay)
    batches_per_epoch = math.ceil(len(train) / cfg.batch_size)
    if max_batches:  # `sendit bench`: time a few batches of a full-size epoch's grouping
        batches_per_epoch = min(batches_per_epoch, max_batches)
    steps_per_epoch = math.ceil(batches_per_epoch / cfg.grad_accum)
    total_steps = steps_per_epoch * cfg.epochs
    scheduler = get_linear_schedule_with_warmup(optimizer, int(cfg.warmup_ratio * total_steps), total_steps)
    return _Loop(driven, model, optimizer, scheduler, [p for p in model.parameters() if p.requires_grad], cfg,
                 processes, precision or resolve_precision(cfg.precision, processes.device), loss_fn,
                 batches_per_epoch,
                 steps_per_epoch)


def _train_epoch(loop: _Loop, train: Encoded, seed: int, epoch: int, desc: str) -> _Epoch:
    """One pass over the epoch's length-grouped batches, with gradient accumulation over `grad_accum` batches."""
    cfg, procs, model, lengths = loop.cfg, loop.processes, loop.model, train.lengths
    world, accum, n = procs.num_processes, cfg.grad_accum, loop.batches_per_epoch
    model.train()
    batches = length_grouped_batches(lengths, cfg.batch_size, seed, epoch)[:n]
    bar = tqdm(batches, desc=desc, unit="batch", disable=not procs.is_local_main_process or bars_disabled(),
               mininterval=2.0, leave=False, dynamic_ncols=True)
    loss_sum = torch.zeros((), dtype=torch.float64, device=procs.device)  # no GPU sync per step
    extra_sums: dict[str, float] = {}
    seen = tokens = 0
    lr_sum = 0.0
    with Timer(procs.device) as timer:
        for i, batch_idx in enumerate(bar):
            window = min(accum, n - (i // accum) * accum)  # the last window of an epoch may be shorter
            sync = (i + 1) % accum == 0 or i + 1 == n
            rows, weight = train_shard(batch_idx, procs)
            b = collate(train, rows, procs.device)
            with nullcontext() if sync or world == 1 else model.no_sync():
                with autocast(procs.device, loop.precision):
                    logits = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits
                loss, extras = loop.loss_fn(logits.float(), b)
                (loss * weight / window).backward()
            if sync:
                if cfg.max_grad_norm:
                    torch.nn.utils.clip_grad_norm_(loop.trainable, cfg.max_grad_norm)
                lr_sum += loop.optimizer.param_groups[0]["lr"]
                loop.optimizer.step()
                loop.scheduler.step()
                loop.optimizer.zero_grad(set_to_none=True)
            loss_sum += loss.detach().double() * weight
            for k, v in extras.items():
                extra_sums[k] = extra_sums.get(k, 0.0) + float(v)
            seen += len(batch_idx)
            tokens += int(lengths[batch_idx].sum())
            if (i + 1) % cfg.log_every == 0:
                elapsed = time.perf_counter() - timer.t0
                bar.set_postfix(loss=f"{loss_sum.item() / (i + 1):.4f}", tweets_s=f"{seen / elapsed:.0f}")
    if world > 1:  # each process summed its slices' share-weighted losses: their mean sums the batch means
        loss_sum = procs.reduce(loss_sum, "mean")
    return _Epoch(loss_sum.item() / len(batches), seen, tokens, timer.seconds, lr_sum / loop.steps_per_epoch,
                  {k: v / len(batches) for k, v in extra_sums.items()})


def _diverged(loop: _Loop, result: FitResult, best_state: dict | None, desc: str, epoch: int, train_loss: float,
              lr: float) -> None:
    """A non-finite epoch loss: back to the best epoch's weights, and a TrainingError that says what to change."""
    if best_state is not None:
        loop.unwrapped.load_state_dict(best_state, strict=False)
    kept = (f"the model keeps epoch {result.best_epoch}'s weights, the best so far"
            if best_state is not None else "it was the first epoch, so there are no earlier weights to keep")
    raise TrainingError(
        f"{desc}: the training loss became {train_loss} in epoch {epoch}. Lower the learning rate "
        f"(now {lr:g}) or use --precision fp32; {kept}.", result if best_state is not None else None
    )
