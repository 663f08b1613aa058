"""Shared fixtures (the helpers they use are in tests/helpers.py): tiny OPT models built from OPTConfig with the
real OPT tokenizer, all offline."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import (
    OPT_TOKENIZER,
    TOKENIZER_FILES,
    save_headless_opt,
    save_tiny_bert,
    save_tiny_opt,
    tiny_run_args,
    tweets_csv,
)

from sendit.cli import main
from sendit.config.schema import load_config
from sendit.data.reading import embedded_path


def pytest_configure(config):
    """`make test` runs the suite in one worker process per core (pytest-xdist). Each worker, and the sendit
    processes its tests start, then uses one torch thread: tiny models gain nothing from a second, and two workers
    with two threads each on two cores lose much to oversubscription."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        os.environ["OMP_NUM_THREADS"] = "1"
        import torch

        torch.set_num_threads(1)


def _built_once(tmp_path_factory, name: str, build) -> Path:
    """A session-wide folder that build(root) fills once per test session: with several xdist workers the first
    builds it under a lock and the others wait and read it (the workers share their basetemp's parent)."""
    from filelock import FileLock

    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent
    root = base / name
    with FileLock(str(base / f"{name}.lock")):
        if not (base / f"{name}.built").exists():
            shutil.rmtree(root, ignore_errors=True)
            root.mkdir()
            build(root)
            (base / f"{name}.built").touch()
    return root


@pytest.fixture(scope="session")
def tiny_opt(tmp_path_factory) -> Path:
    return save_tiny_opt(tmp_path_factory.mktemp("tiny-opt"))


@pytest.fixture(scope="session")
def opt_tokenizer():
    from sendit.train.models import load_tokenizer

    return load_tokenizer(str(OPT_TOKENIZER))


@contextlib.contextmanager
def _torch_thread():
    """One torch thread inside, the thread count before it after."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models gain nothing from a second thread, and lose a lot to it on a busy 2-core machine. Module-scoped,
    so that the module's own module-scoped model fixtures are built with one thread too (use via pytestmark)."""
    with _torch_thread():
        yield


# ------------------------------------------------------------------------------------- shared tiny runs (read-only)
def _snapshot(folder: Path) -> dict:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(folder.rglob("*"))}


def _read_only(root: Path, handed_out=None):
    """Hand out a shared folder (or `handed_out`, what the fixture gives for it) to the session's tests; at the end
    of the session, fail if any test wrote into it."""
    before = _snapshot(root)
    yield root if handed_out is None else handed_out
    assert _snapshot(root) == before, f"a test wrote into the shared folder {root}: copy it first (shutil.copytree)"


def _shared_run(tmp_path_factory, name: str, save_model, methods: str):
    """Train `methods` on the model save_model(root / <its folder>) writes into root/"run" with tiny_run_args'
    defaults (one thread: a tiny model gains nothing from a second), once per session, then hand out root; at the
    end of the session, fail if any test wrote into it."""
    def build(root: Path) -> None:
        with _torch_thread():
            assert main(tiny_run_args(save_model(root), root / "run", methods)) == 0

    yield from _read_only(_built_once(tmp_path_factory, name, build))


@pytest.fixture(scope="session")
def opt_run(tmp_path_factory):
    """root/"tiny-opt" (save_tiny_opt, seed 0) and root/"run": bitfit, full, head and lora trained on it by
    tiny_run_args (the embedded tweets, two epochs, no report). Shared by the session's tests that read a finished
    run's model folders (export, onnx, model card, bench --inference): never write into it; copy it first."""
    yield from _shared_run(tmp_path_factory, "shared-opt-run", lambda root: save_tiny_opt(root / "tiny-opt"),
                           "bitfit,full,head,lora")


@pytest.fixture(scope="session")
def bert_run(tmp_path_factory):
    """root/"tiny-bert" (save_tiny_bert) and root/"run": head and lora trained on it by tiny_run_args. Shared
    read-only like opt_run (export, onnx, serve)."""
    yield from _shared_run(tmp_path_factory, "shared-bert-run", lambda root: save_tiny_bert(root / "tiny-bert"),
                           "head,lora")


@pytest.fixture(scope="session")
def bert_head_onnx(tmp_path_factory, bert_run):
    """bert_run's head exported to ONNX fp32 through the CLI (--min-agreement 0: a tiny model's labels near 0.5
    may flip; the tests read the parity), once per session. Read by test_onnx and test_serve: never write into it."""
    def build(root: Path) -> None:
        with _torch_thread():
            assert main(["export", str(bert_run / "run" / "head"), "--out", str(root / "onnx"), "--format", "onnx",
                         "--min-agreement", "0"]) == 0

    root = _built_once(tmp_path_factory, "shared-bert-head-onnx", build)
    yield from _read_only(root, root / "onnx")


