"""Display names shared by the report modules, and the run folder's atomic writers (from sendit.run.folder) they use."""

from __future__ import annotations

from sendit.run.folder import atomic_write_bytes, atomic_write_text

__all__ = ["PRETTY_METHODS", "atomic_write_bytes", "atomic_write_text", "pretty"]

PRETTY_METHODS = {
    "bitfit": "BitFit",
    "lora": "LoRA",
    "dora": "DoRA",
    "ia3": "IA³",
    "full": "Full FT",
    "head": "Head-only",
}


def pretty(label: str, info: dict[str, dict] | None = None) -> str:
    """Display name of a method label; a `run/method` label keeps its run prefix.

    `info` is what the report's run folders record of their methods (`RunData.method_info`: run.json
    `method_info`); the table above names the built-in methods of run folders written before run.json recorded
    that. Passed in, never kept here, so that one report's names cannot leak into another's.
    """
    run, _, method = label.rpartition("/")
    name = (info or {}).get(method, {}).get("display_name") or PRETTY_METHODS.get(method, method)
    return f"{run}/{name}" if run else name
