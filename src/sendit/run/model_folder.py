"""Writing a model folder (RUN_DIR/<label>): what the method trained, the tokenizer, and `sendit_model.json`
(method, base model, preprocessing, classes), written last. serve/model_folder.py loads it back."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from torch import nn

from sendit.fileio import as_write_error
from sendit.methods import get_method
from sendit.run.folder import MODEL_MANIFEST, atomic_write_text
from sendit.train.measure import size_mb
from sendit.verbosity import quiet_libraries

MANIFEST = MODEL_MANIFEST


def save_model_folder(model: nn.Module, tokenizer, folder: Path, method: str, base_model: str, info: dict) -> float:
    """Write a model folder; returns the size in MB of the weights the method saved. The manifest is written last
    and an earlier one removed first, so a folder whose writing failed (a full disk) never looks complete."""
    folder = Path(folder)
    new = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    (folder / MANIFEST).unlink(missing_ok=True)
    try:
        with quiet_libraries():  # transformers' "Writing model shards" bar
            weights = get_method(method).save(model, folder)
        tokenizer.save_pretrained(folder)
        manifest = {"method": method, "base_model": base_model, **method_package(method), **info}
        atomic_write_text(folder / MANIFEST, json.dumps(manifest, indent=2, default=str) + "\n")
    except Exception as e:
        if new:
            shutil.rmtree(folder, ignore_errors=True)
        full = as_write_error(e, folder)  # safetensors' and tokenizers' own types for a full disk
        if full is None or full is e:
            raise
        raise full from e
    return size_mb(weights)


def method_package(method: str) -> dict:
    """The manifest's record of the package that provided a method from another package (none for sendit's own),
    so that a machine without it can say what to install."""
    from sendit.methods.plugins import ORIGINS

    return {"method_package": ORIGINS[method]} if method in ORIGINS else {}
