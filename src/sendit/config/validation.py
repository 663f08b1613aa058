"""The range of every option: each function returns the message for a value out of range (naming the flag, the
value and what is allowed), or None. `run_problem` checks a whole run config; `sendit.config.schema.validate` runs it
once, before any work, and raises its message as a ConfigError."""

from __future__ import annotations

import codecs
import math
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sendit.config.schema import DataConfig, RunConfig


def run_problem(cfg: RunConfig) -> str | None:
    """The first option of a run config out of its range: the message names the flag, the value and what is
    allowed. (A method's own settings are checked by the method's settings class; the model's limits by
    `model_problem`.)"""
    from sendit.config.schema import HELDOUT_NAME, LABELS, test_set_name

    t, d, m = cfg.train, cfg.data, cfg.method
    problems = [
        at_least("--epochs", t.epochs, 1), at_least("--batch-size", t.batch_size, 1),
        at_least("--grad-accum", t.grad_accum, 1), at_least("--eval-batch-size", t.eval_batch_size, 1),
        at_least("--patience", t.patience, 1), at_least("--log-every", t.log_every, 1),
        None if t.threads is None else at_least("--threads", t.threads, 1, MAX_THREADS),
        None if t.lr is None else in_range("--lr", t.lr, "> 0"),
        in_range("--weight-decay", t.weight_decay, ">= 0"),
        in_range("--warmup-ratio", t.warmup_ratio, "in [0, 1)"),
        in_range("--max-grad-norm", t.max_grad_norm, ">= 0"),  # negative: gradient ascent
        seed("--seed", t.seed), seed("--split-seed", d.split_seed), seeds(t.seeds),
        method_lrs(m.method_lr), names("--methods", m.methods),
        None if m.methods else "--methods is empty: name at least one method, e.g. --methods lora,bitfit",
        at_least("--max-length", d.max_length, 8),
        *(size(f"--{n.replace('_', '-')}", getattr(d, n)) for n in ("train_size", "val_size", "test_size")),
        fractions_fit(d), labels(d.labels), label_map(d.label_map, LABELS, d.labels),
        choice("--class-balance", d.class_balance, ("none", "weight", "sample")),
        choice("--precision", t.precision, ("auto", "bf16", "fp32")),
        choice("--bad-rows", d.bad_rows, ("error", "skip")),
        choice("--tracker", t.tracker, (None, "tensorboard", "mlflow", "wandb")),
        None if d.encoding == "auto" or _is_codec(d.encoding) else
        f"--encoding {d.encoding!r} is not an encoding Python knows; use auto, utf-8 or latin-1",
        None if test_set_name(d) != HELDOUT_NAME else
        f"--test-name '{HELDOUT_NAME}' is the held-out split's name; choose another name for the --test-file test set",
    ]
    return next((p for p in problems if p), None)


def model_problem(cfg: RunConfig, model_config: Any, module_names: list[str] | None = None) -> str | None:
    """The options whose range is the model's: --max-length against its position limit, then each chosen
    method's own `check_model` (LoRA: --target-modules against the model's module names, --lora-r against its
    width). Checked from the model's config before anything trains (a too-long --max-length used to fail after a
    whole epoch)."""
    from sendit.methods import get_method

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


def target_modules(targets: list | None, module_names: list[str] | None, model: str) -> str | None:
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


def label_map(label_map: dict, labels: dict, classes: list | None = None) -> str | None:
    names = {str(c).strip().lower() for c in classes or ()}
    for k, v in label_map.items():
        target = "neutral" if v is None else str(v).strip().lower()
        if (target not in labels and target not in names) or isinstance(v, (list, dict)):
            also = f", or a name of --labels ({', '.join(map(str, classes))})" if classes else ""
            return (f"--label-map maps {k!r} to {v!r}, which is not a label: map each value to 0 or negative, 4 or "
                    f"1 or positive, or 2 or neutral (dropped){also}, e.g. --label-map \"{{'{k}': 0}}\".")
    return None


def labels(classes: list | None) -> str | None:
    """--labels: at least two names, none empty, none twice (names are compared in any case)."""
    if classes is None:
        return None
    names = [str(c).strip() for c in classes]
    folded = [n.lower() for n in names]
    if len(names) < 2 or "" in names or len(set(folded)) < len(folded):
        twice = sorted({n for n in folded if folded.count(n) > 1})
        why = (f"{twice[0]!r} is given twice" if twice else "a name is empty" if "" in names
               else "a classifier needs at least two classes")
        return (f"--labels {','.join(names)}: {why}. Give two or more distinct class names in order, e.g. "
                f"--labels negative,neutral,positive.")
    return None


def choice(flag: str, v: Any, allowed: tuple) -> str | None:
    if v in allowed:
        return None
    names = [str(a) for a in allowed if a is not None]
    return f"{flag} must be {', '.join(names[:-1])} or {names[-1]} (got {v})"


def _is_codec(name: str) -> bool:
    try:
        codecs.lookup(name)
    except (LookupError, TypeError):
        return False
    return True
