"""The methods registry: the Method protocol, METHODS (sendit's own and, loaded on first use, other packages'),
register, get_method, and the per-method learning rate and report facts. sendit.methods re-exports it."""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Protocol

from sendit.errors import ConfigError
from sendit.methods.plugins import FAILED, GROUP, load_plugins

if TYPE_CHECKING:
    from torch import nn

# The help of `target_modules`, which several adapter methods declare (alike, so that it is one flag).
TARGET_MODULES_HELP = ("modules the adapter wraps (LoRA, DoRA, IA3), or all-linear; default: the method's choice for "
                       "the architecture (LoRA: the attention projections)")


def target_modules_problem(targets: list | None, module_names: list[str] | None, model: str) -> str | None:
    """--target-modules against the names of the model's leaf modules (peft matches a name or its dotted suffix);
    `module_names` None: not known, not checked."""
    if module_names is None or not targets or targets == ["all-linear"]:
        return None
    missing = [t for t in targets if not any(n == t or n.endswith("." + t) for n in module_names)]
    if not missing:
        return None
    leaves = sorted({n.rsplit(".", 1)[-1] for n in module_names})
    return (f"--target-modules {', '.join(missing)}: {model} has no module of that name. Its module names are: "
            f"{', '.join(leaves)}; or pass all-linear.")


class Method(Protocol):
    name: str
    default_lr: float  # for all-MiniLM-L6-v2 on Sentiment140 (see README, "Learning rates")
    is_adapter: bool  # trains a peft adapter beside the frozen base (export can keep it unmerged)
    display_name: str  # how reports name it (recorded in run.json, so the report needs no torch)
    cost_rank: int  # report order, cheapest first; methods without one follow alphabetically
    # What `sendit tune` searches: parameter -> {"low", "high", "log"} (a float range) or {"choices": [...]}.
    # A parameter is "lr" or any train/method config field (warmup_ratio, lora_r, ...); docs/tuning.md.
    search_space: dict[str, dict]
    # Optional members (read with getattr):
    # - settings: a dataclass of the method's own settings (fields made with `sendit.config.fields.setting`, their
    #   constraints beside them; a name no other setting has, unless another method declares the same field
    #   alike). They join the `method:` section of every config and become flags (--lora-r); its __post_init__
    #   checks them (`sendit.config.fields.check(self)`), raising ConfigError.
    # - check_model(cfg, model_config, model, module_names) -> str | None: what is wrong with the settings for
    #   this model (run before anything trains).
    # - frozen_features: only the head trains, so `sendit tune` trials may train it on features (features.py).

    def prepare(self, model: nn.Module, cfg: Any) -> nn.Module:
        """Freeze/wrap the base model so that exactly this method's parameters train (`cfg`: the method section,
        a config.MethodConfig, which holds the method's settings)."""

    def save(self, model: nn.Module, folder: Path) -> list[Path]:
        """Write what the method trained into folder; return the weight files written."""

    def load(self, folder: Path, base: Callable[[], nn.Module]) -> nn.Module:
        """Rebuild the trained model from folder (base() loads the untouched base model when needed)."""

    def merge(self, model: nn.Module) -> nn.Module:
        """A plain transformers model with the method folded in (export, fast inference)."""


class Registry(dict):
    """name -> Method. The first read also registers the methods of installed packages (their `sendit.methods`
    entry points, methods/plugins.py), so that every reader (get_method, the config's flags, `sendit methods`) sees
    them; registering does not read, so sendit's own method files register without importing any plugin."""

    def _all(self) -> Registry:
        load_plugins(self, register)
        return self

    def __getitem__(self, name: str) -> Method:
        return dict.__getitem__(self._all(), name)

    def __contains__(self, name: object) -> bool:
        return dict.__contains__(self._all(), name)

    def __iter__(self):
        return dict.__iter__(self._all())

    def __len__(self) -> int:
        return dict.__len__(self._all())

    def get(self, name: str, default: Any = None) -> Any:
        return dict.get(self._all(), name, default)

    def keys(self):
        return dict.keys(self._all())

    def values(self):
        return dict.values(self._all())

    def items(self):
        return dict.items(self._all())


METHODS: Registry = Registry()


def register(method: Method) -> Method:
    """Add a method (sendit's own files and plugins alike); a name is taken once, so that a plugin cannot replace a
    method silently."""
    taken = dict.get(METHODS, method.name)
    if taken is not None and taken is not method:
        raise ConfigError(f"a method named '{method.name}' is already registered ({type(taken).__module__}."
                          f"{type(taken).__name__}); give {type(method).__name__} another name.")
    dict.__setitem__(METHODS, method.name, method)
    return method


def learning_rate(name: str, lr: float | None = None, method_lr: dict | None = None) -> float:
    """The rate a method trains at, by one rule for run, tune and bench: --lr for every method, else its
    --method-lr entry, else the method's default."""
    return lr or (method_lr or {}).get(name) or get_method(name).default_lr


def method_info(names: list[str]) -> dict[str, dict]:
    """What the report needs to know of each method, recorded in run.json so that it never imports a method."""
    return {n: {"display_name": get_method(n).display_name, "cost_rank": get_method(n).cost_rank,
                "is_adapter": get_method(n).is_adapter} for n in names}


def get_method(name: str) -> Method:
    if name not in METHODS:
        if name in FAILED:
            raise ConfigError(FAILED[name])
        close = difflib.get_close_matches(name, list(METHODS), n=1)
        hint = (f" Did you mean '{close[0]}'?" if close else
                f" A method from another package is available once that package is installed (it registers its "
                f"methods through the '{GROUP}' entry point; docs/methods.md).")
        broken = f" Method plugins that failed to import: {', '.join(FAILED)}." if FAILED else ""
        raise ConfigError(f"unknown method '{name}'.{hint} Available: {', '.join(METHODS)}.{broken}")
    return METHODS[name]
