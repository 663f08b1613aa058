"""Full fine-tuning: every parameter trains; the whole model is saved in the standard transformers format."""

from pathlib import Path

from transformers import AutoModelForSequenceClassification

from sendit.methods import register


class Full:
    name = "full"
    default_lr = 1e-4

    def prepare(self, model, cfg):
        for p in model.parameters():
            p.requires_grad_(True)
        return model

    def save(self, model, folder: Path) -> list[Path]:
        model.save_pretrained(folder, safe_serialization=True)
        return sorted(Path(folder).glob("model*.safetensors"))

    def load(self, folder, base):
        return AutoModelForSequenceClassification.from_pretrained(folder)

    def merge(self, model):
        return model


register(Full())
