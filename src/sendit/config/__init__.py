"""The one config system: the typed schema (`schema`), the public `setting()` helper that declares a field with
its help and constraint (`fields`, a leaf that method files import), the checks across fields, the flags made from
the fields, and the distill and tune sections.

The names below are imported when first used, so that `sendit.config.fields` stays a leaf: a method file that
imports it does not load the schema, which reads the methods' registry.
"""

from __future__ import annotations

import importlib

_API = {
    "setting": "sendit.config.fields", "check": "sendit.config.fields", "coerce": "sendit.config.fields",
    "suggest": "sendit.config.fields", "PRECISIONS": "sendit.config.fields",
    "RunConfig": "sendit.config.schema", "DataConfig": "sendit.config.schema", "ModelConfig": "sendit.config.schema",
    "TrainConfig": "sendit.config.schema", "MethodConfig": "sendit.config.schema",
    "load_config": "sendit.config.schema", "from_dict": "sendit.config.schema",
    "DistillConfig": "sendit.config.distill", "TuneConfig": "sendit.config.tune",
}
__all__ = list(_API)


def __getattr__(name: str):
    if name in _API:
        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'sendit.config' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
