"""(IA)^3 (Liu et al., 2022) through peft: learned rescaling of keys, values and feed-forward activations."""

from __future__ import annotations

from dataclasses import dataclass

from sendit.config.fields import check, names, setting
from sendit.methods.registry import TARGET_MODULES_HELP, register, target_modules_problem
from sendit.methods.adapter import PeftAdapter

TARGETS = {
    "bert": (["key", "value", "output.dense"], ["output.dense"]),
    "opt": (["k_proj", "v_proj", "fc2"], ["fc2"]),
}


@dataclass
class IA3Settings:
    """(IA)^3's setting (LoRA declares the same one: one --target-modules flag for both)."""

    target_modules: list | None = setting(None, TARGET_MODULES_HELP, check=names)

    def __post_init__(self) -> None:
        check(self)


class IA3(PeftAdapter):
    name = "ia3"
    default_lr = 5e-3
    display_name = "IA³"  # in reports
    cost_rank = 2  # report order: cheapest first
    search_space = {
        "lr": {"low": 1e-4, "high": 3e-2, "log": True},
        "warmup_ratio": {"low": 0.0, "high": 0.2},
    }
    settings = IA3Settings

    def check_model(self, cfg, model_config, model: str, module_names: list[str] | None) -> str | None:
        return target_modules_problem(cfg.target_modules, module_names, model)

    def peft_config(self, model, cfg):
        from peft import IA3Config, TaskType

        from sendit.train.models import model_type

        targets, feedforward = TARGETS.get(model_type(model), (None, None))
        if cfg.target_modules:
            targets, feedforward = cfg.target_modules, [m for m in cfg.target_modules if m in (feedforward or [])]
        return IA3Config(task_type=TaskType.SEQ_CLS, target_modules=targets, feedforward_modules=feedforward)


register(IA3())
