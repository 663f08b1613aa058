"""The one training loop (`fit`) and the one inference loop (`predict`), for every method.

Tweets are short (OPT tokenizer: mean 22 tokens, p95 39), so batches are padded dynamically and grouped by
length; padding every tweet to 128 would spend ~5x the compute on pad tokens. Batches are global: under
`accelerate launch` each of N processes takes 1/N of every batch, so results do not depend on the process count.
"""

from __future__ import annotations

import math
import os
import pickle
import random
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from accelerate import Accelerator
from accelerate.utils import gather_object
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm.auto import tqdm
from transformers import get_linear_schedule_with_warmup

from sendit.config import TrainConfig
from sendit.measure import PeakMemory, Timer
from sendit.metrics import classification_metrics


class TrainingError(RuntimeError):
    """Training cannot go on (e.g. the loss became NaN); the best checkpoint so far is kept.

    `result` is the history up to the failure when there is one; the model then holds its best epoch's weights.
    """

    def __init__(self, message: str, result: FitResult | None = None):
        super().__init__(message)
        self.result = result


@dataclass
class Encoded:
    """Pre-tokenised texts (tokenised once, reused every epoch)."""

    input_ids: list[list[int]]
    labels: np.ndarray
    pad_id: int

    def __len__(self) -> int:
        return len(self.input_ids)

    @property
    def lengths(self) -> np.ndarray:
        return np.fromiter((len(x) for x in self.input_ids), dtype=np.int64, count=len(self.input_ids))


def encode(tokenizer, texts: list[str], labels: np.ndarray | None, max_length: int) -> Encoded:
    ids = tokenizer(list(texts), truncation=True, max_length=max_length)["input_ids"]
    labels = np.zeros(len(ids), dtype=np.int64) if labels is None else np.asarray(labels, dtype=np.int64)
    return Encoded(ids, labels, tokenizer.pad_token_id)


def collate(data: Encoded, idx: list[int], device: torch.device) -> dict[str, torch.Tensor]:
    width = max(len(data.input_ids[i]) for i in idx)
    ids = torch.full((len(idx), width), data.pad_id, dtype=torch.long)
    mask = torch.zeros((len(idx), width), dtype=torch.long)
    for row, i in enumerate(idx):
        seq = data.input_ids[i]
        ids[row, : len(seq)] = torch.tensor(seq)
        mask[row, : len(seq)] = 1
    return {
        "input_ids": ids.to(device),
        "attention_mask": mask.to(device),
        "labels": torch.as_tensor(data.labels[idx]).to(device),
        "idx": torch.as_tensor(idx),
    }


def length_grouped_batches(lengths: np.ndarray, batch_size: int, seed: int, epoch: int, group: int = 50) -> list[list[int]]:
    """Shuffle, sort by length inside groups of `group` batches, then shuffle the batches: little padding,
    still random. Deterministic in (seed, epoch), which is what makes resuming at an epoch boundary exact."""
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(len(lengths))
    batches = []
    span = batch_size * group
    for start in range(0, len(order), span):
        chunk = order[start : start + span]
        chunk = chunk[np.argsort(-lengths[chunk], kind="stable")]
        batches += [chunk[i : i + batch_size].tolist() for i in range(0, len(chunk), batch_size)]
    return [batches[i] for i in rng.permutation(len(batches))]


def shard(batch: list[int], accelerator: Accelerator) -> list[int]:
    return batch[accelerator.process_index :: accelerator.num_processes]


# ------------------------------------------------------------------------------------------------ losses
LossFn = Callable[[torch.Tensor, dict], tuple[torch.Tensor, dict]]


def cross_entropy(logits: torch.Tensor, batch: dict) -> tuple[torch.Tensor, dict]:
    loss = F.cross_entropy(logits, batch["labels"])
    return loss, {}


# ------------------------------------------------------------------------------------------------ inference
@dataclass
class Predictions:
    probs: np.ndarray  # (n, 2), in the input order
    seconds: float
    tokens: int

    @property
    def preds(self) -> np.ndarray:
        return self.probs.argmax(-1)

    @property
    def tweets_per_sec(self) -> float:
        return len(self.probs) / self.seconds if self.seconds else float("nan")


