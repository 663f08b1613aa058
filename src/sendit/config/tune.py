"""`sendit tune` settings: the `tune:` section of a config file (each field is also a flag). Torch-free, so that
the command line starts fast."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import yaml

from sendit.config.fields import check, coerce, setting, suggest
from sendit.config.schema import SECTIONS, RunConfig, from_dict, read_config_file
from sendit.errors import ConfigError

PRUNERS = ("median", "halving", "none")
BACKENDS = ("optuna", "ray")


@dataclass
class TuneConfig:
    trials: int = setting(12, "trials per method; finished, pruned and failed trials all count", low=1)
    time_cap_minutes: float | None = setting(
        None, "a safety net, not a budget: trial time per method, summed over its trials; when reached, the running "
        "trial stops after its current epoch (pruned) and the method is flagged as cut short in the verdict", low=0,
        open_low=True)
    pruner: str = setting("median", "stop bad trials after an epoch: 'median' (Optuna MedianPruner), 'halving' "
                     "(successive halving) or 'none'", choices=PRUNERS)
    prune_after_trials: int = setting(3, "trials of a method that always finish before the median pruner may prune",
                                      low=0)
    search_seed: int = setting(0, "seed of the TPE sampler (worker i uses seed + i)")
    start_from_defaults: bool = setting(True, "each method's first trial is its default configuration, so the tuned "
                                   "configuration is never worse on validation than the default")
    defaults: bool = setting(False, "also retrain each method's default configuration (<method>-default) with every "
                        "seed, to show what tuning changed")
    head_features: bool = setting(True, "head-only trials and confirmation runs train the head on the frozen model's "
                             "features, computed once per split and seed (in eval mode: no dropout in the frozen "
                             "part, a linear probe); false trains both through the whole model, as sendit run does")
    trial_seed: int | None = setting(None, "training seed of every search trial; default: one more than the largest "
                                "confirmation seed, so that no confirmation run repeats the run that won the search")
    margin: float = setting(1.0, "non-inferiority margin of the recommendation, in accuracy points: a cheaper method is "
                       "recommended only if its lower bound against the best is above -margin", low=0)
    workers: int = setting(1, "processes that share the study on this machine (each takes its share of the threads)",
                          low=1)
    storage: str | None = setting(None, "Optuna RDB URL (postgresql://..., mysql://...) shared by workers anywhere; "
                             "default: the run folder's journal file")
    backend: str = setting("optuna", "'optuna' (processes on this machine or sharing --storage) or 'ray' (Ray Tune)",
                           choices=BACKENDS)
    address: str | None = setting(None, "Ray cluster address for --backend ray ('auto': the running cluster)")
    space: dict = setting({}, "search-space overrides per method, e.g. {lora: {lora_r: {choices: [4, 8]}}}; a "
                     "parameter set to null is not searched")
    max_trainable_params: float | None = setting(None, "recommendation budget: most trainable parameters")
    max_peak_memory_mb: float | None = setting(None, "recommendation budget: most peak training memory (MB)")
    max_train_minutes: float | None = setting(None, "recommendation budget: most training minutes per run")

    def __post_init__(self) -> None:
        check(self)
        if not (isinstance(self.space, dict) and all(isinstance(v, dict) for v in self.space.values())):
            raise ConfigError(f"tune.space must map methods to parameter ranges, e.g. {{lora: {{lr: {{low: 1e-4, "
                              f"high: 1e-2, log: true}}}}}} (got {self.space!r})")

    def trial_seed_for(self, seeds: list[int]) -> int:
        """The trials' training seed: `trial_seed`, else one past the confirmation seeds."""
        return self.trial_seed if self.trial_seed is not None else max(seeds) + 1

    @property
    def budget_seconds(self) -> float | None:
        return None if self.time_cap_minutes is None else 60.0 * self.time_cap_minutes


def tune_config(raw: dict, source: str = "config") -> TuneConfig:
    names = [f.name for f in dataclasses.fields(TuneConfig)]
    for key in raw:
        if key not in names:
            raise ConfigError(f"{source}: unknown key 'tune.{key}'.{suggest(key, names)}")
    values = {}
    for k, v in raw.items():
        values[k] = _space(v) if k == "space" else coerce(TuneConfig, k, v)
    return TuneConfig(**values)


def _space(value: object) -> object:
    """YAML reads 1e-4 (no dot) as a string: turn range bounds into numbers."""
    if isinstance(value, str):
        value = yaml.safe_load(value) or {}
    if not isinstance(value, dict):
        return value
    for params in value.values():
        for spec in (params or {}).values() if isinstance(params, dict) else ():
            if isinstance(spec, dict):
                for bound in ("low", "high"):
                    if isinstance(spec.get(bound), str):
                        try:
                            spec[bound] = float(spec[bound])
                        except ValueError:
                            pass  # check_space names it
    return value


def load_tune_config(path: str | Path | None, overrides: dict, tune_overrides: dict) -> tuple[RunConfig, TuneConfig]:
    """A config file's run settings and its `tune:` section, each with the command line's flags applied."""
    raw = read_config_file(path) if path is not None else {}
    tune_raw = raw.pop("tune", None) or {}
    if not isinstance(tune_raw, dict):
        raise ConfigError(f"{path}: the tune section must be a mapping, e.g. tune: {{trials: 12}}")
    flat: dict = {}
    for k, v in raw.items():
        flat.update(v if k in SECTIONS and isinstance(v, dict) else {k: v})
    flat.update({k: v for k, v in overrides.items() if v is not None})
    tune_raw.update({k: v for k, v in tune_overrides.items() if v is not None})
    return from_dict(flat, source=str(path or "config")), tune_config(tune_raw, source=str(path or "flags"))
