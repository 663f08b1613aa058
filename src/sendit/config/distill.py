"""`sendit distill` settings: the `distill:` section of a config file (each field is also a flag). Torch-free, so
that the command line starts fast."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from sendit.config.fields import check, coerce, setting, suggest
from sendit.errors import ConfigError


@dataclass
class DistillConfig:
    """The student, the teacher and the distillation loss; __post_init__ checks them together."""

    teacher: str | None = setting(None, "the fine-tuned teacher's model folder, RUN_DIR/<method>")
    student_layers: int | None = setting(
        None, "student depth, initialised from every (teacher depth / N)-th teacher layer starting at 0 "
        "(DistilBERT-style: 6 -> 3 keeps 0,2,4; 12 -> 6 keeps 0,2,..,10); default half the teacher's", low=1
    )
    layers: list | None = setting(None, "the teacher layers copied into the student, e.g. 0,2,5 (instead of --student-layers)")
    student_model: str | None = setting(
        None, "a smaller model (hub id or folder) as the student instead of teacher layers"
    )
    chain: list | None = setting(
        None, "iterative distillation: layer counts, e.g. 12,6,3 (teacher -> assistant -> student); each stage "
        "learns from the previous stage's fine-tuned model"
    )
    method: str = setting("full", "method that trains each student (see `sendit methods`)")
    kd_ratio: float = setting(0.5, "weight of the distillation term: (1 - kd_ratio) * CE + kd_ratio * T^2 * KL",
                              low=0, high=1)
    temperature: float = setting(2.0, "softmax temperature T of the distillation term", low=0, open_low=True)

    def __post_init__(self) -> None:
        for name in ("chain", "layers"):
            value = getattr(self, name)
            if isinstance(value, str):
                value = [v for v in value.split(",") if v.strip()]
            try:
                setattr(self, name, None if value is None else [int(v) for v in value])
            except (TypeError, ValueError):
                raise ConfigError(f"--{name} must be comma-separated integers like 6,3 (got {value!r})") from None
        students = [f"--{n.replace('_', '-')}" for n in ("student_layers", "layers", "student_model", "chain")
                    if getattr(self, n) not in (None, [])]
        check(self)
        checks = [
            (len(students) <= 1, f"{' and '.join(students)} each choose the student: give one of them"),
            (all(n >= 0 for n in self.layers or []), f"--layers must be layer indices >= 0 (got {self.layers})"),
            (all(n >= 1 for n in self.chain or []), f"--chain layer counts must be >= 1 (got {self.chain})"),
        ]
        for ok, msg in checks:
            if not ok:
                raise ConfigError(msg)


def distill_config(raw: dict, source: str = "config") -> DistillConfig:
    """A DistillConfig from a `distill:` mapping or flags; unknown keys fail with a suggestion."""
    names = [f.name for f in dataclasses.fields(DistillConfig)]
    for key in raw:
        if key not in names:
            raise ConfigError(f"{source}: unknown key 'distill.{key}'.{suggest(key, names)}")
    return DistillConfig(**{k: v if k in ("chain", "layers") else coerce(DistillConfig, k, v) for k, v in raw.items()})
