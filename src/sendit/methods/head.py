"""Head-only (linear probe): the backbone is frozen, only the classification head trains."""

import sendit.methods.partial as partial
from sendit.methods.registry import register


class Head:
    name = "head"
    default_lr = 2e-2
    is_adapter = False  # saves the base model's own tensors that it trained
    display_name = "Head-only"  # in reports
    cost_rank = 0  # report order: cheapest first
    # A linear probe has no warm-up instability and few weights to regularise: the rate is what matters.
    search_space = {"lr": {"low": 1e-3, "high": 1e-1, "log": True}}
    # Only the head trains, so `sendit tune` trials may train it on the frozen model's features (features.py).
    frozen_features = True

    def prepare(self, model, cfg):
        from sendit.train.models import head_parameter_names

        return partial.train_only(model, set(head_parameter_names(model)))

    save = staticmethod(partial.save_trainable)
    load = staticmethod(partial.load_trainable)

    def merge(self, model):
        return model


register(Head())
