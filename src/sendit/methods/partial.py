"""Shared by methods that train a subset of the base model's own parameters (head-only, BitFit)."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from safetensors.torch import load_file, save_file
from torch import nn

from sendit.models import ModelError

WEIGHTS = "trained_params.safetensors"


def train_only(model: nn.Module, names: set[str]) -> nn.Module:
    for n, p in model.named_parameters():
        p.requires_grad_(n in names)
    return model


def save_trainable(model: nn.Module, folder: Path) -> list[Path]:
    state = {n: p.detach().contiguous().cpu() for n, p in model.named_parameters() if p.requires_grad}
    path = Path(folder) / WEIGHTS
    save_file(state, str(path))
    return [path]


def load_trainable(folder: Path, base: Callable[[], nn.Module]) -> nn.Module:
    model = base()
    state = load_file(str(Path(folder) / WEIGHTS))
    missing = set(state) - {n for n, _ in model.named_parameters()}
    if missing:
        raise ModelError(f"{folder}: saved parameters {sorted(missing)[:3]} do not exist in the base model; "
                         f"was it trained on another base?")
    model.load_state_dict(state, strict=False)
    return train_only(model, set(state))
