"""LoRA (Hu et al., 2021) and DoRA (Liu et al., 2024) through peft; the classification head trains in full."""

from __future__ import annotations

from pathlib import Path

from peft import LoraConfig, PeftModel, TaskType, get_peft_model

from sendit.methods import register
from sendit.models import model_type

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


class Lora:
    name = "lora"
    default_lr = 2e-3
    is_adapter = True  # a peft adapter on top of the base model; `sendit export --no-merge` keeps it so
    display_name = "LoRA"  # in reports
    cost_rank = 3  # report order: cheapest first
    use_dora = False
    search_space = SEARCH_SPACE

    def peft_config(self, model, cfg) -> LoraConfig:
        targets = cfg.target_modules or TARGETS.get(model_type(model))
        return LoraConfig(
            task_type=TaskType.SEQ_CLS,
            r=cfg.lora_r,
            lora_alpha=cfg.lora_alpha,
            lora_dropout=cfg.lora_dropout,
            target_modules="all-linear" if targets == ["all-linear"] else targets,  # peft wants the bare string
            use_dora=self.use_dora,
        )

    def prepare(self, model, cfg):
        return get_peft_model(model, self.peft_config(model, cfg))

    def save(self, model, folder: Path) -> list[Path]:
        model.save_pretrained(folder, safe_serialization=True)
        return sorted(Path(folder).glob("adapter_model*.safetensors"))

    def load(self, folder, base):
        return PeftModel.from_pretrained(base(), folder)

    def merge(self, model):
        return model.merge_and_unload()


class Dora(Lora):
    name = "dora"
    default_lr = 2e-3
    display_name = "DoRA"
    cost_rank = 4
    use_dora = True


register(Lora())
register(Dora())
