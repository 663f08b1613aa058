"""Saved model folders: loading them back and predicting with them (run/model_folder.py writes them).

A model folder (RUN_DIR/<method>) holds `sendit_model.json` (method, base model, preprocessing), the tokenizer,
and what the method trained: a peft adapter (lora, dora, ia3), the trained tensors (bitfit, head), or the whole
model (full).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from sendit.errors import ModelError
from sendit.methods import Method
from sendit.run.folder import MODEL_MANIFEST as MANIFEST  # noqa: E402
from sendit.serve.folder_model import FolderModel
from sendit.serve.onnx_folder import OnnxModel, is_onnx_folder, load_onnx
from sendit.train.device import default_device, resolve_precision
from sendit.train.engine import Predictions, predict
from sendit.train.models import load_model, load_tokenizer
from sendit.verbosity import quiet_libraries


@dataclass
class SenditModel(FolderModel):
    """A trained classifier: `sendit.load(RUN_DIR / "lora").predict(["what a day!"])`."""

    model: nn.Module
    tokenizer: object
    manifest: dict
    precision: str  # 'bf16' or 'fp32': this model's, whatever other models in the process use

    def __repr__(self) -> str:  # one line: the dataclass default would print the whole network
        m = self.manifest
        device = next(self.model.parameters()).device
        return (f"SenditModel(method={m.get('trained_method', m['method'])!r}, base_model={m['base_model']!r}, "
                f"precision={self.precision!r}, device='{device}')")

    def predict_proba(self, texts: list[str], batch_size: int = 256, progress: bool = True) -> Predictions:
        texts = [texts] if isinstance(texts, str) else list(texts)  # predict("so happy") must not mean 8 texts
        return predict(self.model, self.encode(texts), None, batch_size, precision=self.precision,
                       desc="predict" if progress else None)



def load(folder: str | Path, merge: bool = True, precision: str = "auto",
         trust_remote_code: bool = False) -> SenditModel | OnnxModel:
    """Load a model folder written by `sendit run`/`train` (RUN_DIR/<method>) or `sendit export`; an ONNX export
    (model.onnx) comes back as an OnnxModel, which predicts with ONNX Runtime through the same methods.

    Args:
        folder: the method's model folder.
        merge: fold adapters into the base weights (faster inference, same predictions).
        precision: 'auto' (bf16 where the hardware has it, or what SENDIT_PRECISION forces), 'bf16' or 'fp32';
            it belongs to this model: models of different precisions can be loaded side by side.
        trust_remote_code: allow custom model code from the hub for the base model.
    """
    folder = Path(folder)
    if is_onnx_folder(folder):
        return load_onnx(folder, precision)
    manifest_path = folder / MANIFEST
    if not manifest_path.exists():
        hint = ""
        if folder.is_dir():
            subs = sorted(p.parent.name for p in folder.glob(f"*/{MANIFEST}"))
            if subs:
                hint = f" It looks like a run folder: pass one of its model folders, e.g. {folder / subs[0]}."
        raise ModelError(f"'{folder}' is not a sendit model folder (no {MANIFEST}).{hint}")
    try:
        manifest = json.loads(manifest_path.read_text())
        manifest["method"], manifest["base_model"]
    except (ValueError, KeyError, TypeError) as e:
        raise ModelError(f"{manifest_path} is damaged ({type(e).__name__}: {e}); it must be the JSON written by "
                         f"sendit run, with 'method' and 'base_model'. Re-train or re-export the model.") from None
    tokenizer = load_tokenizer(str(folder))
    method = method_of(folder, manifest["method"], manifest.get("method_package"))
    base = base_model_path(folder, manifest)
    with quiet_libraries():  # peft's FutureWarnings about transformers internals
        classes = manifest.get("labels")
        model = method.load(folder, lambda: load_model(base, tokenizer, trust_remote_code, classes=classes))
        model.config.pad_token_id = tokenizer.pad_token_id
        if merge:
            model = method.merge(model)
    device = default_device()
    model.to(device).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return SenditModel(model, tokenizer, manifest, resolve_precision(precision, device))


def method_of(folder: Path, name: str, package: dict | None) -> Method:
    """The method that trained a model folder; another package's method is found through its entry point."""
    from sendit.methods import METHODS
    from sendit.methods.plugins import FAILED, GROUP

    if name in METHODS:
        return METHODS[name]
    if name in FAILED:
        raise ModelError(f"{folder} was trained with the method '{name}', but {FAILED[name]}")
    package = package if isinstance(package, dict) else {}  # folders of sendit's own methods have none
    dist, version = package.get("name"), package.get("version")
    install = (f"install the package that provides it (pip install '{dist}=={version}')" if dist and version else
               f"install the package that provides it (pip install {dist})" if dist else
               "install the package that provides it")
    raise ModelError(f"{folder} was trained with the method '{name}', which is not installed here. To load it, "
                     f"{install}: such a package registers its methods through the '{GROUP}' entry point "
                     f"(docs/methods.md). Installed methods: {', '.join(METHODS)}.")


def base_model_path(folder: str | Path, manifest: dict) -> str:
    """The manifest's base model; "./base"-style paths are relative to the model folder, so it can be moved."""
    base = str(manifest["base_model"])
    return str(Path(folder) / base) if base.startswith(("./", "../")) else base
