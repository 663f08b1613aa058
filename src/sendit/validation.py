"""The range of every option: each function returns the message for a value out of range (naming the flag, the
value and what is allowed), or None. `sendit.config.validate` runs them all once, before any work."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sendit.config import DataConfig, RunConfig


def model_problem(cfg: RunConfig, model_config: Any, module_names: list[str] | None = None) -> str | None:
    """The options whose range is the model's: --max-length against its position limit, --target-modules against
    the names of its leaf modules (peft matches a name or its dotted suffix), --lora-r against its width. Checked
    from the model's config before anything trains (a too-long --max-length used to fail after a whole epoch)."""
    model = f"model '{cfg.model.model}' ({getattr(model_config, 'model_type', 'unknown type')})"
    limit = position_limit(model_config)
    if limit is not None and cfg.data.max_length > limit:
        return (f"--max-length {cfg.data.max_length} is longer than {model} can read: it has {limit} positions. "
                f"Pass --max-length {limit} or less (tweets need about 64 tokens).")
    targets = cfg.method.target_modules or []
    if module_names is not None and targets and targets != ["all-linear"]:
        missing = [t for t in targets if not any(n == t or n.endswith("." + t) for n in module_names)]
        if missing:
            leaves = sorted({n.rsplit(".", 1)[-1] for n in module_names})
            return (f"--target-modules {', '.join(missing)}: {model} has no module of that name. Its module names "
                    f"are: {', '.join(leaves)}; or pass all-linear.")
    width = getattr(model_config, "hidden_size", None)
    if isinstance(width, int) and cfg.method.lora_r > width and {"lora", "dora"} & set(cfg.method.methods):
        return (f"--lora-r {cfg.method.lora_r} is larger than the {width}-wide {model}: a LoRA rank must be at most "
                f"the width it adapts (8-64 is usual).")
    return None


# RoBERTa-style models number positions from padding_idx + 1, so two of their position embeddings are never used.
_POSITION_OFFSET = {"roberta": 2, "xlm-roberta": 2, "camembert": 2, "longformer": 2, "bertweet": 2}


def position_limit(model_config: Any) -> int | None:
    """The longest input in tokens that a model's position embeddings allow, or None when its config says none."""
    for attr in ("max_position_embeddings", "n_positions", "max_seq_len", "seq_length"):
        value = getattr(model_config, attr, None)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value - _POSITION_OFFSET.get(getattr(model_config, "model_type", ""), 0)
    return None


# torch takes a thread count as a C int; far more threads than cores only slows a run down.
MAX_THREADS = 1024
# numpy's legacy seeding (which accelerate's set_seed calls) takes 32-bit seeds.
MAX_SEED = 2**32 - 1


def is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def at_least(flag: str, v: Any, low: int, high: int | None = None) -> str | None:
    """A whole number >= low (and <= high)."""
    if not isinstance(v, int) or isinstance(v, bool):
        return f"{flag} must be a whole number >= {low} (got {v!r})"
    if v < low:
        return f"{flag} must be at least {low} (got {v})"
    if high is not None and v > high:
        return f"{flag} must be at most {high} (got {v})"
    return None


_RANGES = {"> 0": lambda v: v > 0, ">= 0": lambda v: v >= 0, "in [0, 1)": lambda v: 0 <= v < 1,
           "in [0, 1]": lambda v: 0 <= v <= 1, "in (0, 1)": lambda v: 0 < v < 1}


def in_range(flag: str, v: Any, allowed: str) -> str | None:
    """A finite number in one of the _RANGES (nan and inf are refused: they poison every step they touch)."""
    if not is_number(v) or not math.isfinite(v):
        return f"{flag} must be a finite number {allowed} (got {v!r})"
    return None if _RANGES[allowed](v) else f"{flag} must be {allowed} (got {v})"


def seed(flag: str, v: Any) -> str | None:
    if not isinstance(v, int) or isinstance(v, bool) or not 0 <= v <= MAX_SEED:
        return f"{flag} must be a whole number from 0 to {MAX_SEED} (got {v!r})"
    return None


def seeds(seeds: list | None) -> str | None:
    if seeds is None:
        return None
    if not seeds:
        return "--seeds is empty: give seeds like 0,1,2, or leave it out to use --seed"
    bad = next((p for p in (seed("--seeds", s) for s in seeds) if p), None)
    if bad:
        return bad + f"; all seeds: {seeds}"
    dup = sorted({s for s in seeds if seeds.count(s) > 1})
    return f"--seeds lists seed {dup[0]} twice (got {seeds}); each seed trains once" if dup else None


def method_lrs(method_lr: dict) -> str | None:
    for name, v in method_lr.items():
        if not is_number(v) or not math.isfinite(v) or v <= 0:
            return (f"--method-lr values must be numbers > 0 and finite (got {name}: {v!r} in {method_lr}); write it "
                    f"as \"{{lora: 1e-3, bitfit: 2e-3}}\", with a space after each colon")
    return None


def names(flag: str, names: list | None) -> str | None:
    if names is None or all(isinstance(n, str) and n.strip() for n in names):
        return None
    return f"{flag} must be names separated by commas (got {names!r})"


def size(flag: str, v: Any) -> str | None:
    """A row count (a whole number >= 1) or a fraction of the source's rows in (0, 1)."""
    if not is_number(v) or not math.isfinite(v):
        return f"{flag} must be a finite number: a row count, or a fraction in (0, 1) (got {v!r})"
    if v <= 0:
        return f"{flag} must be > 0 (got {v})"
    if v >= 1 and v != int(v):
        return f"{flag} {v} is neither a row count (a whole number) nor a fraction in (0, 1)"
    return None


def fractions_fit(d: DataConfig) -> str | None:
    sizes = {f"--{n.replace('_', '-')}": getattr(d, n) for n in ("train_size", "val_size", "test_size")}
    fractions = {k: v for k, v in sizes.items() if is_number(v) and 0 < v < 1}
    total = sum(fractions.values())
    if total > 1 + 1e-9:
        return (f"{', '.join(f'{k} {v:g}' for k, v in fractions.items())} add up to {total:g}, more than all the "
                f"rows; the fractions must add up to at most 1")
    return None


def label_map(label_map: dict, labels: dict) -> str | None:
    for k, v in label_map.items():
        target = "neutral" if v is None else str(v).strip().lower()
        if target not in labels or isinstance(v, (list, dict)):
            return (f"--label-map maps {k!r} to {v!r}, which is not a label: map each value to 0 or negative, 4 or "
                    f"1 or positive, or 2 or neutral (dropped), e.g. --label-map \"{{'{k}': 0}}\".")
    return None


def choice(flag: str, v: Any, allowed: tuple) -> str | None:
    if v in allowed:
        return None
    names = [str(a) for a in allowed if a is not None]
    return f"{flag} must be {', '.join(names[:-1])} or {names[-1]} (got {v})"