@pytest.fixture
def world(tmp_path, tiny_opt, monkeypatch):
    """A working directory with what a user has lying around: a finished sendit run (holding a model folder and
    its data), a folder of photos, a folder with somebody else's run.json, data files good and bad."""
    w = tmp_path / "w"
    w.mkdir()
    monkeypatch.chdir(tmp_path)
    shutil.copytree(tiny_opt, w / "opt")
    tweets_csv(w / "tweets.csv")
    old = w / "oldrun"
    (old / "lora").mkdir(parents=True)
    tweets_csv(w / "forty.csv", n=40)
    config = load_config(None, {"model": str(w / "opt"), "data": str(w / "forty.csv"), "test_file": "none",
                                "train_size": 20, "val_size": 8, "test_size": 8, "batch_size": 8, "methods": "lora"})
    (old / "run.json").write_text(json.dumps({"sendit": {"kind": "run", "version": "0.1.0"}, "config": config.to_dict(),
                                              "status": {"lora/seed0": "done"}}))
    (old / "lora_results.csv").write_text("best_val_f1,method\n0.8,lora\n")
    (old / "lora" / "sendit_model.json").write_text(json.dumps({"method": "lora", "base_model": "embedded"}))
    shutil.copytree(w / "opt", old / "opt")
    tweets_csv(old / "mine.csv")
    for name, drop in (("noweights", ("model.safetensors",)), ("notokenizer", TOKENIZER_FILES)):
        shutil.copytree(w / "opt", w / name, ignore=shutil.ignore_patterns(*drop))
    (w / "photos").mkdir()
    (w / "photos" / "cat.jpg").write_bytes(b"\xff\xd8 a cat")
    (w / "other").mkdir()
    (w / "other" / "run.json").write_text('{"experiment": "not sendit"}')
    (w / "other" / "notes.txt").write_text("keep me")
    (w / "afile.txt").write_text("just a file")
    (w / "corrupt").mkdir()
    (w / "corrupt" / "run.json").write_text('{"config": {"data": ')
    (w / "listrun").mkdir()
    (w / "listrun" / "run.json").write_text("[1, 2]")
    (w / "header_only.csv").write_text("text\n")
    (w / "texts.csv").write_text("text\nso happy\n")
    (w / "prior.csv").write_text("id,text\n1,a file the user made\n")
    for name, rows in {"null_text": [{"text": None, "label": 0}], "object_text": [{"text": {"a": 1}, "label": 0}],
                       "list_text": [{"text": ["a", "b"], "label": 4}], "number_text": [{"text": 42, "label": 4}]
                       }.items():
        lines = [json.dumps({"text": "a real tweet", "label": 0}), *map(json.dumps, rows)]
        (w / f"{name}.jsonl").write_text("\n".join(lines) + "\n")
    tweets_csv(w / "tweeteval.csv", labels=(0, 1, 2), n=30)
    tweets_csv(w / "ratings.csv", labels=(1, 2, 3, 4, 5), n=30)
    tweets_csv(w / "polarity.csv", labels=(-1, 0, 1), n=30)
    rep = w / "badreport"
    rep.mkdir()
    (rep / "lora_results.csv").write_text("best_val_f1,val_accuracy,method,seed\nabc,0.5,lora,0\n")
    rep2 = w / "garbagereport"
    rep2.mkdir()
    (rep2 / "lora_results.csv").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(128, 256)) * 8)
    exp = w / "oldexport"
    exp.mkdir()
    (exp / "sendit_model.json").write_text(json.dumps({"method": "full", "exported_from": "x"}))
    return w


@pytest.fixture
def restore_threads():
    """Training runs use --threads 1 (a tiny model on a shared 2-core CPU is ~3x faster so); the rest of the
    session keeps torch's own thread count."""
    import torch

    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def custom_run(tmp_path_factory):
    """A run of LoRA on a head-less base model with a custom test file, in a fresh `sendit` process (one thread), and
    what it printed: a fresh process, so that what the run prints does not depend on which tests ran before it in
    this one (a library warns once per process). Shared by test_cli, test_data and test_predict: read it, never
    write into it."""
    def build(root: Path) -> None:
        model = save_headless_opt(root / "opt-base")
        test_file = root / "my_tweets.csv"
        test_file.write_bytes(embedded_path("testdata.manual.2009.06.14.csv").read_bytes())
        args = tiny_run_args(model, root / "run", "lora", "--test-file", str(test_file), "--epochs", "1")
        done = subprocess.run([sys.executable, "-m", "sendit.cli", *args], capture_output=True, text=True,
                              env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=600)
        warned = sorted(set(re.findall(r"\b(\w+Warning): ", done.stderr)))  # the categories Python printed
        (root / "console.json").write_text(json.dumps({"rc": done.returncode, "stdout": done.stdout,
                                                       "stderr": done.stderr, "warnings": warned}))

    root = _built_once(tmp_path_factory, "new-user", build)
    yield from _read_only(root, {"run": root / "run", "test_file": root / "my_tweets.csv",
                                 **json.loads((root / "console.json").read_text())})
