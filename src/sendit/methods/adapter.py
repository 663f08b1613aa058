"""Shared by the peft adapter methods (LoRA, DoRA, IA3, and out-of-tree ones): an adapter method differs from
another only in its peft config, so saving, loading and merging are written once here.

A model folder of an adapter method holds peft's own files (adapter_model.safetensors + adapter_config.json) beside
the tokenizer: `sendit export --no-merge` copies them as they are, and peft alone can load them on the base model.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:
    from peft import PeftConfig
    from torch import nn


class PeftAdapter:
    """Base of a method that trains a peft adapter beside the frozen base model. A subclass sets the Method
    attributes (name, default_lr, display_name, cost_rank, search_space, settings) and writes `peft_config`."""

    is_adapter = True  # `sendit export --no-merge` keeps the adapter unmerged

    def peft_config(self, model: nn.Module, cfg: Any) -> PeftConfig:
        """The peft config for this model and the method's settings (`cfg`: the config's method section)."""
        raise NotImplementedError(f"{type(self).__name__} must define peft_config(model, cfg)")

    def prepare(self, model: nn.Module, cfg: Any) -> nn.Module:
        from peft import get_peft_model

        return get_peft_model(model, self.peft_config(model, cfg))

    def save(self, model: nn.Module, folder: Path) -> list[Path]:
        model.save_pretrained(folder, safe_serialization=True)
        return sorted(Path(folder).glob("adapter_model*.safetensors"))

    def load(self, folder: Path, base: Callable[[], nn.Module]) -> nn.Module:
        from peft import PeftModel

        return PeftModel.from_pretrained(base(), folder)

    def merge(self, model: nn.Module) -> nn.Module:
        return model.merge_and_unload()
