"""Knowledge distillation and iterative fine-tuning: the "neural distillate".

Distillation is a loss, not a framework. A student trains in the one `engine.fit` loop with Hinton et al.'s (2015)
blend of the label loss and the teacher's softened predictions,

    loss = (1 - kd_ratio) * CE(student, labels) + kd_ratio * T^2 * KL(softmax(teacher / T) || softmax(student / T)),

where the teacher's logits over the training set are computed once and cached in the run folder. The student is
the teacher's own architecture with fewer layers, initialised from a subset of the teacher's layers (DistilBERT,
Sanh et al., 2019), or any other model. A chain (`--chain 12,6,3`) distils stage by stage, each stage's teacher
being the previous stage's fine-tuned model (teacher assistants, Mirzadeh et al., 2020).

This module plans the stages and runs them; the loss, the student surgery and the cache are sendit.recipes.distill.students.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pandas as pd
import torch
from transformers import AutoConfig

from sendit.config.distill import DistillConfig, distill_config
from sendit.config.schema import RunConfig, flatten, from_dict, read_config_file, resolve_config_path
from sendit.data.dataset import Splits
from sendit.data.labels import BINARY
from sendit.errors import ConfigError, ModelError
from sendit.methods import get_method
from sendit.run.context import Context, load_data, run_hardware
from sendit.run.folder import (
    CACHE,
    EPOCH_LOGS,
    INFERENCE_SUMMARY,
    PREDICTIONS,
    RESULTS,
    RUN_MANIFEST,
    STUDENT_BASE,
    atomic_write_json,
    model_folder_name,
    read_manifest,
    start_manifest,
    update_manifest,
)
from sendit.run.lifecycle import Job, check_added_to, finish_run, open_run, run_jobs
from sendit.run.method import train_method
from sendit.serve.model_folder import MANIFEST, base_model_path, load
from sendit.train.batching import encode
from sendit.train.engine import class_weights
from sendit.train.models import load_model, load_tokenizer, num_layers, resolve
from sendit.recipes.distill.students import cached_teacher_logits, default_layers, kd_loss, read_json, student_from_teacher


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
    return dataclasses.replace(
        ctx, tokenizer=tokenizer, encoded={"train": train, "val": encode(tokenizer, s.val.texts, s.val.labels, m)},
        encoded_tests={k: encode(tokenizer, t.texts, t.labels, m) for k, t in ctx.test_sets.items()})


def distill_stage(ctx: Context, stage: Stage, teacher_dir: Path, d: DistillConfig, seed: int) -> Path:
    """One student: teacher logits (cached) -> student init -> fit with the KD loss -> save -> test. Returns the
    student's model folder (the next stage's teacher)."""
    cfg, accelerator = ctx.cfg, ctx.accelerator
    folder = ctx.run_dir / model_folder_name(stage.label, seed, cfg.seed_list()[0])
    if folder.resolve() == teacher_dir.resolve():
        raise ConfigError(f"the student {stage.label} would overwrite its teacher {teacher_dir}; choose another "
                          f"--method or layer count.")
    precision = ctx.precision  # the run's, resolved once
    teacher = functools.cache(lambda: load(teacher_dir, precision=precision))
    teacher_tok = load_tokenizer(str(teacher_dir))
    train = encode(teacher_tok, ctx.splits.train.texts, ctx.splits.train.labels, cfg.data.max_length)
    soft, cache = cached_teacher_logits(teacher, teacher_dir, train, cfg.data.max_length, ctx.run_dir / CACHE,
                                        accelerator, cfg.train.eval_batch_size, ctx.log, precision=precision)
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
            student_from_teacher(teacher().model, stage.layers).save_pretrained(folder / STUDENT_BASE)
            tok.save_pretrained(folder / STUDENT_BASE)
    accelerator.wait_for_everyone()
    teacher.cache_clear()  # the teacher's memory is the student's from here on
    base_path = base_model_path(folder, {"base_model": base})

    classes = ctx.splits.classes
    weights = class_weights(ctx.splits.train.labels, len(classes)) if cfg.data.class_balance == "weight" else None

    def loss_fn(logits: torch.Tensor, batch: dict) -> tuple[torch.Tensor, dict]:
        return kd_loss(logits, soft[batch["idx"]].to(logits.device), batch["labels"], d.kd_ratio, d.temperature,
                       None if weights is None else weights.to(logits.device))

    extra = {
        "teacher": _relative(teacher_dir, ctx.run_dir), "teacher_method": teacher_label(teacher_dir),
        "student_layers": stage.depth, "kd_ratio": d.kd_ratio, "temperature": d.temperature, "student_init": init,
        "teacher_cache": _relative(cache, ctx.run_dir), "model": name,
    }
    ctx.log(f"{stage.label} (seed {seed}): student = {init}, taught by {teacher_dir} (kd_ratio {d.kd_ratio:g}, "
            f"T {d.temperature:g})")
    train_method(_with_tokenizer(ctx, tok), d.method, seed, model_factory=lambda: load_model(base_path, tok, classes=classes),
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
    check_added_to(run_dir, "students")
    splits = load_data(cfg)  # every data file read before anything is written
    taught = tuple(read_json(teacher / MANIFEST).get("labels") or BINARY)
    if taught != splits.classes:
        raise ConfigError(f"the teacher {teacher} was trained on the classes {', '.join(taught)}, the data has "
                          f"{', '.join(splits.classes)}: a student learns the teacher's classes. Pass the teacher's "
                          f"data settings (--labels, --label-map), or another teacher.")
    with open_run(run_dir, fresh=False):  # the teacher's run folder, or a new one: never cleared
        return _distill_into(run_dir, cfg, d, teacher, stages, splits, report, log)


def _distill_into(run_dir: Path, cfg: RunConfig, d: DistillConfig, teacher: Path, stages: list[Stage],
                  splits: Splits, report: bool, log: Callable[[str], None]) -> Path:
    t0 = time.perf_counter()
    ctx = Context.build(cfg, run_dir, log, splits)
    _start_manifest(ctx, teacher, stages, d)
    log(f"distillation {teacher} -> " + " -> ".join(s.label for s in stages) + f" into {run_dir}")

    def stage_job(stage: Stage, seed: int, stage_teacher: Path) -> None:
        distill_stage(ctx, stage, stage_teacher, d, seed)
        log(_retention_line(run_dir, stage.label, teacher_label(teacher), seed))

    jobs = []
    for seed in cfg.seed_list():  # each stage of a chain is taught by the one before: it needs that one
        for before, stage in zip([None, *stages], stages):
            stage_teacher = teacher if before is None else run_dir / model_folder_name(before.label, seed,
                                                                                      cfg.seed_list()[0])
            jobs.append(Job(f"{stage.label}/seed{seed}", lambda a=(stage, seed, stage_teacher): stage_job(*a),
                            needs=None if before is None else f"{before.label}/seed{seed}"))
    run_jobs(run_dir, jobs, log, main=ctx.main())
    ctx.accelerator.end_trackers()
    finish_run(run_dir, t0, main=ctx.main(), wall_key="distill_wall_time_sec")
    if report and ctx.main():
        from sendit.report import report_run  # matplotlib and pandas only when a report is written

        report_run(run_dir, log)
    return run_dir


def _start_manifest(ctx: Context, teacher: Path, stages: list[Stage], d: DistillConfig) -> dict:
    """Into the teacher's run folder: add the students to run.json. Into a new folder: a full run.json, and a copy
    of the teacher's rows so that its report can compare students with their teacher."""
    run_dir, cfg = ctx.run_dir, ctx.cfg
    manifest = read_manifest(run_dir)
    if not ctx.main():
        return manifest.get("status", {})
    if not manifest:
        manifest = start_manifest(run_dir, cfg.to_dict(), cfg.seed_list(), run_hardware(ctx), ctx.splits.summary(),
                                  methods=[])
    names = [teacher_label(teacher)] if teacher.parent.resolve() != run_dir.resolve() else []
    for template in (RESULTS, EPOCH_LOGS, INFERENCE_SUMMARY, PREDICTIONS) if names else ():
        src = teacher.parent / template.format(method=names[0])
        if src.exists() and not (run_dir / src.name).exists():
            shutil.copyfile(src, run_dir / src.name)
    methods = list(dict.fromkeys(manifest.get("methods", []) + names + [s.label for s in stages]))
    settings = {s.label: {"teacher": str(teacher), "student": s.student_model or f"layers {s.layers}",
                          **dataclasses.asdict(d), "train": dataclasses.asdict(cfg.train),
                          "method_lr": cfg.method.method_lr} for s in stages}
    manifest = update_manifest(run_dir, methods=methods, distill=settings)
    # A distillation trains its students anew (there is no --resume for it): their earlier status is dropped, so
    # the job loop runs every stage.
    labels = {s.label for s in stages}
    manifest["status"] = {k: v for k, v in manifest.get("status", {}).items() if k.split("/")[0] not in labels}
    atomic_write_json(manifest, run_dir / RUN_MANIFEST)
    return manifest["status"]


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
def distill_settings(config: str | None, overrides: dict, flags: dict, out: str | None = None
                     ) -> tuple[RunConfig, DistillConfig]:
    """Settings, lowest precedence first. Data, model, method and training: defaults < the --config file < the
    teacher run's config (run.json: the students see the teacher's data split and test sets) < flags. The distill
    section: the teacher run's < the --config file's < flags."""
    file_raw: dict = {}
    if config:
        path = resolve_config_path(config)
        file_raw = read_config_file(path)  # read once: it may be a pipe
        from_dict(flatten(file_raw), source=str(path))  # validates the file, with the usual messages
    given = {**(file_raw.get("distill") or {}), **flags}
    teacher = teacher_folder(given.get("teacher"))
    saved = read_manifest(teacher.parent).get("config") or {}
    own = ("distill", "out")  # the distill section is read below; --out is the caller's
    flat = {**flatten(file_raw, skip=own), **flatten(saved, skip=own), **overrides}
    if not saved:
        flat.setdefault("model", base_model_path(teacher, read_json(teacher / MANIFEST)))
    d_raw = {**(saved.get("distill") or {}), **given, "teacher": str(teacher)}
    d = distill_config(d_raw, source=str(config or "flags"))
    cfg = from_dict({**flat, "distill": d}, source=str(config or "flags"))
    if saved and out is None:
        teacher_data = from_dict(saved, source=str(teacher.parent / RUN_MANIFEST)).data
        changed = [f.name for f in dataclasses.fields(teacher_data) if getattr(teacher_data, f.name) !=
                   getattr(cfg.data, f.name)]
        if changed:
            raise ConfigError(
                f"sendit distill writes into the teacher's run folder {teacher.parent}, whose test sets come from "
                f"its data settings, but {', '.join('--' + c.replace('_', '-') for c in changed)} differ from them. "
                f"Drop those settings, or pass --out NEW_FOLDER to distil on other data."
            )
    return cfg, d
