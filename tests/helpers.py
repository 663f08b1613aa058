"""Helpers shared by the tests: tiny OPT models built from OPTConfig with the real OPT tokenizer, a seconds-long
run's arguments, a tiny training state, the CLI checks for one-paragraph errors, files a user has lying
around, console capture; all offline. Fixtures live in conftest.py."""

from __future__ import annotations

import os
import sys
import tempfile
import warnings
from contextlib import contextmanager
from pathlib import Path

from sendit.cli import main

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


SENTIMENT140_ROW = '"{y}","{i}","Mon Apr 06 22:19:45 PDT 2009","NO_QUERY","user","{text}"\n'


def user_error(capsys, argv: list[str]) -> str:
    """Run the CLI; assert exit code 2, no traceback and a one-paragraph `sendit <cmd>: error:` line; return it."""
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("sendit ")]
    assert len(lines) == 1 and lines[0].startswith(f"sendit {argv[0]}: error: "), err
    assert err.rstrip().endswith(lines[0]), err  # nothing after it: the paragraph is the last word
    return lines[0]


def tweets(n: int, label: int, word: str = "day") -> str:
    return "".join(f"{label},tweet number {i} about a {word}\n" for i in range(n))


def _csv(tmp_path, text: str):
    path = tmp_path / "tweets.csv"
    path.write_text("label,text\n" + text)
    return path


TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt", "special_tokens_map.json")


def tweets_csv(path: Path, labels: tuple = (0, 4), n: int = 20) -> Path:
    rows = [f"{labels[i % len(labels)]},tweet number {i} about the {'rain' if i % 2 else 'sun'}" for i in range(n)]
    path.write_text("label,text\n" + "\n".join(rows) + "\n")
    return path


def run_cli(capsys, argv: list[str]) -> tuple[int, str]:
    """The CLI's exit code and stderr; argparse's own exit (bad flag syntax) counts as its code."""
    try:
        code = main(argv)
    except SystemExit as e:
        code = e.code
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    return code, err


def snapshot(root: Path, names: list[str]) -> dict:
    files = {}
    for name in names:
        path = root / name
        for f in [path] if path.is_file() else sorted(path.rglob("*")):
            files[str(f.relative_to(root))] = f.read_bytes() if f.is_file() else "dir"
    return files


LIBRARY_NOISE = ("MISSING", "newly initialized", "LOAD REPORT", "FutureWarning", "Loading weights")


@contextmanager
def captured_fds():
    """Everything the process prints, at the file-descriptor level (progress bars, C libraries) and through
    Python's sys.stdout/sys.stderr (which pytest replaces), plus the warnings that were not filtered out."""
    import logging
    from contextlib import redirect_stderr, redirect_stdout

    saved = {fd: os.dup(fd) for fd in (1, 2)}
    files = {fd: tempfile.TemporaryFile(mode="w+") for fd in (1, 2)}
    # transformers logs through a handler bound to the sys.stderr of its import: point it at ours too
    handlers = [h for h in logging.getLogger("transformers").handlers if isinstance(h, logging.StreamHandler)]
    streams = [h.setStream(files[2]) for h in handlers]
    out: dict = {}
    try:
        sys.stdout.flush(), sys.stderr.flush()
        for fd, f in files.items():
            os.dup2(f.fileno(), fd)
        with redirect_stdout(files[1]), redirect_stderr(files[2]), warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield out
    finally:
        for h, stream in zip(handlers, streams):
            h.setStream(stream)
        for fd in (1, 2):
            files[fd].flush()
            os.dup2(saved[fd], fd)
            os.close(saved[fd])
            files[fd].seek(0)
        out.update(stdout=files[1].read(), stderr=files[2].read(), warnings=[w.category.__name__ for w in caught])


def save_headless_opt(folder: Path) -> Path:
    """A tiny OPT saved without a classification head, like a hub base model: loading it for classification
    makes transformers report the head as MISSING."""
    import torch
    from transformers import AutoTokenizer, OPTModel

    torch.manual_seed(0)
    OPTModel(tiny_opt_config()).save_pretrained(folder)
    AutoTokenizer.from_pretrained(OPT_TOKENIZER).save_pretrained(folder)
    return folder
