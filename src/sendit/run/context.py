"""What every job of a run shares, built once: the Context (processes and trackers, tokenizer, the data split and
its encoded sets), and the checks a run makes of its data, model and tracker before its folder is touched."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from transformers import PreTrainedTokenizerBase

from sendit.config.schema import EMBEDDED_TEST_NAME, HELDOUT_NAME, RunConfig, test_set_name, validate_for_model
from sendit.data.dataset import Splits, Table, load_splits
from sendit.errors import ConfigError, ModelError
from sendit.train.batching import Encoded, encode
from sendit.train.device import Processes, resolve_precision
from sendit.train.measure import hardware
from sendit.train.models import _why, autoconfig, load_tokenizer, resolve
from sendit.verbosity import say


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




def run_hardware(ctx: Context) -> dict:
    """The machine, the number of processes and the precision of the run's inference passes."""
    h = hardware(ctx.accelerator.device)
    h.update(processes=ctx.accelerator.num_processes, precision=ctx.precision)
    return h
