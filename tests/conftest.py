"""Shared fixtures: tiny OPT models built from OPTConfig with the real OPT tokenizer, all offline."""

from __future__ import annotations

from pathlib import Path

import pytest

DATA = Path(__file__).parent / "data"
OPT_TOKENIZER = DATA / "opt-tokenizer"


def tiny_opt_config(**kw):
    from transformers import OPTConfig

    base = dict(vocab_size=50272, hidden_size=16, num_hidden_layers=2, ffn_dim=32, num_attention_heads=2,
                max_position_embeddings=160, word_embed_proj_dim=16, pad_token_id=1, bos_token_id=2,
                eos_token_id=2, dropout=0.0, attention_dropout=0.0)
    base.update(kw)
    return OPTConfig(**base)


def save_tiny_opt(folder: Path, seed: int = 0, **kw) -> Path:
    """A randomly initialised tiny OPT classifier saved like a hub checkpoint (config, weights, tokenizer)."""
    from sendit.models import load_tokenizer, model_from_config

    tok = load_tokenizer(str(OPT_TOKENIZER))
    model = model_from_config(tiny_opt_config(**kw), tok, seed=seed)
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_opt(tmp_path_factory) -> Path:
    return save_tiny_opt(tmp_path_factory.mktemp("tiny-opt"))


@pytest.fixture(scope="session")
def opt_tokenizer():
    from sendit.models import load_tokenizer

    return load_tokenizer(str(OPT_TOKENIZER))


def tiny_run_args(model: Path, out: Path, methods: str = "bitfit,lora", *extra: str) -> list[str]:
    """CLI arguments for a seconds-long run of a tiny model on the embedded tweets."""
    return ["run", "--model", str(model), "--methods", methods, "--train-size", "96", "--val-size", "32",
            "--test-size", "32", "--epochs", "2", "--batch-size", "16", "--out", str(out), "--no-report",
            "--method-lr", "{bitfit: 0.01, lora: 0.01, full: 0.001, head: 0.01, dora: 0.01, ia3: 0.01}", *extra]


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models gain nothing from a second thread, and lose a lot to it on a busy 2-core machine. Module-scoped,
    so that the module's own module-scoped model fixtures are built with one thread too (use via pytestmark)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
