"""Config fields as command-line flags, for every command: one `--flag-name` per dataclass field, its help text
from the field, its value name from the field's name or type, and the value None unless given, so that a flag
overrides a config file only when it is set."""

from __future__ import annotations

import argparse
import dataclasses
from typing import Iterable

from sendit.config.fields import field_default

# Value names of the str fields (the others follow from their type), as --help shows them: `--data SOURCE`.
_VALUE_NAMES = {
    "data": "SOURCE", "test_file": "PATH", "extra_train_file": "PATH", "teacher": "PATH", "model": "MODEL",
    "student_model": "MODEL", "encoding": "CODEC", "bad_rows": "{error,skip}",
    "tracker": "{tensorboard,mlflow}", "train_size": "N", "val_size": "N", "test_size": "N",
}


def value_name(name: str, f: dataclasses.Field) -> str:
    """The placeholder of a config flag in --help: the field's own (metadata "metavar"), else one by name or type."""
    if "metavar" in f.metadata:
        return f.metadata["metavar"]
    if name in _VALUE_NAMES:
        return _VALUE_NAMES[name]
    t = str(f.type)
    for prefix, value in (("bool", "{true,false}"), ("int", "N"), ("float", "FLOAT"), ("list", "LIST"),
                          ("dict", "MAPPING")):
        if t.startswith(prefix):
            return value
    return "NAME"


def add_field_flags(p: argparse.ArgumentParser, fields: Iterable[dataclasses.Field], dest_prefix: str = "",
                    skip: tuple[str, ...] = (), switches: bool = False) -> None:
    """`--name` for each field (stored as `dest_prefix + name`); with `switches`, a bool field is a plain switch
    (`--smoke`) rather than a flag taking true/false."""
    for f in fields:
        if f.name in skip:
            continue
        default = field_default(f)
        flag, dest = f"--{f.name.replace('_', '-')}", dest_prefix + f.name
        if switches and isinstance(default, bool):
            p.add_argument(flag, dest=dest, action="store_true", help=f.metadata["help"])
            continue
        shown = ",".join(map(str, default)) if isinstance(default, list) else default
        suffix = "" if default in (None, {}, []) else f" (default: {shown})"
        p.add_argument(flag, dest=dest, default=None, metavar=value_name(f.name, f), help=f.metadata["help"] + suffix)


def add_config_flags(p: argparse.ArgumentParser, skip: tuple[str, ...] = (),
                     out_help: str = "run folder (default: runs/<timestamp>)") -> None:
    """--config, --out and a flag for every field of a run config."""
    from sendit.config.schema import field_index

    p.add_argument("--config", metavar="PATH", help="YAML config file or shipped preset name (quick, paper, ...); "
                   "flags override it")
    p.add_argument("--out", metavar="DIR", help=out_help)
    add_field_flags(p, [f for _, f in field_index().values()], skip=skip)


def config_overrides(args: argparse.Namespace, with_out: bool = True) -> dict:
    """The run-config flags that were given (and --out, unless the command places its output itself), by name."""
    from sendit.config.schema import field_index

    names = set(field_index())
    out = {k: v for k, v in vars(args).items() if k in names and v is not None}
    if with_out and getattr(args, "out", None):
        out["out"] = args.out
    return out


def add_tune_flags(p: argparse.ArgumentParser) -> None:
    """One flag per TuneConfig field (`sendit tune`; the run-config flags are added beside them)."""
    from sendit.config.tune import TuneConfig

    add_field_flags(p, dataclasses.fields(TuneConfig), dest_prefix="tune_")


def tune_overrides(args: argparse.Namespace) -> dict:
    """The tune section's flags that were given."""
    from sendit.config.tune import TuneConfig

    return {f.name: getattr(args, f"tune_{f.name}") for f in dataclasses.fields(TuneConfig)
            if getattr(args, f"tune_{f.name}", None) is not None}
