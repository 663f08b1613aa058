"""The run lifecycle: the run folder checked before anything is written, the data and the model checked,
the shared Context (processes, tokenizer, encoded splits), resume, the machine the run used."""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Callable

import torch
from transformers import PreTrainedTokenizerBase

from sendit.config.schema import EMBEDDED_TEST_NAME, HELDOUT_NAME, RunConfig, test_set_name, validate_for_model
from sendit.errors import ConfigError, ModelError
from sendit.data.dataset import Splits, Table, load_splits
from sendit.train.batching import Encoded, encode
from sendit.train.measure import hardware
from sendit.train.models import _why, autoconfig, load_tokenizer, resolve
from sendit.run.folder import (
    LOCK,
    clear_run_folder,
    holder_of,
    is_run_folder,
    read_manifest,
)
from sendit.train.device import Processes, resolve_precision
from sendit.verbosity import say




def check_run_dir(out: str | None, resume: bool = False, overwrite: bool = False,
                  sources: dict[str, str | None] | None = None) -> Path:
    """The run folder for --out (or --resume), checked and left untouched. `--overwrite` may replace only a folder
    whose run.json sendit wrote, and never one that holds a source of the run (`sources`: flag -> path) or the
    working directory."""
    run_dir = Path(out or f"runs/{datetime.now():%Y%m%d-%H%M%S}")
    if run_dir.exists() and not run_dir.is_dir():
        raise ConfigError(f"--out '{run_dir}' is a file; the run folder must be a folder. Pass another --out.")
    existing = next(p for p in [run_dir, *run_dir.parents] if p.exists() or p == Path(p.anchor or "."))
    if not existing.is_dir():
        raise ConfigError(f"--out '{run_dir}' cannot be made: '{existing}' is a file (Not a directory). Pass "
                          f"another --out.")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"--out '{run_dir}': no permission to write in '{existing}'. Pass another --out.")
    if resume:
        if not (run_dir / "run.json").exists():
            raise ConfigError(f"--resume {run_dir}: no run.json there, so there is nothing to resume.")
        if not is_run_folder(run_dir):
            raise ConfigError(f"--resume {run_dir}: its run.json was not written by sendit, so there is nothing to "
                              f"resume.")
        return run_dir
    if not run_dir.exists() or not [e for e in run_dir.iterdir() if e.name != LOCK]:
        return run_dir
    if not (run_dir / "run.json").exists():  # --overwrite deletes run folders only, never `--out .` or ~
        raise ConfigError(f"'{run_dir}' already exists, is not empty and is not a sendit run folder (no "
                          f"run.json), so it is left alone. Pass another --out.")
    if not is_run_folder(run_dir):
        raise ConfigError(f"'{run_dir}' holds a run.json that sendit did not write (or a damaged one), so it is not a "
                          f"sendit run folder and is left alone, even with --overwrite. Pass another --out.")
    if not overwrite:
        raise ConfigError(f"run folder '{run_dir}' already exists and is not empty. Pass --overwrite to replace "
                          f"it, --resume {run_dir} to continue it, or another --out.")
    held = holder_of(run_dir, {**(sources or {}), "the working directory": Path.cwd()})
    if held:
        raise ConfigError(f"--overwrite would delete '{run_dir}', which holds {held}; it is left alone. Pass "
                          f"another --out.")
    return run_dir


