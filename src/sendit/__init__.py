"""SEND-IT: parameter-efficient fine-tuning and distillation of small language models for tweet sentiment.

Importing the package is cheap and torch-free: reporting (``sendit.report``) must run on a laptop
without torch, so the public API below is imported on first use.

    import sendit
    model = sendit.load("runs/quick/lora")          # a trained model folder
    model.predict(["what a day!"])
    sendit.run(sendit.load_config(None, {"methods": "lora,bitfit", "epochs": 1, "out": "runs/mine"}))
    sendit.build_report(["runs/quick"])
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

# Public name -> (module, attribute): `dir(sendit)` lists them, `sendit.<name>` imports its module then.
_API = {
    "load": ("sendit.serve.model_folder", "load"),
    "SenditModel": ("sendit.serve.model_folder", "SenditModel"),
    "run": ("sendit.recipes.compare", "run"),
    "evaluate": ("sendit.serve.evaluate", "evaluate_folder"),
    "export": ("sendit.serve.export", "export"),
    "build_report": ("sendit.report", "build_report"),
    "load_config": ("sendit.config.schema", "load_config"),
    "RunConfig": ("sendit.config.schema", "RunConfig"),
    "normalize_tweet": ("sendit.data.dataset", "normalize_tweet"),
}
__all__ = [*_API, "__version__"]


def __getattr__(name: str):
    if name in _API:
        module, attribute = _API[name]
        return getattr(importlib.import_module(module), attribute)
    raise AttributeError(f"module 'sendit' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