def token_batches(lengths: np.ndarray, batch_size: int, max_tokens: int) -> list[list[int]]:
    """Rows longest first, cut into batches of at most `batch_size` rows and `max_tokens` padded tokens: a long
    tweet's batch is small, so few pad tokens are computed even when there are fewer rows than `batch_size`."""
    order = np.argsort(-lengths, kind="stable")
    batches, i = [], 0
    while i < len(order):
        n = min(batch_size, max(1, max_tokens // max(int(lengths[order[i]]), 1)))
        batches.append(order[i : i + n].tolist())
        i += n
    return batches


# Padded tokens per inference batch. On CPU a batch of a few hundred rows already runs the matrix products at full
# speed, so larger batches only add padding. OPT-125m shape, quiet machine, medians of 3: 64 tweets ran at 29.8
# tweets/s with 256-token batches, 24.8 with 512 and 20.5 with 1,024; on 512 tweets all three ran at 29-32 tweets/s
# (within the noise). A GPU wants large batches; there the row limit decides.
MAX_TOKENS = {"cpu": 256}


@torch.inference_mode()
def predict(model: nn.Module, data: Encoded, accelerator: Accelerator, batch_size: int = 256,
            max_tokens: int | None = None) -> Predictions:
    """Probabilities for every row, longest first in batches of similar length (little padding), returned in
    input order."""
    model.eval()
    max_tokens = max_tokens or MAX_TOKENS.get(accelerator.device.type, batch_size * 128)
    batches = token_batches(data.lengths, batch_size, max_tokens)
    idx_out, prob_out = [], []
    with Timer(accelerator.device) as timer:
        for batch in batches:
            mine = shard(batch, accelerator)
            if not mine:
                continue
            b = collate(data, mine, accelerator.device)
            with accelerator.autocast():
                logits = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits
            prob_out.append(torch.softmax(logits.float(), -1).cpu().numpy())
            idx_out.append(np.asarray(mine))
    if accelerator.num_processes > 1:
        idx_out, prob_out = gather_object(idx_out), gather_object(prob_out)
    probs = np.zeros((len(data), 2), dtype=np.float32)
    if idx_out:
        probs[np.concatenate(idx_out)] = np.concatenate(prob_out)
    return Predictions(probs, timer.seconds, int(data.lengths.sum()))


def evaluate_loss(model: nn.Module, data: Encoded, accelerator: Accelerator, batch_size: int) -> dict:
    p = predict(model, data, accelerator, batch_size)
    nll = -np.log(np.clip(p.probs[np.arange(len(data)), data.labels], 1e-12, None)).mean()
    m = classification_metrics(data.labels, p.preds)
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


def trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone().cpu() for n, p in model.named_parameters() if p.requires_grad}


def fit(
    model: nn.Module,
    train: Encoded,
    val: Encoded,
    cfg: TrainConfig,
    lr: float,
    accelerator: Accelerator,
    seed: int,
    loss_fn: LossFn = cross_entropy,
    checkpoint_dir: Path | None = None,
    log: Callable[[str], None] = print,
    desc: str = "train",
    max_batches: int | None = None,
) -> FitResult:
    """Train `model` (already frozen/wrapped by its method) with AdamW and linear warm-up/decay, validate each
    epoch, stop early on validation F1, and leave the best epoch's weights in the model."""
    world = accelerator.num_processes
    if cfg.batch_size % world:
        raise TrainingError(f"--batch-size {cfg.batch_size} must be divisible by the {world} processes")
    if cfg.batch_size > len(train):
        raise TrainingError(f"--batch-size {cfg.batch_size} is larger than the {len(train)} training rows; "
                            f"lower it or add data")
    unwrapped = model
    model = accelerator.prepare_model(model)
    if cfg.compile:  # opt-in: on CPU the compile time outweighs the gain of a short run (docs/speed.md)
        model = torch.compile(model, dynamic=True)
    optimizer = make_optimizer(unwrapped, lr, cfg.weight_decay)
    batches_per_epoch = math.ceil(len(train) / cfg.batch_size)
    if max_batches:  # `sendit bench`: time a few batches of a full-size epoch's grouping
        batches_per_epoch = min(batches_per_epoch, max_batches)
    steps_per_epoch = math.ceil(batches_per_epoch / cfg.grad_accum)
    total_steps = steps_per_epoch * cfg.epochs
    scheduler = get_linear_schedule_with_warmup(optimizer, int(cfg.warmup_ratio * total_steps), total_steps)
    trainable = [p for p in unwrapped.parameters() if p.requires_grad]

    result, best_state, bad_epochs, start_epoch = FitResult(), None, 0, 1
    if checkpoint_dir is not None and (checkpoint_dir / "state.pt").exists():
        start_epoch, result, best_state, bad_epochs = _load_checkpoint(checkpoint_dir, unwrapped, optimizer, scheduler)
        log(f"resuming {desc} from the checkpoint after epoch {start_epoch - 1}")
    lengths = train.lengths
    t_start = time.perf_counter() - result.runtime_sec
    with PeakMemory(accelerator.device) as mem:
        for epoch in range(start_epoch, cfg.epochs + 1):
            if result.stopped == "early_stopping":
                break
            model.train()
            batches = length_grouped_batches(lengths, cfg.batch_size, seed, epoch)[:batches_per_epoch]
            bar = tqdm(batches, desc=f"{desc} epoch {epoch}/{cfg.epochs}", disable=not accelerator.is_local_main_process,
                       mininterval=2.0, leave=False, dynamic_ncols=True)
            loss_sum = torch.zeros((), dtype=torch.float64, device=accelerator.device)  # no GPU sync per step
            extra_sums: dict[str, float] = {}
            seen = tokens = 0
            with Timer(accelerator.device) as epoch_timer:
                for i, batch_idx in enumerate(bar):
                    window_start = (i // cfg.grad_accum) * cfg.grad_accum
                    window = min(cfg.grad_accum, batches_per_epoch - window_start)
                    sync = (i + 1) % cfg.grad_accum == 0 or i + 1 == batches_per_epoch
                    b = collate(train, shard(batch_idx, accelerator), accelerator.device)
                    with nullcontext() if sync or world == 1 else accelerator.no_sync(model):
                        logits = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits.float()
                        loss, extras = loss_fn(logits, b)
                        accelerator.backward(loss / window)
                    if sync:
                        if cfg.max_grad_norm:
                            torch.nn.utils.clip_grad_norm_(trainable, cfg.max_grad_norm)
                        optimizer.step()
                        scheduler.step()
                        optimizer.zero_grad(set_to_none=True)
                    loss_sum += loss.detach().double()
                    for k, v in extras.items():
                        extra_sums[k] = extra_sums.get(k, 0.0) + float(v)
                    seen += len(batch_idx)
                    tokens += int(lengths[batch_idx].sum())
                    if (i + 1) % cfg.log_every == 0:
                        elapsed = time.perf_counter() - epoch_timer.t0
                        bar.set_postfix(loss=f"{loss_sum.item() / (i + 1):.4f}", tweets_s=f"{seen / elapsed:.0f}")
            if world > 1:  # each process summed the losses of its own slices: the epoch's loss is their mean
                loss_sum = accelerator.reduce(loss_sum, "mean")
            train_loss = loss_sum.item() / len(batches)
            if not math.isfinite(train_loss):
                if best_state is not None:
                    unwrapped.load_state_dict(best_state, strict=False)
                kept = (f"the model keeps epoch {result.best_epoch}'s weights, the best so far"
                        if best_state is not None else "it was the first epoch, so there are no earlier weights to keep")
                raise TrainingError(
                    f"{desc}: the training loss became {train_loss} in epoch {epoch}. Lower the learning rate "
                    f"(now {lr:g}) or use --precision fp32; {kept}.", result if best_state is not None else None
                )
            result.train_examples += seen
            result.train_tokens += tokens
            result.train_seconds += epoch_timer.seconds
            v = evaluate_loss(model, val, accelerator, cfg.eval_batch_size)
            row = {
                "epoch": epoch, "train_loss": train_loss, "val_loss": v["loss"], "val_accuracy": v["accuracy"],
                "val_f1": v["f1"], "lr": scheduler.get_last_lr()[0], "epoch_time_sec": epoch_timer.seconds,
                "train_tweets_per_sec": seen / epoch_timer.seconds,
                **{f"train_{k}": s / len(batches) for k, s in extra_sums.items()},
            }
            result.history.append(row)
            accelerator.log({f"{desc}/train/loss": train_loss, f"{desc}/val/loss": v["loss"],
                             f"{desc}/val/accuracy": v["accuracy"], f"{desc}/val/f1": v["f1"]}, step=epoch)
            log(f"{desc} epoch {epoch}: train loss {train_loss:.4f}  val loss {v['loss']:.4f}  "
                f"val acc {v['accuracy']:.4f}  val F1 {v['f1']:.4f}  ({seen / epoch_timer.seconds:.0f} tweets/s)")
            if v["f1"] > result.best_val_f1:
                result.best_val_f1, result.best_val_accuracy, result.best_epoch = v["f1"], v["accuracy"], epoch
                best_state, bad_epochs = trainable_state(unwrapped), 0
            else:
                bad_epochs += 1
                if bad_epochs >= cfg.patience:
                    result.stopped = "early_stopping"
            result.epochs_run = epoch
            result.runtime_sec = time.perf_counter() - t_start
            if checkpoint_dir is not None and accelerator.is_main_process:
                _save_checkpoint(checkpoint_dir, epoch, unwrapped, optimizer, scheduler, result, best_state, bad_epochs)
            accelerator.wait_for_everyone()
    result.runtime_sec = time.perf_counter() - t_start
    result.peak_memory_mb, result.memory_delta_mb = mem.peak_mb, mem.delta_mb
    if best_state is not None:
        unwrapped.load_state_dict(best_state, strict=False)
    return result


# ------------------------------------------------------------------------------------------------ checkpoints
# A checkpoint folder holds `state.pt` (optimizer, scheduler, RNG states, progress) and the epoch's weights as
# `trainable-epoch{N}.safetensors` / `best-epoch{N}.safetensors`. `state.pt` is the commit point: the weights of
# epoch N are written first under new names, then `state.pt` is replaced atomically (os.replace), then older
# epochs' files are deleted. A kill at any moment leaves a `state.pt` whose files all exist, never half of one.
STATE = "state.pt"


def _rng_state() -> dict:
    np_state = np.random.get_state()
    py_state = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"key": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])},
        "python": {"state": list(py_state[1]), "gauss_next": py_state[2]},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["key"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"]))
    random.setstate((3, tuple(state["python"]["state"]), state["python"]["gauss_next"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _fsync(path: Path) -> None:
    with open(path, "rb+") as f:
        os.fsync(f.fileno())


def _save_checkpoint(folder: Path, epoch: int, model, optimizer, scheduler, result, best_state, bad_epochs) -> None:
    """Everything needed to continue after `epoch` (weights as safetensors; optimizer, scheduler, RNG states and
    progress in `state.pt`), committed by an atomic replace of `state.pt`."""
    folder.mkdir(parents=True, exist_ok=True)
    files = {"trainable": f"trainable-epoch{epoch}.safetensors"}
    save_file(trainable_state(model), str(folder / files["trainable"]))
    if best_state is not None:
        files["best"] = f"best-epoch{epoch}.safetensors"
        save_file(best_state, str(folder / files["best"]))
    for name in files.values():
        _fsync(folder / name)
    state = {
        "epoch": epoch, "files": files, "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
        "rng": _rng_state(), "result": dict(vars(result)), "bad_epochs": bad_epochs,
    }
    tmp = folder / f".{STATE}.tmp"
    torch.save(state, tmp)
    _fsync(tmp)
    os.replace(tmp, folder / STATE)
    for old in folder.glob("*.safetensors"):
        if old.name not in files.values():
            old.unlink(missing_ok=True)


def _load_checkpoint(folder: Path, model, optimizer, scheduler):
    """Restore what `_save_checkpoint` wrote; `torch.load` runs with weights_only=True (tensors and plain Python
    values only, nothing unpickled into code)."""
    try:
        state = torch.load(folder / STATE, weights_only=True)
        weights = load_file(str(folder / state["files"]["trainable"]))
        best = load_file(str(folder / state["files"]["best"])) if "best" in state["files"] else None
    except pickle.UnpicklingError:
        raise TrainingError(f"the checkpoint in {folder} holds more than tensors and plain values, so it was not "
                            f"loaded (tampered with?). Delete that folder to restart this method from epoch 1 when "
                            f"resuming.") from None
    except Exception as e:  # a checkpoint from another version, or damaged on disk: say so, do not guess
        why = str(e).strip().splitlines()[0][:200] if str(e).strip() else ""
        raise TrainingError(f"the checkpoint in {folder} cannot be read ({type(e).__name__}: {why}). Delete that "
                            f"folder to restart this method from epoch 1 when resuming.") from None
    model.load_state_dict(weights, strict=False)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    _set_rng_state(state["rng"])
    return state["epoch"] + 1, FitResult(**state["result"]), best, state["bad_epochs"]
