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


class Lora:
    name = "lora"
    default_lr = 2e-3
    use_dora = False

    def peft_config(self, model, cfg) -> LoraConfig:
        return LoraConfig(
            task_type=TaskType.SEQ_CLS,
            r=cfg.lora_r,
            lora_alpha=cfg.lora_alpha,
            lora_dropout=cfg.lora_dropout,
            target_modules=cfg.target_modules or TARGETS.get(model_type(model)),
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
    use_dora = True


register(Lora())
register(Dora())
