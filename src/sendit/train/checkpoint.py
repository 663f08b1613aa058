"""Epoch checkpoints: everything needed to continue a method after an epoch, so that a killed run resumes
bit-identically (weights as safetensors; optimizer, scheduler, RNG states and progress in `state.pt`).

A checkpoint folder holds `state.pt` and the epoch's weights as `trainable-epoch{N}.safetensors` /
`best-epoch{N}.safetensors`. `state.pt` is the commit point: the weights of epoch N are written first under new
names, then `state.pt` is replaced atomically (os.replace), then older epochs' files are deleted. A kill at any
moment leaves a `state.pt` whose files all exist, never half of one.
"""

from __future__ import annotations

import errno
import os
import pickle
import random
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from sendit.errors import CheckpointError
from sendit.fileio import as_write_error


def trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone().cpu() for n, p in model.named_parameters() if p.requires_grad}


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


def save_checkpoint(folder: Path, epoch: int, model, optimizer, scheduler, progress: dict, best_state, bad_epochs) -> None:
    """Everything needed to continue after `epoch` (weights as safetensors; optimizer, scheduler, RNG states and
    progress in `state.pt`), committed by an atomic replace of `state.pt`."""
    folder.mkdir(parents=True, exist_ok=True)
    files = {"trainable": f"trainable-epoch{epoch}.safetensors"}
    tmp = folder / f".{STATE}.tmp"
    try:
        save_file(trainable_state(model), str(folder / files["trainable"]))
        if best_state is not None:
            files["best"] = f"best-epoch{epoch}.safetensors"
            save_file(best_state, str(folder / files["best"]))
        for name in files.values():
            _fsync(folder / name)
        state = {
            "epoch": epoch, "files": files, "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
            "rng": _rng_state(), "result": dict(progress), "bad_epochs": bad_epochs,
        }
        torch.save(state, tmp)
        _fsync(tmp)
        os.replace(tmp, folder / STATE)
    except BaseException as e:
        # Not committed (a full disk, Ctrl-C): drop this epoch's files, so the last good checkpoint stays the one.
        for path in [*(folder / name for name in files.values()), tmp]:
            path.unlink(missing_ok=True)
        # torch and safetensors report a full disk (or the file-size limit) as RuntimeError/SafetensorError.
        err = e if isinstance(e, OSError) else as_write_error(e)
        if err is not None:
            why = err.strerror or "No space left on device"
            raise OSError(err.errno or errno.ENOSPC, f"{why} while saving the checkpoint of epoch {epoch} (the "
                          f"last good checkpoint, of the epoch before, is kept)", str(folder)) from e
        raise
    for old in folder.glob("*.safetensors"):
        if old.name not in files.values():
            old.unlink(missing_ok=True)


def load_checkpoint(folder: Path, model, optimizer, scheduler) -> tuple[int, dict, dict | None, int]:
    """Restore what `_save_checkpoint` wrote; `torch.load` runs with weights_only=True (tensors and plain Python
    values only, nothing unpickled into code)."""
    try:
        state = torch.load(folder / STATE, weights_only=True)
        weights = load_file(str(folder / state["files"]["trainable"]))
        best = load_file(str(folder / state["files"]["best"])) if "best" in state["files"] else None
    except pickle.UnpicklingError:
        raise CheckpointError(f"the checkpoint in {folder} holds more than tensors and plain values, so it was not "
                            f"loaded (tampered with?). Delete that folder to restart this method from epoch 1 when "
                            f"resuming.") from None
    except Exception as e:  # a checkpoint from another version, or damaged on disk: say so, do not guess
        why = str(e).strip().splitlines()[0][:200] if str(e).strip() else ""
        raise CheckpointError(f"the checkpoint in {folder} cannot be read ({type(e).__name__}: {why}). Delete that "
                            f"folder to restart this method from epoch 1 when resuming.") from None
    model.load_state_dict(weights, strict=False)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    _set_rng_state(state["rng"])
    return state["epoch"] + 1, state["result"], best, state["bad_epochs"]
