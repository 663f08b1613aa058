"""`sendit export`: a trained model folder as a standard Hugging Face folder that needs no sendit to use.

The merged export (the default) holds config.json (id2label from the run's classes: 0 = negative, 1 = positive by default), model.safetensors and the
tokenizer: LoRA/DoRA/IA3 adapters are folded into the base weights (peft `merge_and_unload`), BitFit's biases and
the trained head are written into the base model's tensors, a full fine-tune is copied. It loads with
`transformers.pipeline("text-classification", model=DIR)` and gives the sendit model's predictions on raw tweets: the
tweet normalisation is built into the exported tokenizer. `--no-merge` keeps an adapter method's small peft adapter
folder instead (needs peft and the
base model to load). Either folder also carries sendit_model.json, so `sendit predict` and `sendit.load` take it.
`--format onnx` writes model.onnx instead of the weights (sendit.serve.onnx_export), checked against the sendit model.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable

from sendit.errors import ConfigError
from sendit.run.folder import MODEL_MANIFEST as MANIFEST  # noqa: E402  (torch-free, as this module's import is)
from sendit.serve.hf_folder import normalize_snippet, write_adapter, write_merged


def export(model_dir: str | Path, out: str | Path, merge: bool = True, overwrite: bool = False, format: str = "hf",
           quantize: str | None = None, min_agreement: float = 0.99, force: bool = False,
           log: Callable[[str], None] | None = None) -> Path:
    """Write model_dir (RUN_DIR/<method>) as a standard Hugging Face model folder at out; returns out.

    Args:
        model_dir: a model folder written by `sendit run`/`train`.
        out: the folder to write; it is built next to its final place and renamed in at the end.
        merge: fold adapters into the base weights (a plain transformers folder); False keeps a peft adapter
            folder for lora/dora/ia3 (bitfit, head and full always export a whole model).
        overwrite: replace an existing non-empty out.
        format: 'hf' (safetensors weights) or 'onnx' (model.onnx, always merged).
        quantize: 'int8' for ONNX Runtime's dynamic quantisation (onnx only).
        min_agreement: the ONNX model's label agreement with the sendit model below which nothing is written.
        force: write an ONNX model below min_agreement all the same.
        log: where the parity line goes (default: sendit's progress lines).
    """
    from sendit.fileio import as_write_error, write_target
    from sendit.run.folder import mark, shareable
    from sendit.serve.model_folder import load
    from sendit.serve.onnx_folder import is_onnx_folder
    from sendit.verbosity import say

    src, out = Path(model_dir), write_target(out)  # a link to a folder: the export replaces the folder it names
    _check_format(format, merge, quantize, min_agreement)
    if is_onnx_folder(src):
        raise ConfigError(f"{src} is an ONNX export already, which sendit cannot turn back into weights; export the "
                          f"model folder it came from (RUN_DIR/<method>).")
    _check_out(src, out, overwrite)
    model = load(src, merge=True, precision="fp32") if merge or not _is_adapter(src) else None
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}."))
    old = out.parent / f"{tmp.name}.old"
    try:
        if format == "onnx":
            from sendit.serve.onnx_export import write_onnx

            manifest = write_onnx(model, src, tmp, quantize, min_agreement, force, log or say)
        elif model is None:
            manifest = write_adapter(src, tmp)
        else:
            manifest = write_merged(model, src, tmp)
        manifest["sendit"] = mark("export")
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, default=str) + "\n")
        (tmp / "README.md").write_text(_model_card(manifest, src))
        shareable(tmp, folder=True)
        for f in tmp.iterdir():
            shareable(f)
        if out.exists():  # an export _check_out allowed to replace: moved aside, so out is never missing for long
            os.replace(out, old)
        os.replace(tmp, out)
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if old.exists() and not out.exists():
            os.replace(old, out)
        full = as_write_error(e, out) if isinstance(e, Exception) else None  # safetensors' own type for a full disk
        if full is None or full is e:
            raise
        raise full from e
    shutil.rmtree(old, ignore_errors=True)
    return out


def _check_format(format: str, merge: bool, quantize: str | None, min_agreement: float) -> None:
    if format not in ("hf", "onnx"):
        raise ConfigError(f"--format {format!r}: choose hf (a transformers folder) or onnx.")
    if format == "onnx":
        from sendit.serve.onnx_folder import require_onnx

        if not merge:
            raise ConfigError("--no-merge keeps a peft adapter, which ONNX has no place for; an ONNX export is "
                              "always merged: drop --no-merge.")
        require_onnx(export=True)
    elif quantize:
        raise ConfigError(f"--quantize {quantize} applies to --format onnx; add --format onnx.")
    if not 0 <= min_agreement <= 1:
        raise ConfigError(f"--min-agreement {min_agreement:g} is a fraction of tweets: between 0 and 1 (e.g. 0.99).")


def _check_out(src: Path, out: Path, overwrite: bool) -> None:
    """--out may be new, an empty folder, or (with --overwrite) an earlier export: never anything else, and never
    a folder that holds the model being exported or its base model."""
    from sendit.run.folder import holder_of

    if not out.exists():
        return
    if out.resolve() == src.resolve():
        raise ConfigError(f"--out {out} is the model folder being exported; choose another folder.")
    if not out.is_dir():
        raise ConfigError(f"--out {out} is a file, which an export never replaces; choose another folder.")
    if not any(out.iterdir()):
        return
    if not overwrite:
        raise ConfigError(f"--out {out} already exists and is not empty. Pass --overwrite to replace it, "
                          f"or choose another folder.")
    held = holder_of(out, {"the model folder being exported": src, "its base model":
                           _read_manifest(src).get("base_model"), "the working directory": Path.cwd()})
    if held:
        raise ConfigError(f"--out {out} holds {held}, so --overwrite would delete it; it is left alone. Choose "
                          f"another folder.")
    if not _is_export(out):
        raise ConfigError(f"--out {out} already exists and is not a sendit export (no {MANIFEST} written by "
                          f"sendit export), so it is left alone, even with --overwrite. Choose another folder.")


def _read_manifest(folder: Path) -> dict:
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError):
        return {}
    return manifest if isinstance(manifest, dict) else {}


def _is_export(folder: Path) -> bool:
    """Written by `sendit export`: its manifest carries the export mark, or (exports from before the mark) the
    `exported_from` key that only an export writes."""
    manifest = _read_manifest(folder)
    own = manifest.get("sendit")
    return (isinstance(own, dict) and own.get("kind") == "export") or "exported_from" in manifest


def _is_adapter(src: Path) -> bool:
    from sendit.methods import METHODS

    try:
        method = METHODS.get(json.loads((src / MANIFEST).read_text()).get("method"))
    except (OSError, ValueError, AttributeError):  # not a model folder: load() says so, with a hint
        return False
    return bool(method and method.is_adapter)


def _model_card(manifest: dict, src: Path | None = None) -> str:
    """README.md: the hub's metadata (sendit.serve.model_card), how to load the folder, training facts and test results."""
    from sendit.serve.model_card import card_header, facts_prose, run_facts

    classes = manifest.get("labels") or ["negative", "positive"]
    facts = run_facts(src, manifest) if src is not None else {}
    if manifest.get("format") == "onnx":
        parity = manifest["parity"]
        kind = (f"model.onnx ({manifest['quantize'] or 'fp32'}) for ONNX Runtime, with the adapter, if any, merged "
                f"in; on {parity['rows']} tweets it gave the sendit model's label on "
                f"{parity['label_agreement']:.2%} of them (max |Δp| {parity['max_abs_dprob']:.2e}).")
        code = ["import onnxruntime as ort", "from transformers import AutoTokenizer", "",
                'tok = AutoTokenizer.from_pretrained("THIS_FOLDER")',
                'session = ort.InferenceSession("THIS_FOLDER/model.onnx")',
                'enc = tok(tweets, padding=True, truncation=True, return_tensors="np")',
                'logits = session.run(["logits"], {k: enc[k] for k in ("input_ids", "attention_mask")})[0]',
                f"labels = logits.argmax(-1)  # {', '.join(f'{i} = {c}' for i, c in enumerate(classes))}"]
    elif manifest["merged"]:
        kind = "The adapter, if any, is merged into the weights: a plain transformers folder."
        code = ["from transformers import pipeline", "", 'clf = pipeline("text-classification", model="THIS_FOLDER")']
    else:
        kind = "A peft adapter folder: loading it needs peft and the base model named in adapter_config.json."
        code = ["from peft import AutoPeftModelForSequenceClassification", "",
                'model = AutoPeftModelForSequenceClassification.from_pretrained("THIS_FOLDER"'
                + (f", num_labels={len(classes)}, ignore_mismatched_sizes=True)" if len(classes) != 2 else ")")]
    base = manifest["base_model"]
    base = "all-MiniLM-L6-v2 (sendit's embedded model)" if base == "embedded" else base
    lines = [
        "# Tweet sentiment classifier (SEND-IT export)",
        "",
        (f"Trained with `{manifest['trained_method']}` on base model `{base}`; labels: "
         f"{', '.join(f'{i} = {c}' for i, c in enumerate(classes))}. {kind}"),
        "",
        "```python", *code, "```",
    ]
    if manifest.get("normalize_in_tokenizer"):
        lines += ["", ("Pass raw tweets: the tokenizer normalises them as sendit did before training (HTML entities "
                       "unescaped, URLs -> `http`, @mentions -> `@user`, whitespace collapsed).")]
    elif manifest.get("normalize", True):
        lines += [
            "",
            ("The training tweets were normalised first (HTML entities unescaped, URLs -> `http`, @mentions -> "
             "`@user`, whitespace collapsed). A plain pipeline does not do this: normalise raw tweets the same way "
             "to get the predictions of `sendit predict` (which does it for you):"),
            "",
            "```python", normalize_snippet().rstrip(), "",
            "clf([normalize_tweet(t) for t in tweets], truncation=True)" if manifest["merged"] and "format" not in manifest else "",
            "```",
        ]
    return card_header(manifest, facts) + "\n".join(lines + ["", *facts_prose(manifest, facts, classes)]) + "\n"
