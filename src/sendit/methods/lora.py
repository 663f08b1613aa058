"""LoRA (Hu et al., 2021) and DoRA (Liu et al., 2024) through peft; the classification head trains in full."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from sendit.config.fields import check, names, setting
from sendit.methods.registry import TARGET_MODULES_HELP, register, target_modules_problem
from sendit.methods.adapter import PeftAdapter

if TYPE_CHECKING:
    from peft import LoraConfig

# Attention projections per architecture; peft's own table covers more models and is used otherwise.
TARGETS = {
    "bert": ["query", "key", "value"],
    "opt": ["q_proj", "v_proj"],
    "roberta": ["query", "key", "value"],
    "distilbert": ["q_lin", "k_lin", "v_lin"],
}


# Rank, scale and dropout are what the peft method comparison varies; "all-linear" adapts the feed-forward
# layers too (peft's own choice of every linear layer but the head).
SEARCH_SPACE = {
    "lr": {"low": 1e-4, "high": 1e-2, "log": True},
    "lora_r": {"choices": [4, 8, 16, 32]},
    "lora_alpha": {"choices": [8, 16, 32, 64]},
    "lora_dropout": {"low": 0.0, "high": 0.2},
    "target_modules": {"choices": ["attention", "all-linear"]},
}


@dataclass
class LoraSettings:
    """LoRA's and DoRA's settings: keys of the `method:` section, and flags (--lora-r 16)."""

    lora_r: int = setting(8, "LoRA/DoRA rank", low=1)
    lora_alpha: int = setting(16, "LoRA/DoRA scaling alpha", low=1)
    lora_dropout: float = setting(0.1, "LoRA/DoRA dropout", low=0, high=1, open_high=True)
    target_modules: list | None = setting(None, TARGET_MODULES_HELP, check=names)

    def __post_init__(self) -> None:
        check(self)


class Lora(PeftAdapter):
    name = "lora"
    default_lr = 2e-3
    display_name = "LoRA"  # in reports
    cost_rank = 3  # report order: cheapest first
    use_dora = False
    search_space = SEARCH_SPACE
    settings = LoraSettings

    def check_model(self, cfg, model_config, model: str, module_names: list[str] | None) -> str | None:
        """--target-modules against the model's modules; a rank wider than the layers it adapts (which peft
        would accept)."""
        problem = target_modules_problem(cfg.target_modules, module_names, model)
        width = getattr(model_config, "hidden_size", None)
        if not problem and isinstance(width, int) and cfg.lora_r > width:
            problem = (f"--lora-r {cfg.lora_r} is larger than the {width}-wide {model}: a LoRA rank must be at most "
                       f"the width it adapts (8-64 is usual).")
        return problem

    def peft_config(self, model, cfg) -> LoraConfig:
        from peft import LoraConfig, TaskType

        from sendit.train.models import model_type

        targets = cfg.target_modules or TARGETS.get(model_type(model))
        return LoraConfig(
            task_type=TaskType.SEQ_CLS,
            r=cfg.lora_r,
            lora_alpha=cfg.lora_alpha,
            lora_dropout=cfg.lora_dropout,
            target_modules="all-linear" if targets == ["all-linear"] else targets,  # peft wants the bare string
            use_dora=self.use_dora,
        )


class Dora(Lora):
    name = "dora"
    default_lr = 2e-3
    display_name = "DoRA"
    cost_rank = 4
    use_dora = True


register(Lora())
register(Dora())