def prepare_run_dir(out: str | None, resume: bool = False, overwrite: bool = False,
                    sources: dict[str, str | None] | None = None) -> Path:
    """check_run_dir, then an empty (or resumed) run folder; for callers that take no lock (scripts)."""
    run_dir = check_run_dir(out, resume, overwrite, sources)
    if run_dir.exists() and not resume:
        clear_run_folder(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    return run_dir


def run_sources(cfg: RunConfig) -> dict[str, str | None]:
    """The files and folders a run reads, by flag: a folder that holds one is never deleted."""
    return {"--data": cfg.data.data, "--test-file": cfg.data.test_file, "--extra-train-file": cfg.data.extra_train_file,
            "--model": cfg.model.model}


@dataclass
class Context:
    """What every method of a run shares: data (tokenised once), tokenizer, processes, run folder (see build)."""

    cfg: RunConfig
    run_dir: Path
    log: Callable[[str], None]
    accelerator: Processes
    precision: str  # the run's precision for its inference passes (training resolves it from cfg.train.precision)
    tokenizer: PreTrainedTokenizerBase
    splits: Splits
    encoded: dict[str, Encoded]  # "train" and "val"
    # The hand-labelled file first (the study's test set: row 0 of every summary), each named by config.test_set_name.
    test_sets: dict[str, Table]
    encoded_tests: dict[str, Encoded]

    @classmethod
    def build(cls, cfg: RunConfig, run_dir: Path, log: Callable[[str], None] = say,
              splits: Splits | None = None) -> Context:
        """Set up a run: threads, processes and trackers, the tokenizer, the data split (read unless given) and
        its tokenised train/val/test sets."""
        check_tracker(cfg.train.tracker)  # distill and tune come here without run()'s earlier checks
        if cfg.train.threads:
            torch.set_num_threads(cfg.train.threads)
        accelerator = Processes(cfg.train.tracker, str(run_dir))
        accelerator.start_trackers(cfg.to_dict())
        precision = resolve_precision(cfg.train.precision, accelerator.device)
        tokenizer = load_tokenizer(cfg.model.model, cfg.model.trust_remote_code)
        splits = splits or load_data(cfg)
        test_sets: dict[str, Table] = {}
        if splits.manual is not None:
            test_sets[test_set_name(cfg.data) or EMBEDDED_TEST_NAME] = splits.manual
        test_sets[HELDOUT_NAME] = splits.test

        def enc(table: Table) -> Encoded:
            return encode(tokenizer, table.texts, table.labels, cfg.data.max_length)

        return cls(cfg, run_dir, log, accelerator, precision, tokenizer, splits,
                   {"train": enc(splits.train), "val": enc(splits.val)}, test_sets,
                   {k: enc(t) for k, t in test_sets.items()})

    def main(self) -> bool:
        return self.accelerator.is_main_process


def load_data(cfg: RunConfig) -> Splits:
    """The run's data split, with the checks that need it."""
    splits = load_splits(cfg.data)
    if cfg.train.batch_size > len(splits.train):
        raise ConfigError(f"--batch-size {cfg.train.batch_size} is larger than the {len(splits.train)} "
                          f"training rows; lower --batch-size or raise --train-size.")
    return splits


# The package each --tracker imports (accelerate's TensorBoardTracker, MLflowTracker and WandBTracker).
TRACKER_MODULES = {"tensorboard": "tensorboard", "mlflow": "mlflow", "wandb": "wandb"}


def check_tracker(tracker: str | None) -> None:
    """--tracker needs its package: without it accelerate only warns and the run tracks nothing."""
    if tracker and importlib.util.find_spec(TRACKER_MODULES[tracker]) is None:
        raise ConfigError(f"--tracker {tracker} needs the {TRACKER_MODULES[tracker]} package, which is not installed. "
                          f"Install it with pip install 'sendit[tracking]' (tensorboard, mlflow, wandb), or leave out "
                          f"--tracker.")


# What save_pretrained writes (one file, or the index of a sharded checkpoint).
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")


def check_against_model(cfg: RunConfig) -> None:
    """The options that depend on the model (--max-length, --target-modules, --lora-r), from its config alone: a
    model built on the meta device has every module name and no weights, so this takes a fraction of a second."""
    from transformers import AutoModelForSequenceClassification

    folder = Path(resolve(cfg.model.model))
    if folder.is_dir() and not any((folder / name).exists() for name in WEIGHT_FILES):
        raise ModelError(f"model folder '{cfg.model.model}' has no weights (none of {', '.join(WEIGHT_FILES)}). Pass "
                         f"a folder written by save_pretrained, a hub id such as facebook/opt-125m, or 'embedded'.")
    # transformers builds an empty tokenizer for a folder without tokenizer files; training then fails mid-epoch.
    tokenizer = load_tokenizer(cfg.model.model, cfg.model.trust_remote_code)
    if not tokenizer("a good day", add_special_tokens=False)["input_ids"]:
        raise ModelError(f"model '{cfg.model.model}' has no usable tokenizer (its vocabulary has {len(tokenizer)} "
                         f"tokens: tokenizer.json or vocab files missing?). Save the tokenizer into the model folder "
                         f"(tokenizer.save_pretrained), or pass a complete model folder, a hub id, or 'embedded'.")
    try:
        config = autoconfig(cfg.model.model, cfg.model.trust_remote_code)
        names = None
        if getattr(cfg.method, "target_modules", None):
            with torch.device("meta"):
                model = AutoModelForSequenceClassification.from_config(
                    config, trust_remote_code=cfg.model.trust_remote_code)
            names = [n for n, module in model.named_modules() if n and not any(module.children())]
    except (OSError, ValueError) as e:
        raise ModelError(f"could not load model '{cfg.model.model}': " + _why(e, "Pass a folder written by "
                         "save_pretrained, a hub id such as facebook/opt-125m, or 'embedded'.")) from None
    validate_for_model(cfg, config, names)


def _resumed_config(run_dir: Path, cfg: RunConfig) -> RunConfig:
    """On --resume the run's own config wins: the run must finish as it started."""
    from sendit.config.schema import from_dict

    saved = read_manifest(run_dir).get("config")
    if not saved:
        return cfg
    saved["out"] = str(run_dir)
    return from_dict(saved, source=str(run_dir / "run.json"))


def run_hardware(ctx: Context) -> dict:
    """The machine, the number of processes and the precision of the run's inference passes."""
    h = hardware(ctx.accelerator.device)
    h.update(processes=ctx.accelerator.num_processes, precision=ctx.precision)
    return h
