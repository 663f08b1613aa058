"""Full fine-tuning: every parameter trains; the whole model is saved in the standard transformers format."""

from pathlib import Path

from sendit.methods.registry import register


class Full:
    name = "full"
    default_lr = 1e-4
    is_adapter = False  # saves the whole model
    display_name = "Full FT"  # in reports
    cost_rank = 5  # report order: cheapest first
    # Every weight moves: warm-up guards the pretrained weights from the first noisy steps, and weight decay is
    # the only regulariser.
    search_space = {
        "lr": {"low": 1e-5, "high": 3e-4, "log": True},
        "warmup_ratio": {"low": 0.0, "high": 0.2},
        "weight_decay": {"low": 0.0, "high": 0.1},
    }

    def prepare(self, model, cfg):
        for p in model.parameters():
            p.requires_grad_(True)
        return model

    def save(self, model, folder: Path) -> list[Path]:
        model.save_pretrained(folder, safe_serialization=True)
        return sorted(Path(folder).glob("model*.safetensors"))

    def load(self, folder, base):
        from transformers import AutoModelForSequenceClassification

        return AutoModelForSequenceClassification.from_pretrained(folder)

    def merge(self, model):
        return model


register(Full())
