"""Shared fixtures (the helpers they use are in tests/helpers.py): tiny OPT models built from OPTConfig with the
real OPT tokenizer, all offline."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import OPT_TOKENIZER, save_tiny_opt


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
