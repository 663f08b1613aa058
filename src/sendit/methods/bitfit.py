"""BitFit (Ben Zaken et al., 2022): train every bias term and the classification head, nothing else."""

from sendit.methods import partial, register
from sendit.models import head_parameter_names


def bias_names(model) -> set[str]:
    return {n for n, _ in model.named_parameters() if n.endswith(".bias") or n == "bias"}


class BitFit:
    name = "bitfit"
    default_lr = 5e-3

    def prepare(self, model, cfg):
        return partial.train_only(model, bias_names(model) | set(head_parameter_names(model)))

    save = staticmethod(partial.save_trainable)
    load = staticmethod(partial.load_trainable)

    def merge(self, model):
        return model


register(BitFit())
