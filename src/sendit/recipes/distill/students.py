"""The pieces distillation is made of: the KD loss, a student built from a subset of the teacher's layers, and
the teacher's logits over the training set, computed once and cached in the run folder. `sendit.recipes.distill` plans
and runs the stages that use them.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import PreTrainedModel

from sendit.errors import ConfigError, ModelError
from sendit.fileio import as_write_error
from sendit.serve.model_folder import MANIFEST, SenditModel, base_model_path
from sendit.train.batching import Encoded
from sendit.train.device import Processes
from sendit.train.engine import predict
from sendit.train.models import num_layers, resolve


# ------------------------------------------------------------------------------------------------ the loss
def kd_loss(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor, kd_ratio: float,
    temperature: float, class_weights: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict]:
    """The blended loss and its two terms (`ce`, and `kd` = the KL divergence at temperature T, unscaled).
    T^2 keeps the soft term's gradients on the scale of the hard term's as T changes (Hinton et al., 2015).
    `class_weights` weight the hard term by class (--class-balance weight); the teacher's soft term is left as is."""
    T = temperature
    ce = F.cross_entropy(student_logits, labels, weight=class_weights)
    kl = F.kl_div(F.log_softmax(student_logits / T, -1), F.log_softmax(teacher_logits / T, -1),
                  reduction="batchmean", log_target=True)
    loss = (1 - kd_ratio) * ce + kd_ratio * T**2 * kl
    return loss, {"ce": ce.detach(), "kd": kl.detach()}


# ------------------------------------------------------------------------------------------------ students
def default_layers(teacher_layers: int, student_layers: int) -> list[int]:
    """Every (teacher / student)-th layer from the first: 6 -> 3 keeps 0,2,4 and 12 -> 6 keeps 0,2,..,10 (DistilBERT's
    "one layer out of two"); 12 -> 3 keeps 0,4,8."""
    if not 1 <= student_layers <= teacher_layers:
        raise ConfigError(f"a student of {student_layers} layers cannot be taken from a teacher of {teacher_layers} "
                          f"layers: choose 1 to {teacher_layers}.")
    return [i * teacher_layers // student_layers for i in range(student_layers)]


def layer_stack(model: nn.Module) -> str:
    """Name of the model's list of transformer layers (`bert.encoder.layer`, `model.decoder.layers`, ...)."""
    n = num_layers(model.config)
    for name, module in model.named_modules():
        if isinstance(module, nn.ModuleList) and len(module) == n:
            return name
    raise ModelError(f"no list of {n} transformer layers found in {type(model).__name__}; pass --student-model "
                     f"to distil into a model of your choice instead.")


def student_from_teacher(teacher: PreTrainedModel, layers: list[int]) -> PreTrainedModel:
    """The teacher's architecture with only `layers` (in that order); embeddings, final norms, pooler and head are
    copied as they are. `teacher` must be a plain transformers model (adapters merged)."""
    n = num_layers(teacher.config)
    if not layers or len(set(layers)) != len(layers) or not all(0 <= i < n for i in layers):
        raise ConfigError(f"--layers {','.join(map(str, layers))}: give distinct layer indices from 0 to {n - 1} "
                          f"(the teacher has {n} layers).")
    stack = layer_stack(teacher)
    config = copy.deepcopy(teacher.config)
    config.num_hidden_layers = len(layers)
    if getattr(config, "layer_types", None):
        config.layer_types = [config.layer_types[i] for i in layers]
    student = type(teacher)(config)
    new_index = {old: new for new, old in enumerate(layers)}
    in_stack = re.compile(rf"^{re.escape(stack)}\.(\d+)\.(.+)$")
    state = {}
    for key, tensor in teacher.state_dict().items():
        m = in_stack.match(key)
        if m is None:
            state[key] = tensor
        elif int(m[1]) in new_index:
            state[f"{stack}.{new_index[int(m[1])]}.{m[2]}"] = tensor
    student.load_state_dict(state, strict=True)
    return student


# ------------------------------------------------------------------------------------------------ teacher cache
def _hash_file(h, path: Path) -> None:
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)


