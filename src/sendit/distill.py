"""Knowledge distillation and iterative fine-tuning: the "neural distillate".

Distillation is a loss, not a framework. A student trains in the one `engine.fit` loop with Hinton et al.'s (2015)
blend of the label loss and the teacher's softened predictions,

    loss = (1 - kd_ratio) * CE(student, labels) + kd_ratio * T^2 * KL(softmax(teacher / T) || softmax(student / T)),

where the teacher's logits over the training set are computed once and cached in the run folder. The student is
the teacher's own architecture with fewer layers, initialised from a subset of the teacher's layers (DistilBERT,
Sanh et al., 2019), or any other model. A chain (`--chain 12,6,3`) distils stage by stage, each stage's teacher
being the previous stage's fine-tuned model (teacher assistants, Mirzadeh et al., 2020).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import functools
import hashlib
import itertools
import json
import re
import shutil
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
import yaml
from accelerate import Accelerator
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import AutoConfig, PreTrainedModel

from sendit.config import (
    SECTIONS, ConfigError, DistillConfig, RunConfig, distill_config, field_index, from_dict, load_config,
    resolve_config_path,
)
from sendit.engine import Encoded, TrainingError, collate, encode
from sendit.measure import hardware
from sendit.methods import get_method
from sendit.models import ModelError, load_model, load_tokenizer, num_layers, resolve
from sendit.outputs import (
    EPOCH_LOGS, INFERENCE_SUMMARY, PREDICTIONS, RESULTS, atomic_write_text, git_commit, read_manifest,
    update_manifest, versions,
)
from sendit.predict import MANIFEST, SenditModel, base_model_path, load
from sendit.workflow import Context, model_folder_name, train_method

CACHE_DIR = ".cache"


# ------------------------------------------------------------------------------------------------ the loss
def kd_loss(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor, kd_ratio: float,
    temperature: float,
) -> tuple[torch.Tensor, dict]:
    """The blended loss and its two terms (`ce`, and `kd` = the KL divergence at temperature T, unscaled).
    T^2 keeps the soft term's gradients on the scale of the hard term's as T changes (Hinton et al., 2015)."""
    T = temperature
    ce = F.cross_entropy(student_logits, labels)
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


def cache_key(teacher_dir: Path, train: Encoded, max_length: int) -> str:
    """Hash of the teacher (its weight and config files, and its base model's when that is a local folder), the
    tokenised training ids and max_length: any change to one of them gives a new key."""
    teacher_dir = Path(teacher_dir)
    h = hashlib.sha256()
    manifest = read_json(teacher_dir / MANIFEST)
    base = resolve(base_model_path(teacher_dir, manifest))
    h.update(f"method={manifest['method']}".encode())
    folders = [teacher_dir]
    if not Path(base).is_dir():
        h.update(f"base={base}".encode())  # a hub id: its weights are not ours to hash
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


@torch.inference_mode()
def logits_over(model: nn.Module, data: Encoded, accelerator: Accelerator, batch_size: int = 256) -> torch.Tensor:
    """Raw logits for every row, in input order (longest first in large batches: little padding)."""
    model.eval()
    order = np.argsort(-data.lengths, kind="stable")
    out = None
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size].tolist()
        b = collate(data, idx, accelerator.device)
        with accelerator.autocast():
            logits = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits.float().cpu()
        if out is None:
            out = torch.empty(len(data), logits.shape[-1])
        out[idx] = logits
    return out


def cached_teacher_logits(
    teacher: Callable[[], SenditModel], teacher_dir: Path, train: Encoded, max_length: int, cache_dir: Path,
    accelerator: Accelerator, batch_size: int = 256, log: Callable[[str], None] = print,
) -> tuple[torch.Tensor, Path]:
    """The teacher's logits over the training set: computed once (`teacher()` is called only then), stored in
    `cache_dir/teacher-<key>.safetensors`, read back on every later call with the same teacher and data."""
    path = Path(cache_dir) / f"teacher-{cache_key(teacher_dir, train, max_length)}.safetensors"
    if accelerator.is_main_process and not path.exists():
        t0 = time.perf_counter()
        logits = logits_over(teacher().model, train, accelerator, batch_size)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        save_file({"logits": logits.contiguous()}, str(tmp))
        tmp.replace(path)
        log(f"teacher logits over {len(train)} training tweets: {time.perf_counter() - t0:.0f} s, cached in {path}")
    elif accelerator.is_main_process:
        log(f"teacher logits reused from {path}")
    accelerator.wait_for_everyone()
    return load_file(str(path))["logits"], path


# ------------------------------------------------------------------------------------------------ stages
@dataclass
class Stage:
    label: str  # the method name in the run folder, e.g. distill-3L-full
    layers: list[int] | None  # the teacher layers copied into the student; None with student_model
    student_model: str | None = None
    depth: int = 0  # the student's number of layers


def teacher_folder(path: str | None) -> Path:
    if not path:
        raise ConfigError("sendit distill needs --teacher RUN_DIR/<method>: the model folder of a fine-tuned run "
                          "(or distill.teacher in the --config file).")
    folder = Path(path)
    if not (folder / MANIFEST).exists():
        subs = sorted(p.parent.name for p in folder.glob(f"*/{MANIFEST}")) if folder.is_dir() else []
        hint = f" It looks like a run folder: pass one of its model folders, e.g. {folder / subs[0]}." if subs else ""
        raise ModelError(f"--teacher '{path}' is not a sendit model folder (no {MANIFEST}).{hint}")
    return folder


def read_json(path: Path) -> dict:
    return json.loads(Path(path).read_text())


def model_depth(folder: Path) -> int:
    """Layer count of a saved model folder (its own config.json, else its base model's)."""
    own = (folder / "config.json").exists()
    source = folder if own else resolve(base_model_path(folder, read_json(folder / MANIFEST)))
    return num_layers(AutoConfig.from_pretrained(source))


def teacher_label(folder: Path) -> str:
    """The teacher's method name in its run folder (model folders of further seeds end in -seedN)."""
    return re.sub(r"-seed\d+$", "", Path(folder).name)


def plan_stages(d: DistillConfig, teacher_depth: int) -> list[Stage]:
    """The students to train, in order. In a chain, a first count equal to the teacher's depth is the teacher."""
    if d.student_model:
        slug = re.sub(r"[^A-Za-z0-9._-]+", "-", d.student_model.rstrip("/").split("/")[-1])
        depth = num_layers(AutoConfig.from_pretrained(resolve(d.student_model)))
        return [Stage(f"distill-{slug}-{d.method}", None, d.student_model, depth)]
    if d.layers:
        return [Stage(f"distill-{len(d.layers)}L-{d.method}", list(d.layers), None, len(d.layers))]
    counts = list(d.chain) if d.chain else [d.student_layers or max(teacher_depth // 2, 1)]
    if counts[0] == teacher_depth and len(counts) > 1:
        counts = counts[1:]
    depths = [teacher_depth, *counts]
    if any(b >= a for a, b in itertools.pairwise(depths)):
        raise ConfigError(f"--chain/--student-layers {','.join(map(str, counts))}: each student must have fewer "
                          f"layers than its teacher (the teacher has {teacher_depth}); e.g. --chain "
                          f"{teacher_depth},{max(teacher_depth // 2, 1)}.")
    return [Stage(f"distill-{n}L-{d.method}", default_layers(prev, n), None, n) for prev, n in zip(depths, counts)]


def _with_tokenizer(ctx: Context, tokenizer) -> Context:
    """The run's context, re-tokenised when the student's tokenizer splits the tweets differently."""
    m, s = ctx.cfg.data.max_length, ctx.splits
    train = encode(tokenizer, s.train.texts, s.train.labels, m)
    if train.input_ids == ctx.encoded["train"].input_ids and train.pad_id == ctx.encoded["train"].pad_id:
        return ctx
    new = copy.copy(ctx)
    new.tokenizer = tokenizer
    new.encoded = {"train": train, "val": encode(tokenizer, s.val.texts, s.val.labels, m)}
    new.encoded_tests = {k: encode(tokenizer, t.texts, t.labels, m) for k, t in ctx.test_sets.items()}
    return new


def distill_stage(ctx: Context, stage: Stage, teacher_dir: Path, d: DistillConfig, seed: int) -> Path:
    """One student: teacher logits (cached) -> student init -> fit with the KD loss -> save -> test. Returns the
    student's model folder (the next stage's teacher)."""
    cfg, acc = ctx.cfg, ctx.accelerator
    folder = ctx.run_dir / model_folder_name(stage.label, seed, cfg.seed_list()[0])
    if folder.resolve() == teacher_dir.resolve():
        raise ConfigError(f"the student {stage.label} would overwrite its teacher {teacher_dir}; choose another "
                          f"--method or layer count.")
    teacher = functools.cache(lambda: load(teacher_dir, precision=cfg.train.precision))
    teacher_tok = load_tokenizer(str(teacher_dir))
    train = encode(teacher_tok, ctx.splits.train.texts, ctx.splits.train.labels, cfg.data.max_length)
    soft, cache = cached_teacher_logits(teacher, teacher_dir, train, cfg.data.max_length, ctx.run_dir / CACHE_DIR,
                                        acc, cfg.train.eval_batch_size, ctx.log)
    if ctx.main():
        shutil.rmtree(folder, ignore_errors=True)  # no files of an earlier student of this name stay behind
    if stage.student_model:
        tok = load_tokenizer(stage.student_model)
        base = init = name = stage.student_model
    else:
        # A student built from teacher layers has no hub base: its initial weights become a full model folder
        # inside the student's folder, named relative to it, so the run folder can be moved.
        tok, base = teacher_tok, "./base"
        init = f"layers {','.join(map(str, stage.layers))} of {teacher_label(teacher_dir)}"
        name = f"{cfg.model.model} ({init})"
        if ctx.main():
            student_from_teacher(teacher().model, stage.layers).save_pretrained(folder / "base")
            tok.save_pretrained(folder / "base")
    acc.wait_for_everyone()
    teacher.cache_clear()  # the teacher's memory is the student's from here on
    base_path = base_model_path(folder, {"base_model": base})

    def loss_fn(logits: torch.Tensor, batch: dict) -> tuple[torch.Tensor, dict]:
        return kd_loss(logits, soft[batch["idx"]].to(logits.device), batch["labels"], d.kd_ratio, d.temperature)

    extra = {
        "teacher": _relative(teacher_dir, ctx.run_dir), "teacher_method": teacher_label(teacher_dir),
        "student_layers": stage.depth, "kd_ratio": d.kd_ratio, "temperature": d.temperature, "student_init": init,
        "teacher_cache": _relative(cache, ctx.run_dir), "model": name,
    }
    ctx.log(f"{stage.label} (seed {seed}): student = {init}, taught by {teacher_dir} (kd_ratio {d.kd_ratio:g}, "
            f"T {d.temperature:g})")
    train_method(_with_tokenizer(ctx, tok), d.method, seed, model_factory=lambda: load_model(base_path, tok),
                 loss_fn=loss_fn, label=stage.label, extra_results=extra, base_model=base)
    return folder


def _relative(path: Path, run_dir: Path) -> str:
    p = Path(path).resolve()
    return p.relative_to(run_dir.resolve()).as_posix() if p.is_relative_to(run_dir.resolve()) else str(p)


# ------------------------------------------------------------------------------------------------ workflow
def distill(cfg: RunConfig, d: DistillConfig, out: str | Path | None = None, report: bool = True,
            log: Callable[[str], None] = print) -> Path:
    """Distil `d.teacher` into the student(s) that `d` describes, stage by stage, each tested like any method.

    Args:
        cfg: the run's settings (data split, training); `distill_settings` takes them from the teacher's run.
        d: teacher, students (`student_layers`, `layers`, `student_model` or `chain`), method, kd_ratio, temperature.
        out: run folder to write; default the teacher's own, so the report shows teacher and students together.
        report: rebuild the run folder's report at the end.
        log: where progress lines go.
    """
    teacher = teacher_folder(d.teacher)
    get_method(d.method)  # fail on a typo before any work
    stages = plan_stages(d, model_depth(teacher))
    run_dir = Path(out) if out else teacher.parent
    run_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    ctx = Context(cfg, run_dir, log)
    status = _start_manifest(ctx, teacher, stages, d)
    log(f"distillation {teacher} -> " + " -> ".join(s.label for s in stages) + f" into {run_dir}")
    for seed in cfg.seed_list():
        stage_teacher = teacher
        for stage in stages:
            key = f"{stage.label}/seed{seed}"
            try:
                stage_teacher = distill_stage(ctx, stage, stage_teacher, d, seed)
                status[key] = "done"
            except TrainingError as e:
                status[key] = f"failed: {e}"
                raise
            finally:
                if ctx.main():
                    update_manifest(run_dir, status=status)
            log(_retention_line(run_dir, stage.label, teacher_label(teacher), seed))
    if ctx.main():
        update_manifest(run_dir, finished=datetime.now().isoformat(timespec="seconds"),
                        distill_wall_time_sec=time.perf_counter() - t0)
    ctx.accelerator.end_training()
    if report and ctx.main():
        from sendit.report import build_report

        log(f"report: {Path(build_report([run_dir])) / 'index.html'}")
    return run_dir


def _start_manifest(ctx: Context, teacher: Path, stages: list[Stage], d: DistillConfig) -> dict:
    """Into the teacher's run folder: add the students to run.json. Into a new folder: a full run.json, and a copy
    of the teacher's rows so that its report can compare students with their teacher."""
    run_dir, cfg = ctx.run_dir, ctx.cfg
    manifest = read_manifest(run_dir)
    if not ctx.main():
        return manifest.get("status", {})
    if not manifest:
        manifest = update_manifest(
            run_dir, config=cfg.to_dict(), methods=[], seeds=cfg.seed_list(), versions=versions(),
            git_commit=git_commit(), hardware=hardware(ctx.accelerator.device), data=ctx.splits.summary(),
            started=datetime.now().isoformat(timespec="seconds"), status={},
        )
        atomic_write_text(run_dir / "config.yaml", yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    names = [teacher_label(teacher)] if teacher.parent.resolve() != run_dir.resolve() else []
    for template in (RESULTS, EPOCH_LOGS, INFERENCE_SUMMARY, PREDICTIONS) if names else ():
        src = teacher.parent / template.format(method=names[0])
        if src.exists() and not (run_dir / src.name).exists():
            shutil.copyfile(src, run_dir / src.name)
    methods = list(dict.fromkeys(manifest.get("methods", []) + names + [s.label for s in stages]))
    settings = {s.label: {"teacher": str(teacher), "student": s.student_model or f"layers {s.layers}",
                          **dataclasses.asdict(d), "train": dataclasses.asdict(cfg.train),
                          "method_lr": cfg.method.method_lr} for s in stages}
    return update_manifest(run_dir, methods=methods, distill=settings).get("status", {})


def _retention_line(run_dir: Path, student: str, teacher: str, seed: int) -> str:
    path = run_dir / INFERENCE_SUMMARY.format(method=student)
    teacher_path = run_dir / INFERENCE_SUMMARY.format(method=teacher)
    if not path.exists() or not teacher_path.exists():
        return f"{student}: written to {run_dir}"
    s, t = pd.read_csv(path), pd.read_csv(teacher_path)
    s = s[s["seed"] == seed].iloc[0]  # a seed's first row is the manual test set when there is one
    t = t[t["test_set"] == s["test_set"]]
    if t.empty:
        return f"{student}: written to {run_dir}"
    t = t[t["seed"] == seed].iloc[0] if (t["seed"] == seed).any() else t.iloc[0]
    return (f"{student} on {s['test_set']}: accuracy {s['accuracy']:.4f} = {100 * s['accuracy'] / t['accuracy']:.1f}% "
            f"of {teacher}'s {t['accuracy']:.4f}, {s['tweets_per_sec'] / t['tweets_per_sec']:.2f}x its tweets/s")


# ------------------------------------------------------------------------------------------------ settings
def _flat(raw: dict) -> dict:
    flat: dict = {}
    for k, v in (raw or {}).items():
        if k in ("distill", "out"):
            continue
        flat.update(v if k in SECTIONS and isinstance(v, dict) else {k: v})
    return flat


def distill_settings(config: str | None, overrides: dict, flags: dict, out: str | None = None
                     ) -> tuple[RunConfig, DistillConfig]:
    """Settings, lowest precedence first. Data, model, method and training: defaults < the --config file < the
    teacher run's config (run.json: the students see the teacher's data split and test sets) < flags. The distill
    section: the teacher run's < the --config file's < flags."""
    file_raw: dict = {}
    if config:
        path = resolve_config_path(config)
        load_config(path)  # validates the file, with the usual messages
        file_raw = yaml.safe_load(path.read_text()) or {}
    given = {**(file_raw.get("distill") or {}), **flags}
    teacher = teacher_folder(given.get("teacher"))
    saved = read_manifest(teacher.parent).get("config") or {}
    flat = {**_flat(file_raw), **_flat(saved), **overrides}
    if not saved:
        flat.setdefault("model", base_model_path(teacher, read_json(teacher / MANIFEST)))
    d_raw = {**(saved.get("distill") or {}), **given, "teacher": str(teacher)}
    d = distill_config(d_raw, source=str(config or "flags"))
    cfg = from_dict({**flat, "distill": dataclasses.asdict(d)}, source=str(config or "flags"))
    if saved and out is None:
        teacher_data = from_dict(saved, source=str(teacher.parent / "run.json")).data
        changed = [f.name for f in dataclasses.fields(teacher_data) if getattr(teacher_data, f.name) !=
                   getattr(cfg.data, f.name)]
        if changed:
            raise ConfigError(
                f"sendit distill writes into the teacher's run folder {teacher.parent}, whose test sets come from "
                f"its data settings, but {', '.join('--' + c.replace('_', '-') for c in changed)} differ from them. "
                f"Drop those settings, or pass --out NEW_FOLDER to distil on other data."
            )
    return cfg, d


def distill_command(args: argparse.Namespace) -> int:
    """`sendit distill`: the flags of DistillConfig, the run-config flags, --config, --out, --no-report."""
    flags = {f.name: getattr(args, f.name) for f in dataclasses.fields(DistillConfig)
             if getattr(args, f.name, None) is not None}
    overrides = {k: v for k, v in vars(args).items() if k in field_index() and v is not None}
    cfg, d = distill_settings(args.config, overrides, flags, args.out)
    distill(cfg, d, args.out, report=not args.no_report)
    return 0
