"""Head-only (linear probe): the backbone is frozen, only the classification head trains."""

from sendit.methods import partial, register
from sendit.models import head_parameter_names


class Head:
    name = "head"
    default_lr = 2e-2

    def prepare(self, model, cfg):
        return partial.train_only(model, set(head_parameter_names(model)))

    save = staticmethod(partial.save_trainable)
    load = staticmethod(partial.load_trainable)

    def merge(self, model):
        return model


register(Head())
