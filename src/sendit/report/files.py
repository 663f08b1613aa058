"""Atomic file writes and display names shared by the report modules."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

PRETTY_METHODS = {
    "bitfit": "BitFit",
    "lora": "LoRA",
    "dora": "DoRA",
    "ia3": "IA³",
    "full": "Full FT",
    "head": "Head-only",
}


_UMASK = os.umask(0)
os.umask(_UMASK)


def pretty(label: str) -> str:
    """Display name of a method label; a `run/method` label keeps its run prefix."""
    run, _, method = label.rpartition("/")
    name = PRETTY_METHODS.get(method, method)
    return f"{run}/{name}" if run else name


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write via a temporary file in the same folder so a reader never sees a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the file the usual permissions
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))
