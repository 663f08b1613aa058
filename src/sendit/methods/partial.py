"""Shared by methods that train a subset of the base model's own parameters (head-only, BitFit).

The saved file holds what trained and also every parameter that the pretrained checkpoint did not supply (a new
head part such as DistilBERT's `pre_classifier`, a pooler absent from a masked-LM checkpoint): those start random
and stay frozen, and without them each load would draw them anew and change the predictions.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    from torch import nn

WEIGHTS = "trained_params.safetensors"


def train_only(model: nn.Module, names: set[str]) -> nn.Module:
    for n, p in model.named_parameters():
        p.requires_grad_(n in names)
    return model


def saved_names(model: nn.Module) -> set[str]:
    """The trained parameters and those no checkpoint supplied. A model not built by `sendit.train.models` (its origin
    unknown) is saved whole: the only choice that is sure to reload to the same predictions."""
    from sendit.train.models import NEW_PARAMETERS

    params = dict(model.named_parameters())
    new = getattr(model, NEW_PARAMETERS, None)
    new = set(params) if new is None else set(new) & set(params)
    return {n for n, p in params.items() if p.requires_grad} | new


def save_trainable(model: nn.Module, folder: Path) -> list[Path]:
    from safetensors.torch import save_file

    keep = saved_names(model)
    state = {n: p.detach().contiguous().cpu() for n, p in model.named_parameters() if n in keep}
    trained = sorted(n for n, p in model.named_parameters() if p.requires_grad)
    path = Path(folder) / WEIGHTS
    save_file(state, str(path), metadata={"trained": json.dumps(trained)})
    return [path]


def load_trainable(folder: Path, base: Callable[[], nn.Module]) -> nn.Module:
    from safetensors import safe_open
    from safetensors.torch import load_file

    from sendit.errors import ModelError

    model = base()
    path = Path(folder) / WEIGHTS
    state = load_file(str(path))
    missing = set(state) - {n for n, _ in model.named_parameters()}
    if missing:
        raise ModelError(f"{folder}: saved parameters {sorted(missing)[:3]} do not exist in the base model; "
                         f"was it trained on another base?")
    model.load_state_dict(state, strict=False)
    with safe_open(str(path), "pt") as f:
        trained = (f.metadata() or {}).get("trained")
    # Folders saved before the metadata existed hold only what trained.
    return train_only(model, set(json.loads(trained)) if trained else set(state))
