"""SEND-IT: parameter-efficient fine-tuning and distillation of small language models for tweet sentiment.

Importing the package is cheap and torch-free: reporting (``sendit.report``) must run on a laptop
without torch, so the model-facing API is imported lazily.
"""

__version__ = "0.1.0"

__all__ = ["load", "__version__"]


def __getattr__(name: str):
    if name == "load":
        from sendit.predict import load

        return load
    raise AttributeError(f"module 'sendit' has no attribute {name!r}")
