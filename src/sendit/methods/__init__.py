"""The method registry. A method differs from another only in which parameters train and how they are saved;
all of them plug into the one training loop in `sendit.engine`."""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Callable, Protocol

from torch import nn

from sendit.config import ConfigError, MethodConfig


class Method(Protocol):
    name: str
    default_lr: float  # for all-MiniLM-L6-v2 on Sentiment140 (see README, "Learning rates")

    def prepare(self, model: nn.Module, cfg: MethodConfig) -> nn.Module:
        """Freeze/wrap the base model so that exactly this method's parameters train."""

    def save(self, model: nn.Module, folder: Path) -> list[Path]:
        """Write what the method trained into folder; return the weight files written."""

    def load(self, folder: Path, base: Callable[[], nn.Module]) -> nn.Module:
        """Rebuild the trained model from folder (base() loads the untouched base model when needed)."""

    def merge(self, model: nn.Module) -> nn.Module:
        """A plain transformers model with the method folded in (export, fast inference)."""


METHODS: dict[str, Method] = {}


def register(method: Method) -> Method:
    METHODS[method.name] = method
    return method


def get_method(name: str) -> Method:
    if name not in METHODS:
        close = difflib.get_close_matches(name, list(METHODS), n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        raise ConfigError(f"unknown method '{name}'.{hint} Available: {', '.join(METHODS)}.")
    return METHODS[name]


from sendit.methods import bitfit, full, head, ia3, lora  # noqa: E402,F401  (each file registers itself)
