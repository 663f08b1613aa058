"""Helpers shared by the tests: tiny OPT models built from OPTConfig with the real OPT tokenizer, a seconds-long
run's arguments, a tiny training state; all offline. Fixtures live in conftest.py."""

from __future__ import annotations

from pathlib import Path

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
    from sendit.train.models import load_tokenizer, model_from_config

    tok = load_tokenizer(str(OPT_TOKENIZER))
    model = model_from_config(tiny_opt_config(**kw), tok, seed=seed)
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def save_tiny_bert(folder: Path) -> Path:
    """A randomly initialised tiny BERT (an encoder) with the embedded model's tokenizer, saved like a checkpoint."""
    from transformers import BertConfig

    from sendit.train.models import load_tokenizer, model_from_config

    tok = load_tokenizer("embedded")
    config = BertConfig(vocab_size=tok.vocab_size, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=160)
    model_from_config(config, tok).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def tiny_run_args(model: Path, out: Path, methods: str = "bitfit,lora", *extra: str) -> list[str]:
    """CLI arguments for a seconds-long run of a tiny model on the embedded tweets."""
    return ["run", "--model", str(model), "--methods", methods, "--train-size", "96", "--val-size", "32",
            "--test-size", "32", "--epochs", "2", "--batch-size", "16", "--out", str(out), "--no-report",
            "--method-lr", "{bitfit: 0.01, lora: 0.01, full: 0.001, head: 0.01, dora: 0.01, ia3: 0.01}", *extra]


def tiny_training_state():
    """A small model, its AdamW and a scheduler, three steps in: what an epoch checkpoint saves."""
    import torch

    from sendit.train.engine import make_optimizer

    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Dropout(0.5), torch.nn.Linear(8, 2))
    optimizer = make_optimizer(model, 1e-2, 0.01)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0 / (1 + step))
    for _ in range(3):
        model(torch.randn(5, 4)).sum().backward()
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad()
    return model, optimizer, scheduler


# In bf16 (what `precision: auto` picks on CPUs with AMX and on GPUs, or with SENDIT_PRECISION=bf16) every matrix
# product keeps ~3 significant digits, so the same model gives slightly different probabilities in another batch
# (other padding width, other rows beside it): up to ~2e-3 on the tiny models here. In fp32 the paths agree to
# float rounding, and the tests keep their tight tolerance there.
BF16_PATHS_ATOL = 5e-3


def paths_atol(fp32_atol: float) -> float:
    """The tolerance for comparing two computation paths (batching, chunking, a reload) of the same model in the
    precision `auto` resolves to in this test run."""
    from sendit.train.device import resolve_precision

    return fp32_atol if resolve_precision("auto") == "fp32" else max(fp32_atol, BF16_PATHS_ATOL)


def decided(probs, atol: float):
    """The rows whose label no rounding within `atol` can flip (probability not within atol of 0.5)."""
    import numpy as np

    return np.abs(np.asarray(probs, dtype=float) - 0.5) > atol
