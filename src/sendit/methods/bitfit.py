"""BitFit (Ben Zaken et al., 2022): train every bias term and the classification head, nothing else."""

import sendit.methods.partial as partial
from sendit.methods.registry import register


def bias_names(model) -> set[str]:
    return {n for n, _ in model.named_parameters() if n.endswith(".bias") or n == "bias"}


class BitFit:
    name = "bitfit"
    default_lr = 5e-3
    is_adapter = False  # saves the base model's own tensors that it trained
    display_name = "BitFit"  # in reports
    cost_rank = 1  # report order: cheapest first
    # Biases take large rates (Ben Zaken et al. used 1e-4..1e-2); early large steps on them can diverge.
    search_space = {
        "lr": {"low": 1e-4, "high": 3e-2, "log": True},
        "warmup_ratio": {"low": 0.0, "high": 0.2},
    }

    def prepare(self, model, cfg):
        from sendit.train.models import head_parameter_names

        return partial.train_only(model, bias_names(model) | set(head_parameter_names(model)))

    save = staticmethod(partial.save_trainable)
    load = staticmethod(partial.load_trainable)

    def merge(self, model):
        return model


register(BitFit())
