"""The constraints of the run's settings that are more than a range or a list of choices (`setting(check=...)`
in `sendit.config.schema` names them beside their fields), the checks across fields, and the options whose range is
the model's. Each function returns the message for a value out of range (naming the flag, the value and what is
allowed), or None."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from sendit.config.fields import is_number, names, seed

if TYPE_CHECKING:
    from sendit.config.schema import DataConfig, RunConfig


def model_problem(cfg: RunConfig, model_config: Any, module_names: list[str] | None = None) -> str | None:
    """The options whose range is the model's: --max-length against its position limit, then each chosen
    method's own `check_model` (LoRA: --target-modules against the model's module names, --lora-r against its
    width). Checked from the model's config before anything trains (a too-long --max-length used to fail after a
    whole epoch)."""
    from sendit.methods import get_method  # the registry reads the methods' settings, which read config.fields

    model = f"model '{cfg.model.model}' ({getattr(model_config, 'model_type', 'unknown type')})"
    limit = position_limit(model_config)
    if limit is not None and cfg.data.max_length > limit:
        return (f"--max-length {cfg.data.max_length} is longer than {model} can read: it has {limit} positions. "
                f"Pass --max-length {limit} or less (tweets need about 64 tokens).")
    for name in cfg.method.methods:
        check = getattr(get_method(name), "check_model", None)
        problem = check(cfg.method, model_config, model, module_names) if check else None
        if problem:
            return problem
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


def methods(flag: str, v: list | None) -> str | None:
    """--methods: names, at least one (each name is checked against the registry where it is used)."""
    return names(flag, v) or (None if v else f"{flag} is empty: name at least one method, e.g. {flag} lora,bitfit")


def seeds(flag: str, v: list | None) -> str | None:
    if v is None:
        return None
    if not v:
        return f"{flag} is empty: give seeds like 0,1,2, or leave it out to use --seed"
    bad = next((p for p in (seed(flag, s) for s in v) if p), None)
    if bad:
        return bad + f"; all seeds: {v}"
    dup = sorted({s for s in v if v.count(s) > 1})
    return f"{flag} lists seed {dup[0]} twice (got {v}); each seed trains once" if dup else None


def method_lrs(flag: str, method_lr: dict) -> str | None:
    for name, v in method_lr.items():
        if not is_number(v) or not math.isfinite(v) or v <= 0:
            return (f"{flag} values must be numbers > 0 and finite (got {name}: {v!r} in {method_lr}); write it "
                    f"as \"{{lora: 1e-3, bitfit: 2e-3}}\", with a space after each colon")
    return None


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


def label_map(label_map: dict, labels: dict, classes: list | None = None) -> str | None:
    names = {str(c).strip().lower() for c in classes or ()}
    for k, v in label_map.items():
        target = "neutral" if v is None else str(v).strip().lower()
        if (target not in labels and target not in names) or isinstance(v, (list, dict)):
            also = f", or a name of --labels ({', '.join(map(str, classes))})" if classes else ""
            return (f"--label-map maps {k!r} to {v!r}, which is not a label: map each value to 0 or negative, 4 or "
                    f"1 or positive, or 2 or neutral (dropped){also}, e.g. --label-map \"{{'{k}': 0}}\".")
    return None


def labels(flag: str, classes: list | None) -> str | None:
    """--labels: at least two names, none empty, none twice (names are compared in any case)."""
    if classes is None:
        return None
    names = [str(c).strip() for c in classes]
    folded = [n.lower() for n in names]
    if len(names) < 2 or "" in names or len(set(folded)) < len(folded):
        twice = sorted({n for n in folded if folded.count(n) > 1})
        why = (f"{twice[0]!r} is given twice" if twice else "a name is empty" if "" in names
               else "a classifier needs at least two classes")
        return (f"{flag} {','.join(names)}: {why}. Give two or more distinct class names in order, e.g. "
                f"{flag} negative,neutral,positive.")
    return None
