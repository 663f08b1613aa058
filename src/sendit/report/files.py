"""Display names shared by the report modules, and the run folder's atomic writers (from sendit.run.folder) they use."""

from __future__ import annotations

from sendit.run.folder import atomic_write_bytes, atomic_write_text

__all__ = ["PRETTY_METHODS", "RECORDED", "atomic_write_bytes", "atomic_write_text", "pretty", "record_methods"]

PRETTY_METHODS = {
    "bitfit": "BitFit",
    "lora": "LoRA",
    "dora": "DoRA",
    "ia3": "IA³",
    "full": "Full FT",
    "head": "Head-only",
}


# What each method says of itself (`display_name`, `cost_rank`), as run.json records it under `method_info`; the
# table above names the built-in methods of run folders written before run.json recorded that.
RECORDED: dict[str, dict] = {}


def record_methods(method_info: dict) -> None:
    """Remember the display names and report order that a run folder's run.json records for its methods."""
    RECORDED.update({k: v for k, v in (method_info or {}).items() if isinstance(v, dict)})


def pretty(label: str) -> str:
    """Display name of a method label; a `run/method` label keeps its run prefix."""
    run, _, method = label.rpartition("/")
    name = RECORDED.get(method, {}).get("display_name") or PRETTY_METHODS.get(method, method)
    return f"{run}/{name}" if run else name
