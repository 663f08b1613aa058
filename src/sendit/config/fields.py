"""How a setting is declared, read and checked: the public API of every settings dataclass in sendit (the run's
sections, distill, tune, bench, and each method's own settings in `sendit/methods/`).

    lora_r: int = setting(8, "LoRA/DoRA rank", low=1)

A field made by `setting()` carries its one-line help (the flag's `--help`) and its constraint (`low`/`high`,
`choices` or a `check` function), so that `problem(obj)` checks any settings object by one generic pass, naming the
flag (`--lora-r`), the value and what is allowed. `coerce` turns a YAML or command-line value into the field's type.

A leaf: it imports nothing of sendit but the errors, so that method files can use it without importing the config
that reads them.
"""

from __future__ import annotations

import codecs
import dataclasses
import difflib
import math
from dataclasses import field
from typing import Any, Callable

import yaml

from sendit.errors import ConfigError

# torch takes a thread count as a C int; far more threads than cores only slows a run down.
MAX_THREADS = 1024
# numpy's legacy seeding (which accelerate's set_seed calls) takes 32-bit seeds.
MAX_SEED = 2**32 - 1
# What a model may be asked to run in: 'auto' picks per device (sendit.train.device.resolve_precision).
PRECISIONS = ("auto", "bf16", "fp32")


def setting(default: Any, help: str, *, low: float | None = None, high: float | None = None,
            open_low: bool = False, open_high: bool = False, choices: tuple | None = None,
            check: Callable[[str, Any], str | None] | None = None, items: str | None = None,
            **meta: Any) -> Any:
    """A settings field: its default, its one-line help and its constraint, checked by `problem()`.

    Args:
        default: the value when none is given (a list or dict is copied for every instance).
        help: one line; the flag's --help.
        low, high: the allowed range (whole numbers for an int field, finite numbers otherwise); `open_low` /
            `open_high` exclude the bound (`low=0, open_low=True`: > 0).
        choices: the allowed values (None among them: the setting may be unset).
        check: `check(flag, value) -> message | None` for any other constraint.
        items: the type of a list's items or a mapping's values ('int', 'str' or 'number'), for `coerce`.
        meta: more metadata, e.g. `metavar` (the flag's value name) or `example` (of a mapping).
    """
    constraint = {k: v for k, v in dict(low=low, high=high, choices=choices, check=check, items=items).items()
                  if v is not None}
    metadata = {"help": help, **constraint, **meta, **({"open_low": True} if open_low else {}),
                **({"open_high": True} if open_high else {})}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda d=default: type(d)(d), metadata=metadata)
    return field(default=default, metadata=metadata)


def reuse(f: dataclasses.Field, default: Any = dataclasses.MISSING, help: str | None = None) -> Any:
    """Another dataclass's field with its help and constraint (the same flag, checks and messages), optionally
    with its own default or help: how `sendit bench` and the method section declare the run's settings once."""
    default = field_default(f) if default is dataclasses.MISSING else default
    metadata = {**f.metadata, **({"help": help} if help else {})}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda d=default: type(d)(d), metadata=metadata)
    return field(default=default, metadata=metadata)


def field_default(f: dataclasses.Field) -> Any:
    """A field's default value, also when it is made by a factory (lists, mappings)."""
    return f.default_factory() if f.default is dataclasses.MISSING else f.default


def type_name(f: dataclasses.Field) -> str:
    """'int', 'float | None', ...: the annotation as written (a file without `from __future__ import annotations`
    gives classes)."""
    return f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))


def flag(name: str) -> str:
    return f"--{name.replace('_', '-')}"


# ------------------------------------------------------------------------------------------------ the checks
def problem(obj: Any, names: tuple[str, ...] | None = None) -> str | None:
    """The first field of a settings object (all of them, or `names`) out of its declared constraint."""
    for f in dataclasses.fields(obj):
        if names is None or f.name in names:
            message = field_problem(f, getattr(obj, f.name))
            if message:
                return message
    return None


def check(obj: Any) -> None:
    """`problem(obj)` as a ConfigError: what a settings class's `__post_init__` calls."""
    message = problem(obj)
    if message:
        raise ConfigError(message)


def field_problem(f: dataclasses.Field, value: Any) -> str | None:
    """What is wrong with `value` for field `f` (its choices, its range, its own check), or None."""
    m, name = f.metadata, flag(f.name)
    if "choices" in m:
        message = choice(name, value, m["choices"])
        if message:
            return message
    if value is None and field_default(f) is None:
        return None  # an optional setting left unset
    if "low" in m or "high" in m:
        if type_name(f).startswith("int"):
            message = at_least(name, value, m.get("low", 0), m.get("high"))
        else:
            message = in_range(name, value, m.get("low"), m.get("high"), m.get("open_low", False),
                               m.get("open_high", False))
        if message:
            return message
    return m["check"](name, value) if "check" in m else None


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