def _weight_files(folder: Path) -> list[Path]:
    """Weights and configs; not sendit_model.json, which names paths (it is hashed through the base model)."""
    return sorted(p for p in folder.rglob("*")
                  if p.is_file() and p.suffix in (".safetensors", ".bin", ".json") and p.name != MANIFEST)


def hub_revision(repo_id: str) -> str:
    """The commit of the cached snapshot that loading hub model `repo_id` uses, or 'unknown' when it is not cached
    yet (then the key changes once, after the first download)."""
    from huggingface_hub import try_to_load_from_cache

    try:
        path = try_to_load_from_cache(repo_id, "config.json")
    except ValueError:  # not a valid hub id: loading the teacher says so, in words
        path = None
    parts = Path(path).parts if isinstance(path, str) else ()
    return parts[parts.index("snapshots") + 1] if "snapshots" in parts else "unknown"


def cache_key(teacher_dir: Path, train: Encoded, max_length: int, precision: str) -> str:
    """Hash of the teacher (its weight and config files, and its base model's: their contents for a local folder,
    the snapshot's commit for a hub id), the precision it runs in ('bf16' or 'fp32': bf16 logits differ), the
    tokenised training ids and max_length: any change to one of them gives a new key."""
    teacher_dir = Path(teacher_dir)
    h = hashlib.sha256()
    manifest = read_json(teacher_dir / MANIFEST)
    base = resolve(base_model_path(teacher_dir, manifest))
    h.update(f"method={manifest['method']}".encode())
    h.update(f"precision={precision}".encode())
    folders = [teacher_dir]
    if not Path(base).is_dir():
        h.update(f"base={base}@{hub_revision(base)}".encode())  # a hub id: the commit names its weights
    elif not Path(base).resolve().is_relative_to(teacher_dir.resolve()):
        folders.append(Path(base))
    for folder in folders:
        for path in _weight_files(folder):
            h.update(path.relative_to(folder).as_posix().encode())
            _hash_file(h, path)
    h.update(f"max_length={max_length}".encode())
    h.update(train.lengths.tobytes())
    h.update(np.fromiter((t for ids in train.input_ids for t in ids), dtype=np.int64).tobytes())
    return h.hexdigest()[:20]


def cached_teacher_logits(
    teacher: Callable[[], SenditModel], teacher_dir: Path, train: Encoded, max_length: int, cache_dir: Path,
    accelerator: Processes, batch_size: int = 256, log: Callable[[str], None] = print, *, precision: str,
) -> tuple[torch.Tensor, Path]:
    """The teacher's logits over the training set: computed once (`teacher()` is called only then, and must load
    the teacher in `precision`), stored in `cache_dir/teacher-<key>.safetensors`, read back on every later call
    with the same teacher, precision and data."""
    path = Path(cache_dir) / f"teacher-{cache_key(teacher_dir, train, max_length, precision)}.safetensors"
    if accelerator.is_main_process and not path.exists():
        t0 = time.perf_counter()
        t = teacher()
        logits = torch.from_numpy(predict(t.model, train, None, batch_size, precision=t.precision).logits)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        try:
            save_file({"logits": logits.contiguous()}, str(tmp))
            tmp.replace(path)
        except Exception as e:  # a full disk: no half-written cache is left, and the message names it
            tmp.unlink(missing_ok=True)
            full = as_write_error(e, path)
            if full is None or full is e:
                raise
            raise full from e
        log(f"teacher logits over {len(train)} training tweets: {time.perf_counter() - t0:.0f} s, cached in {path}")
    elif accelerator.is_main_process:
        log(f"teacher logits reused from {path}")
    accelerator.wait_for_everyone()
    return load_file(str(path))["logits"], path


def read_json(path: Path) -> dict:
    return json.loads(Path(path).read_text())
