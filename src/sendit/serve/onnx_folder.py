"""ONNX model folders (written by `sendit export --format onnx`): loading one and predicting with ONNX Runtime.

The folder holds model.onnx (logits from input_ids and attention_mask; fp32, or int8 after `--quantize int8`),
config.json, the tokenizer with the tweet normalisation built in, and sendit_model.json. `sendit predict`,
`sendit evaluate` and `sendit.load` take it like any model folder; torch is not used to predict.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sendit.errors import ConfigError
from sendit.serve.folder_model import FolderModel

ONNX_FILE = "model.onnx"
from sendit.run.folder import MODEL_MANIFEST as MANIFEST  # noqa: E402

INSTALL = "pip install 'sendit[onnx]'"


def is_onnx_folder(folder: str | Path) -> bool:
    return (Path(folder) / ONNX_FILE).is_file()


def require_onnx(export: bool = False) -> None:
    """ONNX Runtime (and, to export, onnx and onnxscript, which torch.onnx's exporter needs) is an optional extra."""
    import importlib.util

    needed = ["onnxruntime"] + (["onnx", "onnxscript"] if export else [])
    missing = [name for name in needed if importlib.util.find_spec(name) is None]
    if missing:
        what = "exporting to ONNX" if export else "predicting with an ONNX folder"
        raise ConfigError(f"{what} needs {', '.join(missing)}, which is not installed; install the ONNX extra "
                          f"with {INSTALL} (onnx, onnxruntime, onnxscript) and run the command again.")


@dataclass
class OnnxModel(FolderModel):
    """An exported ONNX folder with the predict API of sendit.serve.model_folder.SenditModel."""

    session: object  # onnxruntime.InferenceSession
    tokenizer: object
    manifest: dict
    precision: str  # 'fp32' or 'int8': the weights in model.onnx

    def __repr__(self) -> str:
        m = self.manifest
        return (f"OnnxModel(method={m.get('trained_method', m['method'])!r}, base_model={m['base_model']!r}, "
                f"precision={self.precision!r})")

    def predict_proba(self, texts: list[str], batch_size: int = 256, progress: bool = True):
        """Logits for every text (sendit.train.engine.Predictions), batched longest first as sendit.train.engine.predict does.
        `progress` is accepted for SenditModel's signature; ONNX Runtime predicts without a bar."""
        from sendit.train.batching import token_batches
        from sendit.train.engine import MAX_TOKENS, Predictions

        texts = [texts] if isinstance(texts, str) else list(texts)
        data = self.encode(texts)
        lengths = data.lengths
        logits = np.zeros((len(data), len(self.classes)), dtype=np.float32)
        t0 = time.perf_counter()
        for batch in token_batches(lengths, batch_size, MAX_TOKENS["cpu"]):
            width = int(lengths[batch].max())
            ids = np.full((len(batch), width), data.pad_id, dtype=np.int64)
            mask = np.zeros((len(batch), width), dtype=np.int64)
            for row, i in enumerate(batch):
                ids[row, : lengths[i]] = data.input_ids[i]
                mask[row, : lengths[i]] = 1
            logits[batch] = self.session.run(["logits"], {"input_ids": ids, "attention_mask": mask})[0]
        return Predictions(logits, time.perf_counter() - t0, int(lengths.sum()))


def load_onnx(folder: str | Path, precision: str = "auto", manifest: dict | None = None) -> OnnxModel:
    """Load an ONNX folder. Its precision is fixed at export (fp32, or int8 with --quantize int8): `precision` may be
    'auto' or the folder's own, nothing else. `manifest`: the one the export is about to write (for its check)."""
    require_onnx()
    import onnxruntime as ort
    import torch

    from sendit.errors import ModelError
    from sendit.train.models import load_tokenizer

    folder = Path(folder)
    try:
        manifest = manifest or json.loads((folder / MANIFEST).read_text())
        manifest["method"], manifest["base_model"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ModelError(f"{folder / MANIFEST} is missing or damaged ({type(e).__name__}: {e}); an ONNX folder "
                         f"needs the one sendit export --format onnx writes. Export the model again.") from None
    own = manifest.get("quantize") or "fp32"
    if precision not in ("auto", own):
        raise ConfigError(f"{folder} is an ONNX export in {own}, fixed when it was exported; drop --precision "
                          f"{precision} (or export again with another --quantize).")
    options = ort.SessionOptions()
    # The thread count sendit's torch path uses (OMP_NUM_THREADS / torch.set_num_threads), so that the two engines
    # are compared on the same cores.
    options.intra_op_num_threads = torch.get_num_threads()
    session = ort.InferenceSession(str(folder / ONNX_FILE), options, providers=["CPUExecutionProvider"])
    return OnnxModel(session, load_tokenizer(str(folder)), manifest, own)