def in_range(flag: str, v: Any, low: float | None = None, high: float | None = None, open_low: bool = False,
             open_high: bool = False) -> str | None:
    """A finite number within [low, high] (nan and inf are refused: they poison every step they touch)."""
    if high is None:
        allowed = f"{'>' if open_low else '>='} {low:g}"
    else:
        allowed = f"in {'(' if open_low else '['}{low:g}, {high:g}{')' if open_high else ']'}"
    if not is_number(v) or not math.isfinite(v):
        return f"{flag} must be a finite number {allowed} (got {v!r})"
    above = low is None or (v > low if open_low else v >= low)
    below = high is None or (v < high if open_high else v <= high)
    return None if above and below else f"{flag} must be {allowed} (got {v})"


def choice(flag: str, v: Any, allowed: tuple) -> str | None:
    if v in allowed:
        return None
    names = [str(a) for a in allowed if a is not None]
    return f"{flag} must be {', '.join(names[:-1])} or {names[-1]} (got {v})"


def seed(flag: str, v: Any) -> str | None:
    if not isinstance(v, int) or isinstance(v, bool) or not 0 <= v <= MAX_SEED:
        return f"{flag} must be a whole number from 0 to {MAX_SEED} (got {v!r})"
    return None


def names(flag: str, v: list | None) -> str | None:
    """A list of non-empty names (methods, module names)."""
    if v is None or all(isinstance(n, str) and n.strip() for n in v):
        return None
    return f"{flag} must be names separated by commas (got {v!r})"


def codec(flag: str, v: Any) -> str | None:
    """'auto' or a text encoding Python knows."""
    if v == "auto":
        return None
    try:
        codecs.lookup(v)
    except (LookupError, TypeError):
        return f"{flag} {v!r} is not an encoding Python knows; use auto, utf-8 or latin-1"
    return None


# ------------------------------------------------------------------------------------------------ reading values
def suggest(name: str, options: list[str]) -> str:
    """' Did you mean ...?' for a misspelt name, or ''."""
    close = difflib.get_close_matches(name, options, n=1)
    return f" Did you mean '{close[0]}'?" if close else ""


def coerce(cls: type, name: str, value: Any) -> Any:
    """Turn YAML/CLI values into the field's type (e.g. 'lora,bitfit' -> list, '1e-3' -> float)."""
    f = next(f for f in dataclasses.fields(cls) if f.name == name)
    t, items = type_name(f), f.metadata.get("items")
    if value is None or (isinstance(value, str) and value.lower() in ("none", "null") and "None" in t):
        return None
    if t.startswith("list"):
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        return [_item(items, name, v) for v in value]
    if t.startswith("dict"):
        example = f.metadata.get("example", "{a: 1}")
        if isinstance(value, str):
            try:
                value = yaml.safe_load(value) or {}
            except yaml.YAMLError:
                raise ConfigError(f"'{name}' must be a mapping like {example}, got {value!r} (not valid YAML: check "
                                  f"the braces, colons and quotes)") from None
        if not isinstance(value, dict):
            raise ConfigError(f"'{name}' must be a mapping like {example}, got {value!r}")
        return {k: _item(items, name, v) for k, v in value.items()}
    if t.startswith("bool"):
        if isinstance(value, str):
            if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ConfigError(f"'{name}' must be true or false, got {value!r}")
            return value.lower() in ("true", "1", "yes")
        return bool(value)
    if t.startswith("int"):
        return integer(name, value)
    if t.startswith("float"):
        try:
            if isinstance(value, bool):
                raise TypeError
            return float(value)
        except (TypeError, ValueError, OverflowError):
            raise ConfigError(f"'{name}' must be a number, got {value!r} ({flag(name)} takes a number such as 0.5 "
                              f"or 1e-3)") from None
    if t.startswith("str") and isinstance(value, (list, dict)):
        raise ConfigError(f"'{name}' must be a single value, got {value!r}")
    return value if not isinstance(value, (int, float)) or not t.startswith("str") else str(value)


def _item(kind: str | None, name: str, value: Any) -> Any:
    if kind == "int":
        return integer(name, value)
    if kind == "str":  # YAML reads [0, 2] as numbers
        return str(value).strip()
    if kind == "number" and isinstance(value, str):  # YAML reads 1e-3 (no dot) as a string
        try:
            return float(value)
        except ValueError:
            return value  # the field's check names it
    return value


def integer(name: str, value: Any) -> int:
    """'3', 3 and 3.0 are 3; 3.5, 'abc', inf, nan and true are mistakes (int() would truncate or crash)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    number = value
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            pass
        try:
            number = float(value)
        except ValueError:
            pass
    if isinstance(number, float) and number.is_integer():
        return int(number)
    raise ConfigError(f"'{name}' must be an integer, got {value!r} ({flag(name)} takes a whole number such as 3)")
