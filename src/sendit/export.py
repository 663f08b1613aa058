"""`sendit export`: a trained model folder as a standard Hugging Face folder that needs no sendit to use.

The merged export (the default) holds config.json (id2label 0 = negative, 1 = positive), model.safetensors and the
tokenizer: LoRA/DoRA/IA3 adapters are folded into the base weights (peft `merge_and_unload`), BitFit's biases and
the trained head are written into the base model's tensors, a full fine-tune is copied. It loads with
`transformers.pipeline("text-classification", model=DIR)` and gives the sendit model's predictions on the same
(normalised) text. `--no-merge` keeps an adapter method's small peft adapter folder instead (needs peft and the
base model to load). Either folder also carries sendit_model.json, so `sendit predict` and `sendit.load` take it.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

from sendit.config import ConfigError

ADAPTER_METHODS = ("lora", "dora", "ia3")
MANIFEST = "sendit_model.json"  # = sendit.predict.MANIFEST, repeated to keep this module's import torch-free

# The same rules as sendit.data.normalize_tweet, written out for users of the exported folder who have no sendit
# (tests/test_export.py checks that the two agree).
NORMALIZE_SNIPPET = '''\
import html, re

def normalize_tweet(text: str) -> str:
    text = html.unescape(text)
    text = re.sub(r"(https?://\\S+|www\\.\\S+)", "http", text, flags=re.IGNORECASE)
    text = re.sub(r"@\\w+", "@user", text)
    return re.sub(r"\\s+", " ", text).strip()
'''


def export_command(args: argparse.Namespace) -> int:
    out = export(args.model_dir, args.out, merge=args.merge, overwrite=args.overwrite)
    print(f"exported {args.model_dir} -> {out}", file=sys.stderr)
    return 0


def export(model_dir: str | Path, out: str | Path, merge: bool = True, overwrite: bool = False) -> Path:
    """Write model_dir (RUN_DIR/<method>) as a standard Hugging Face model folder at out; returns out.

    Args:
        model_dir: a model folder written by `sendit run`/`train`.
        out: the folder to write; it is built next to its final place and renamed in at the end.
        merge: fold adapters into the base weights (a plain transformers folder); False keeps a peft adapter
            folder for lora/dora/ia3 (bitfit, head and full always export a whole model).
        overwrite: replace an existing non-empty out.
    """
    from sendit.predict import load

    src, out = Path(model_dir), Path(out)
    if out.exists() and out.resolve() == src.resolve():
        raise ConfigError(f"--out {out} is the model folder being exported; choose another folder.")
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not overwrite:
        raise ConfigError(f"--out {out} already exists and is not empty. Pass --overwrite to replace it, "
                          f"or choose another folder.")
    model = load(src, merge=True, precision="fp32") if merge or not _is_adapter(src) else None
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}."))
    try:
        if model is None:
            manifest = _write_adapter(src, tmp)
        else:
            manifest = _write_merged(model, src, tmp)
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, default=str) + "\n")
        (tmp / "README.md").write_text(_model_card(manifest))
        # mkdtemp makes 0700 and transformers writes weights 0600: make the folder as shareable as any other.
        os.chmod(tmp, 0o777 & ~_umask())
        for f in tmp.iterdir():
            os.chmod(f, 0o666 & ~_umask())
        if out.is_dir():
            shutil.rmtree(out)
        elif out.exists():
            out.unlink()
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _is_adapter(src: Path) -> bool:
    try:
        return json.loads((src / MANIFEST).read_text()).get("method") in ADAPTER_METHODS
    except (OSError, ValueError, AttributeError):  # not a model folder: load() says so, with a hint
        return False


def _write_merged(sendit_model, src: Path, folder: Path) -> dict:
    from sendit.models import ID2LABEL, LABEL2ID

    model, tokenizer, manifest = sendit_model.model.cpu(), sendit_model.tokenizer, sendit_model.manifest
    if hasattr(model, "peft_config"):
        raise ConfigError(f"{src}: the {manifest['method']} adapter could not be merged into the base model.")
    model.config.id2label, model.config.label2id = dict(ID2LABEL), dict(LABEL2ID)
    model.config.problem_type = "single_label_classification"
    # Decoder models (OPT) find each text's last token from pad_token_id; without it a batched pipeline is wrong.
    model.config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(folder, safe_serialization=True)
    # The pipeline truncates at the tokenizer's model_max_length (with truncation=True); make it the trained length.
    tokenizer.model_max_length = int(manifest.get("max_length", tokenizer.model_max_length))
    tokenizer.padding_side = "right"
    tokenizer.save_pretrained(folder)
    return {**manifest, "method": "full", "trained_method": manifest["method"], "merged": True,
            "exported_from": str(src.resolve())}


def _write_adapter(src: Path, folder: Path) -> dict:
    from sendit.models import resolve
    from sendit.predict import base_model_path

    for f in src.iterdir():
        if f.is_file() and f.name not in (MANIFEST, "README.md"):
            shutil.copy2(f, folder / f.name)
    manifest = json.loads((src / MANIFEST).read_text())
    # peft finds the base model by this path; sendit wrote its own spelling ('embedded'), peft needs the folder.
    config_path = folder / "adapter_config.json"
    config = json.loads(config_path.read_text())
    base = resolve(base_model_path(src, manifest))
    base = str(Path(base).resolve()) if Path(base).exists() else base
    config["base_model_name_or_path"] = base
    config_path.write_text(json.dumps(config, indent=2) + "\n")
    if str(manifest["base_model"]).startswith(("./", "../")):  # relative to src, which the export leaves behind
        manifest["base_model"] = base
    return {**manifest, "trained_method": manifest["method"], "merged": False, "exported_from": str(src.resolve())}


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _model_card(manifest: dict) -> str:
    if manifest["merged"]:
        kind = "The adapter, if any, is merged into the weights: a plain transformers folder."
        code = ["from transformers import pipeline", "", 'clf = pipeline("text-classification", model="THIS_FOLDER")']
    else:
        kind = "A peft adapter folder: loading it needs peft and the base model named in adapter_config.json."
        code = ["from peft import AutoPeftModelForSequenceClassification", "",
                'model = AutoPeftModelForSequenceClassification.from_pretrained("THIS_FOLDER")']
    base = manifest["base_model"]
    base = "all-MiniLM-L6-v2 (sendit's embedded model)" if base == "embedded" else base
    lines = [
        "# Tweet sentiment classifier (SEND-IT export)",
        "",
        (f"Trained with `{manifest['trained_method']}` on base model `{base}`; labels: "
         f"0 = negative, 1 = positive. {kind}"),
        "",
        "```python", *code, "```",
    ]
    if manifest.get("normalize", True):
        lines += [
            "",
            ("The training tweets were normalised first (HTML entities unescaped, URLs -> `http`, @mentions -> "
             "`@user`, whitespace collapsed). A plain pipeline does not do this: normalise raw tweets the same way "
             "to get the predictions of `sendit predict` (which does it for you):"),
            "",
            "```python", NORMALIZE_SNIPPET.rstrip(), "",
            "clf([normalize_tweet(t) for t in tweets], truncation=True)" if manifest["merged"] else "",
            "```",
        ]
    return "\n".join(lines) + "\n"
