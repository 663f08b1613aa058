"""`sendit export --format onnx [--quantize int8]`: the merged model as model.onnx, checked against the sendit model.

The graph is torch.onnx's export (torch.export, dynamic batch and sequence axes) of the merged classifier:
input_ids and attention_mask (int64, right-padded) in, logits out. A decoder (OPT) pools the last non-pad token
inside the graph, as transformers does, from the pad_token_id in config.json. `--quantize int8` is ONNX Runtime's
dynamic quantisation (int8 weights, activations quantised per batch at run time). Before the folder is renamed
into place, both models predict the same tweets and the export is refused below --min-agreement.
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path
from typing import Callable

import numpy as np

from sendit.errors import ConfigError
from sendit.serve.hf_folder import write_merged
from sendit.serve.onnx_folder import ONNX_FILE, load_onnx

PARITY_ROWS = 1000  # resolves agreement to 0.1 %, and takes seconds even for OPT-125m on 2 cores
QUANTIZE = ("int8",)


def parity_texts(src: Path, manifest: dict) -> tuple[list[str], str]:
    """The run's own test tweets (its predictions CSV, when the model folder sits in its run folder), topped up
    with the embedded tweets to PARITY_ROWS; and a few words saying which."""
    import pandas as pd

    from sendit.config.schema import DataConfig
    from sendit.data.reading import read_source
    from sendit.run.folder import PREDICTIONS

    texts: list[str] = []
    predictions = src.parent / PREDICTIONS.format(method=manifest["method"])
    if predictions.is_file():
        texts = pd.read_csv(predictions, usecols=["text"], keep_default_na=False)["text"].astype(str).tolist()
    texts = texts[:PARITY_ROWS]
    own = len(texts)
    texts += read_source("embedded", DataConfig(normalize=False)).texts[: PARITY_ROWS - own]
    where = f"{own} from {predictions.name}, {len(texts) - own} embedded" if own else "embedded"
    return texts, f"{len(texts)} tweets ({where})"


def write_onnx(sendit_model, src: Path, folder: Path, quantize: str | None, min_agreement: float, force: bool,
               log: Callable[[str], None]) -> dict:
    """Write model.onnx, config.json and the tokenizer into folder, then check them against sendit_model (fp32);
    returns the manifest, with the parity numbers. Raises ConfigError below min_agreement unless force."""
    texts, described = parity_texts(src, sendit_model.manifest)
    # Before write_merged: it builds the tweet normalisation into this tokenizer, after which sendit_model would
    # normalise twice.
    reference = sendit_model.predict_proba(texts, progress=False).probs
    model = sendit_model.model.cpu().float().eval()
    manifest = write_merged(sendit_model, src, folder, weights=False)
    _torch_export(model, sendit_model.tokenizer, folder / ONNX_FILE)
    if quantize == "int8":
        _quantize_int8(folder / ONNX_FILE)
    manifest = {**manifest, "format": "onnx", "quantize": quantize}
    ours = load_onnx(folder, manifest=manifest).predict_proba(texts).probs
    agree = float(np.mean(ours.argmax(-1) == reference.argmax(-1)))  # argmax: a binary tie is class 0 either way
    max_dp = float(np.abs(ours - reference).max())
    parity = {"rows": len(texts), "label_agreement": agree, "max_abs_dprob": max_dp, "min_agreement": min_agreement,
              "against": "sendit model, fp32"}
    log(f"parity of the ONNX {quantize or 'fp32'} model with the sendit model (fp32) on {described}: "
        f"label agreement {agree:.2%} ({round((1 - agree) * len(texts))} differ), max |Δp| {max_dp:.2e}")
    if agree < min_agreement and not force:
        raise ConfigError(f"the ONNX {quantize or 'fp32'} model agrees with the sendit model on {agree:.2%} of "
                          f"{len(texts)} tweets, below --min-agreement {min_agreement:g}; nothing was written. "
                          f"Pass --force to write it anyway, or export without --quantize.")
    return {**manifest, "parity": parity}


def _torch_export(model, tokenizer, path: Path) -> None:
    import torch

    class Logits(torch.nn.Module):  # positional tensors in, one named tensor out: ONNX's input/output names
        def __init__(self, classifier):
            super().__init__()
            self.classifier = classifier

        def forward(self, input_ids, attention_mask):
            return self.classifier(input_ids=input_ids, attention_mask=attention_mask).logits

    # Two rows of different lengths, right-padded: the traced example exercises the padding and pooling paths.
    example = tokenizer(["an example tweet to trace the graph with", "ok"], padding=True, return_tensors="pt")
    batch, sequence = torch.export.Dim("batch"), torch.export.Dim("sequence")
    dims = {0: batch, 1: sequence}
    with _quiet(), torch.no_grad():
        torch.onnx.export(Logits(model).eval(), (example["input_ids"], example["attention_mask"]), str(path),
                          input_names=["input_ids", "attention_mask"], output_names=["logits"],
                          dynamic_shapes={"input_ids": dims, "attention_mask": dims}, dynamo=True,
                          external_data=False,  # one self-contained file; ONNX's 2 GB limit is far above OPT-350m
                          verbose=False)


def _quantize_int8(path: Path) -> None:
    """Dynamic int8 in place: ONNX Runtime's quantize_dynamic (weights int8, activations quantised at run time)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    fp32 = path.with_name("model_fp32.onnx")
    path.rename(fp32)
    with _quiet():
        # Per output channel: on the embedded MiniLM (head, 1000 tweets) label agreement with fp32 went from 97.4 %
        # to 99.0 % and max |Δp| from 0.024 to 0.014 against per-tensor scales, for the same int8 kernels.
        # On another embedded head model (probabilities bunched near 0.5) it gives 96.6 %; reduce_range 97.4 %, U8
        # weights 97.6 % (slower), head/pooler excluded: no change (Gemm is never quantised here); none reached
        # 99 %, so the fastest stays the default (docs/use-the-winner.md lists every variant tried).
        quantize_dynamic(str(fp32), str(path), weight_type=QuantType.QInt8, per_channel=True)
    fp32.unlink()


@contextlib.contextmanager
def _quiet():
    """torch.onnx prints its progress on stdout, warns and logs about its own internals (torchvision ops it skips,
    axis names), and quantize_dynamic logs advice on the root logger: none of it is the user's business."""
    import logging
    import warnings

    from sendit.verbosity import quiet_libraries

    logging.disable(logging.WARNING)
    try:
        with quiet_libraries(), warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        logging.disable(logging.NOTSET)
