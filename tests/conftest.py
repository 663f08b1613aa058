"""Shared fixtures (the helpers they use are in tests/helpers.py): tiny OPT models built from OPTConfig with the
real OPT tokenizer, all offline."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import OPT_TOKENIZER, save_tiny_bert, save_tiny_opt, tiny_run_args


@pytest.fixture(scope="session")
def tiny_opt(tmp_path_factory) -> Path:
    return save_tiny_opt(tmp_path_factory.mktemp("tiny-opt"))


@pytest.fixture(scope="session")
def opt_tokenizer():
    from sendit.train.models import load_tokenizer

    return load_tokenizer(str(OPT_TOKENIZER))


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models gain nothing from a second thread, and lose a lot to it on a busy 2-core machine. Module-scoped,
    so that the module's own module-scoped model fixtures are built with one thread too (use via pytestmark)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# ------------------------------------------------------------------------------------- shared tiny runs (read-only)
def _snapshot(folder: Path) -> dict:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(folder.rglob("*"))}


def _shared_run(root: Path, base: Path, methods: str):
    """Train `methods` on `base` into root/"run" with tiny_run_args' defaults (one thread: a tiny model gains
    nothing from a second), then hand out the folder; at the end of the session, fail if any test wrote into it."""
    import torch

    from sendit.cli import main

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main(tiny_run_args(base, root / "run", methods)) == 0
    finally:
        torch.set_num_threads(threads)
    before = _snapshot(root)
    yield root
    assert _snapshot(root) == before, f"a test wrote into the shared run {root}: copy it first (shutil.copytree)"


@pytest.fixture(scope="session")
def opt_run(tmp_path_factory):
    """root/"tiny-opt" (save_tiny_opt, seed 0) and root/"run": bitfit, full, head and lora trained on it by
    tiny_run_args (the embedded tweets, two epochs, no report). Shared by the session's tests that read a finished
    run's model folders (export, onnx, model card, bench --inference): never write into it; copy it first."""
    root = tmp_path_factory.mktemp("shared-opt-run")
    yield from _shared_run(root, save_tiny_opt(root / "tiny-opt"), "bitfit,full,head,lora")


@pytest.fixture(scope="session")
def bert_run(tmp_path_factory):
    """root/"tiny-bert" (save_tiny_bert) and root/"run": head and lora trained on it by tiny_run_args. Shared
    read-only like opt_run (export, onnx, serve)."""
    root = tmp_path_factory.mktemp("shared-bert-run")
    yield from _shared_run(root, save_tiny_bert(root / "tiny-bert"), "head,lora")
