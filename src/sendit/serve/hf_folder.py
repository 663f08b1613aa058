"""The files of a Hugging Face model folder that `sendit export` writes (hf and onnx alike): the merged model's
config and weights, an adapter folder, and the tokenizer with sendit's tweet normalisation built in."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from sendit.errors import ConfigError
from sendit.run.folder import MODEL_MANIFEST as MANIFEST


def add_tweet_normalizer(tokenizer) -> bool:
    """Build sendit's tweet normalisation (sendit.data.dataset.TWEET_RULES: HTML entities, URLs -> 'http', @mentions ->
    '@user', whitespace) into a fast tokenizer's own normalizer, ahead of the one it has (BERT's lower-casing), so
    that the saved folder turns raw tweets into the text the model was trained on. False for a tokenizer without
    a `tokenizers` backend, which keeps its normalizer."""
    from tokenizers import Regex, normalizers

    from sendit.data.dataset import TWEET_RULES

    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return False
    steps = [normalizers.Replace(Regex(pattern), replacement) for pattern, replacement in TWEET_RULES]
    if backend.normalizer is not None:
        steps.append(backend.normalizer)
    backend.normalizer = normalizers.Sequence(steps)
    return True


def normalize_snippet() -> str:
    """sendit.data.dataset.normalize_tweet as standalone Python, for a model card whose tokenizer could not take the rules."""
    from sendit.data.dataset import TWEET_RULES

    rules = "".join(f"    ({pattern!r}, {replacement!r}),\n" for pattern, replacement in TWEET_RULES)
    return (f"import re\n\nRULES = [\n{rules}]\n\n\ndef normalize_tweet(text: str) -> str:\n"
            "    for pattern, replacement in RULES:\n"
            "        text = re.sub(pattern, replacement, text)\n"
            "    return text\n")


def write_merged(sendit_model, src: Path, folder: Path, weights: bool = True) -> dict:
    """The merged model's config, weights (unless not `weights`: an ONNX export writes its own) and tokenizer."""
    from sendit.train.models import label_maps
    from sendit.verbosity import quiet_libraries

    model, tokenizer, manifest = sendit_model.model.cpu(), sendit_model.tokenizer, sendit_model.manifest
    if hasattr(model, "peft_config"):
        raise ConfigError(f"{src}: the {manifest['method']} adapter could not be merged into the base model.")
    model.config.id2label, model.config.label2id = label_maps(sendit_model.classes)  # a pipeline names them
    model.config.problem_type = "single_label_classification"
    # Decoder models (OPT) find each text's last token from pad_token_id; without it a batched pipeline is wrong.
    model.config.pad_token_id = tokenizer.pad_token_id
    if weights:
        with quiet_libraries():  # transformers' "Writing model shards" bar
            model.save_pretrained(folder, safe_serialization=True)
    else:
        model.config.save_pretrained(folder)
    # The pipeline truncates at the tokenizer's model_max_length (with truncation=True); make it the trained length.
    tokenizer.model_max_length = int(manifest.get("max_length", tokenizer.model_max_length))
    tokenizer.padding_side = "right"
    manifest = save_tokenizer(tokenizer, manifest, folder)
    return {**manifest, "method": "full", "trained_method": manifest["method"], "merged": True,
            "exported_from": str(src.resolve())}


def save_tokenizer(tokenizer, manifest: dict, folder: Path) -> dict:
    """Save the tokenizer with the tweet normalisation built in when it can take it; then sendit must not normalise
    again (the rules are not idempotent: '&amp;lt;' -> '&lt;' -> '<'), so the returned manifest says so."""
    if not (manifest.get("normalize", True) and add_tweet_normalizer(tokenizer)):
        tokenizer.save_pretrained(folder)
        return manifest
    tokenizer.save_pretrained(folder)
    # transformers 5 rebuilds a GPT2Tokenizer or BertTokenizer from its vocabulary, dropping tokenizer.json's
    # normalizer; the generic fast class loads tokenizer.json as written (transformers 4 does too).
    config_path = folder / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    config["tokenizer_class"] = "PreTrainedTokenizerFast"
    config_path.write_text(json.dumps(config, indent=2) + "\n")
    return {**manifest, "normalize": False, "normalize_in_tokenizer": True}


def write_adapter(src: Path, folder: Path) -> dict:
    from sendit.serve.model_folder import base_model_path
    from sendit.train.models import load_tokenizer, resolve

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
    manifest = save_tokenizer(load_tokenizer(str(src)), manifest, folder)
    return {**manifest, "trained_method": manifest["method"], "merged": False, "exported_from": str(src.resolve())}
