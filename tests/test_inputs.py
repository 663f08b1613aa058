"""Inputs that are not plain files, and outputs that cannot be written whole: special files (FIFOs, devices,
process substitution), compressed files under any name, binary or non-UTF-8 text files, a full disk or the
file-size limit while saving, CSV rows with missing fields in `sendit predict`, the flags that messages suggest,
two evaluation files with the same name, and outputs that are symbolic links. docs/reliability.md lists them.

No test here can hang: every read of a FIFO runs under a deadline (SIGALRM), and sendit gives up on a silent FIFO
after fileio.FIFO_WAIT_S, set to a fraction of a second here."""

from __future__ import annotations

import argparse
import bz2
import contextlib
import errno
import gzip
import io
import json
import lzma
import os
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import threading
import zipfile
from pathlib import Path

import pandas as pd
import pytest
from helpers import save_tiny_opt

from sendit import fileio
from sendit.cli import build_parser, main
from sendit.errors import ConfigError
from sendit.config.schema import DataConfig
from sendit.data.reading import read_chunks, read_table

pytestmark = pytest.mark.usefixtures("one_thread")
CSV = b"label,text\n0,bad day\n1,good day\n0,awful\n1,great\n"


@contextlib.contextmanager
def deadline(seconds: float):
    """Fail instead of hanging: a blocked open() or read() is interrupted by SIGALRM."""
    def stop(signum, frame):
        raise TimeoutError(f"still blocked after {seconds} s")

    old = signal.signal(signal.SIGALRM, stop)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


@pytest.fixture(autouse=True)
def short_fifo_wait(monkeypatch):
    monkeypatch.setattr(fileio, "FIFO_WAIT_S", 0.3)


def cli(capsys, argv: list[str]) -> tuple[int, str]:
    """Exit code and the last stderr line, which must be the one-paragraph error (no traceback)."""
    with deadline(60):
        code = main(argv)
    err = capsys.readouterr().err
    assert "Traceback" not in err and "error: unexpected " not in err, err
    return code, (err.strip().splitlines() or [""])[-1]


def refused(capsys, argv: list[str], *phrases: str, code: int = 2) -> str:
    got, line = cli(capsys, argv)
    assert got == code, line
    assert line.startswith(f"sendit {argv[0]}: error: "), line
    for phrase in phrases:
        assert phrase in line, line
    return line


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    """A sendit model folder (method 'full') around an untrained tiny OPT."""
    from transformers import AutoModelForSequenceClassification

    from sendit.run.model_folder import save_model_folder
    from sendit.train.models import load_tokenizer

    root = tmp_path_factory.mktemp("inputs")
    base = save_tiny_opt(root / "tiny-opt", seed=3)
    model = AutoModelForSequenceClassification.from_pretrained(base)
    save_model_folder(model, load_tokenizer(str(base)), root / "full", "full", str(base), {"max_length": 32})
    return root / "full"


# ------------------------------------------------------------------------------------------------ special files
def _writer(path: Path, data: bytes, delay: float = 0.05) -> threading.Thread:
    def write():
        with open(path, "wb") as f:  # blocks until the reader opens the FIFO
            f.write(data)

    t = threading.Timer(delay, write)
    t.daemon = True
    t.start()
    return t


def test_fifo_without_a_writer_is_given_up_on(tmp_path, capsys):
    fifo = tmp_path / "tweets.csv"
    os.mkfifo(fifo)
    refused(capsys, ["data", str(fifo)], "named pipe (FIFO)", "nothing wrote to it within 0.3 s")
    refused(capsys, ["predict", "unused-model", "--input", str(fifo)], "named pipe (FIFO)")
    config = tmp_path / "my.yaml"
    os.mkfifo(config)
    refused(capsys, ["run", "--config", str(config), "--out", str(tmp_path / "r")], "config file", "named pipe")
    assert not (tmp_path / "r").exists()


def test_fifo_with_a_writer_and_process_substitution_are_read(tmp_path):
    fifo = tmp_path / "tweets.csv"
    os.mkfifo(fifo)
    _writer(fifo, CSV)
    with deadline(10):
        assert read_table(fifo, DataConfig()).texts == ["bad day", "good day", "awful", "great"]
    _writer(fifo, gzip.compress(b"text\nso happy\nso sad\n"))
    with deadline(10):
        assert [c["text"].tolist() for c in read_chunks(str(fifo))] == [["so happy", "so sad"]]
    # bash's <(cat tweets.csv) hands the command /dev/fd/63, an inherited pipe
    for data in (CSV, bz2.compress(CSV)):
        r, w = os.pipe()
        os.write(w, data)
        os.close(w)
        with deadline(10):
            assert len(read_table(f"/dev/fd/{r}", DataConfig())) == 4
        os.close(r)
    from sendit.config.schema import load_config

    r, w = os.pipe()
    os.write(w, b"train:\n  epochs: 7\n")
    os.close(w)
    with deadline(10):
        assert load_config(f"/dev/fd/{r}").train.epochs == 7  # --config <(...)
    os.close(r)


def isolated(code: str) -> subprocess.CompletedProcess:
    """Python code in a child with a memory and a time limit: code that reads a device for ever (as sendit did)
    fails there instead of filling this machine's memory."""
    def limits():
        resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))

    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          preexec_fn=limits, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})


def test_devices_are_refused(capsys):
    child = isolated("""
from sendit.config.schema import read_config_file
from sendit.data.reading import read_table, read_test_file
from sendit.errors import ConfigError, DataError
for device in ("/dev/zero", "/dev/urandom"):
    for read in (read_table, read_test_file, read_config_file):
        try:
            read(device) if read is read_config_file else read(device, None)
        except (ConfigError, DataError) as e:
            print(e)
""")
    assert child.returncode == 0 and "Traceback" not in child.stderr, child.stderr
    lines = child.stdout.strip().splitlines()
    assert len(lines) == 6, child.stdout
    for device, line in zip(["/dev/zero"] * 3 + ["/dev/urandom"] * 3, lines):
        assert device in line and "is a character device, not a file: reading it would never end" in line
    refused(capsys, ["predict", "unused-model", "--input", "/dev/zero"], "is a character device")


def test_a_socket_is_refused(tmp_path, capsys):
    path = tmp_path / "tweets.csv"
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(path))
        refused(capsys, ["data", str(path)], "is a socket, not a file")


# ------------------------------------------------------------------------------------------------ compressed files
@pytest.mark.parametrize("pack", [gzip.compress, bz2.compress, lzma.compress], ids=["gzip", "bz2", "xz"])
def test_compressed_files_are_read_whatever_their_name(tmp_path, pack, model_dir, capsys):
    path = tmp_path / "tweets.csv"
    path.write_bytes(pack(CSV))
    assert read_table(path, DataConfig()).texts == ["bad day", "good day", "awful", "great"]
    jsonl = tmp_path / "tweets.jsonl"
    jsonl.write_bytes(pack(b'{"text": "so happy", "label": 1}\n{"text": "so sad", "label": 0}\n'))
    assert read_table(jsonl, DataConfig()).texts == ["so happy", "so sad"]
    texts = tmp_path / "texts.csv"
    texts.write_bytes(pack(b"text\nso happy\nso sad\n"))
    out = tmp_path / "out.csv"
    assert cli(capsys, ["predict", str(model_dir), "--input", str(texts), "--output", str(out)])[0] == 0
    assert pd.read_csv(out)["text"].tolist() == ["so happy", "so sad"]


def _zip(data: bytes) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("tweets.csv", data)
    return buf.getvalue()


@pytest.mark.parametrize("content, phrase", [
    (_zip(CSV), "is a zip archive (an Excel .xlsx workbook is one too); unzip it"),
    (b"\x28\xb5\x2f\xfd" + b"\x00" * 20, "is zstd-compressed; decompress it first (zstd -d FILE)"),
    (b"7z\xbc\xaf\x27\x1c" + b"\x00" * 20, "is a 7-Zip archive"),
    (b"PAR1" + b"\x00" * 20, "is a Parquet file; give it a .parquet name"),
    (gzip.compress(CSV)[:25], "is gzip-compressed but damaged or cut short"),
    (b"\xfd7zXZ\x00garbage", "is xz-compressed but damaged or cut short"),
], ids=["zip", "zstd", "7z", "parquet", "truncated gzip", "damaged xz"])
def test_archives_and_damaged_files_are_named(tmp_path, capsys, content, phrase):
    path = tmp_path / "tweets.csv"
    path.write_bytes(content)
    line = refused(capsys, ["data", str(path)], phrase)
    assert "NUL bytes" not in line
    refused(capsys, ["predict", "unused-model", "--input", str(path)], phrase)


def test_utf16_with_a_byte_order_mark_reads(tmp_path):
    path = tmp_path / "u16.csv"
    path.write_bytes("label,text\n0,caf\u00e9 sad\n1,good\n".encode("utf-16"))  # Excel's "Unicode text"
    assert read_table(path, DataConfig()).texts == ["caf\u00e9 sad", "good"]


# ------------------------------------------------------------------------------------------------ text files
@pytest.mark.parametrize("content, phrase", [
    (b"train:\n  epochs: 2\n  lr: \x89\xff\n", "line 3: byte b'\\x89' is not UTF-8"),
    ("train:\n  lr: 0.001  # caf\u00e9\n".encode("latin-1"), "line 2: byte b'\\xe9' is not UTF-8"),
    (b"train:\n\x00\x00\x00\x01binary", "line 2: the file holds NUL bytes, so it is binary"),
    (gzip.compress(b"train:\n  epochs: 2\n"), "is gzip-compressed; decompress it first (gunzip FILE)"),
    (_zip(b"train: {}\n"), "is a zip archive"),
], ids=["binary", "latin-1", "NUL", "gzip", "zip"])
def test_config_files_that_are_not_utf8_text(tmp_path, capsys, content, phrase):
    path = tmp_path / "my.yaml"
    path.write_bytes(content)
    for command in ("run", "tune", "train"):
        extra = ["--method", "head"] if command == "train" else []
        line = refused(capsys, [command, "--config", str(path), "--out", str(tmp_path / "r"), *extra], phrase)
        assert f"config file '{path}'" in line
    with pytest.raises(ConfigError, match=re.escape(phrase)):
        from sendit.config.schema import read_config_file

        read_config_file(path)
    assert not (tmp_path / "r").exists()


# ------------------------------------------------------------------------------------------------ writes
@contextlib.contextmanager
def file_size_limit(nbytes: int):
    """RLIMIT_FSIZE for this process (Python ignores SIGXFSZ, so a write past it fails with EFBIG)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (nbytes, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))


def test_file_size_limit_while_exporting_and_predicting(tmp_path, capsys, model_dir):
    out = tmp_path / "export"
    with file_size_limit(200_000):
        line = refused(capsys, ["export", str(model_dir), "--out", str(out)], "File too large", "ulimit -f",
                       code=1)
    assert not out.exists() and not list(tmp_path.glob(".export*")), line  # nothing half-written left
    texts = tmp_path / "texts.csv"
    texts.write_text("text\n" + "so happy today\n" * 2000)
    pred = tmp_path / "pred.csv"
    with file_size_limit(10_000):
        refused(capsys, ["predict", str(model_dir), "--input", str(texts), "--output", str(pred)],
                "File too large", "ulimit -f", code=1)
    assert not pred.exists() and not list(tmp_path.glob(".pred*"))


def test_full_disk_while_saving_a_model_folder_leaves_nothing_that_looks_complete(tmp_path, model_dir,
                                                                                 monkeypatch):
    from safetensors import SafetensorError

    from sendit.methods import get_method
    from sendit.run.folder import MODEL_MANIFEST
    from sendit.run.model_folder import save_model_folder
    from sendit.serve.model_folder import load

    model = load(model_dir, merge=False, precision="fp32")
    full = get_method("full")

    def disk_full(*args, **kwargs):
        raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")

    monkeypatch.setattr(type(full), "save", lambda self, m, folder: disk_full())
    with pytest.raises(OSError, match="No space left") as info:
        save_model_folder(model.model, model.tokenizer, tmp_path / "new", "full", "base", {})
    assert info.value.filename == str(tmp_path / "new")
    assert not (tmp_path / "new").exists()  # a folder it made is removed
    old = tmp_path / "old"
    shutil.copytree(model_dir, old)
    with pytest.raises(OSError):
        save_model_folder(model.model, model.tokenizer, old, "full", "base", {})
    assert old.is_dir() and not (old / MODEL_MANIFEST).exists()  # an earlier folder no longer looks complete
    # what safetensors, tokenizers and torch raise for a full disk, a quota or the file-size limit
    cases = [
        (SafetensorError("Error while serializing: I/O error: File too large (os error 27)"), "EFBIG"),
        (SafetensorError("Error while serializing: StorageFull"), "ENOSPC"),
        (Exception("No space left on device (os error 28)"), "ENOSPC"),  # tokenizers
        (RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534"), None),  # torch
        (RuntimeError("PytorchStreamWriter failed writing file data/0: file write failed"), None),
        (OSError(122, "Disk quota exceeded"), "EDQUOT"),
    ]
    for error, code in cases:
        got = fileio.as_write_error(error, "x")
        code = code or ("EFBIG" if fileio.file_size_limit() is not None else "ENOSPC")  # torch does not say
        assert got is not None and got.errno == getattr(errno, code) and got.filename == "x", error
    assert fileio.as_write_error(ValueError("a bug")) is None
    assert fileio.as_write_error(FileNotFoundError(2, "No such file")) is None


def test_file_size_limit_in_a_run_stops_it_with_the_cause(tmp_path, capsys, model_dir):
    base = model_dir.parent / "tiny-opt"
    out = tmp_path / "r"
    argv = ["run", "--model", str(base), "--methods", "head", "--train-size", "32", "--val-size", "8",
            "--test-size", "8", "--test-file", "none", "--epochs", "1", "--batch-size", "16", "--threads", "1",
            "--out", str(out), "--no-report"]
    with file_size_limit(300_000):  # CSVs and run.json fit; the tokenizer's 2 MB in the model folder do not
        line = refused(capsys, argv, "File too large", "ulimit -f", "The run stopped", f"--resume {out}", code=1)
    assert "SafetensorError" not in line and not (out / "head" / "sendit_model.json").exists()


# ------------------------------------------------------------------------------------------------ rows in predict
@pytest.mark.parametrize("rows, line, found, kept", [
    (b"id,text,label\n1,so happy,1\n2,so sad\n3,meh,0\n", 3, "found 2 (a missing field)", ["so happy", "meh"]),
    (b"text,id\nso happy,1\nso sad\n", 3, "found 1 (a missing field)", ["so happy"]),
    (b'id,text\n1,"multi\nline"\n2,ok,extra\n', 4, "found 3 (an unquoted comma", ["multi\nline"]),
    (b'"0","1","d","q","u","so happy"\n"4","2","d","q","so sad"\n', 2, "expected 6 fields", ["so happy"]),
], ids=["missing label", "missing id", "extra field after a quoted newline", "Sentiment140"])
def test_predict_rows_with_missing_or_extra_fields(tmp_path, capsys, model_dir, rows, line, found, kept):
    path = tmp_path / "in.csv"
    path.write_bytes(rows)
    out = tmp_path / "out.csv"
    refused(capsys, ["predict", str(model_dir), "--input", str(path), "--output", str(out)], f"line {line}",
            found, "--bad-rows skip")
    assert not out.exists()
    argv = ["predict", str(model_dir), "--input", str(path), "--output", str(out), "--bad-rows", "skip"]
    assert cli(capsys, argv)[0] == 0
    assert pd.read_csv(out, dtype=str, keep_default_na=False)["text"].tolist() == kept


def test_predict_skip_counts_what_it_left_out(tmp_path, capsys, model_dir):
    path = tmp_path / "in.csv"
    path.write_bytes(b"id,text\n1,so happy\n2\n3,so sad\n4\n")
    assert main(["predict", str(model_dir), "--input", str(path), "--bad-rows", "skip"]) == 0
    captured = capsys.readouterr()
    assert pd.read_csv(io.StringIO(captured.out))["id"].tolist() == [1, 3]
    assert "2 rows of" in captured.err and "left out (--bad-rows skip)" in captured.err
    path.write_bytes(b"id,text\n1\n2\n")
    refused(capsys, ["predict", str(model_dir), "--input", str(path), "--bad-rows", "skip"],
            "no rows (2 malformed rows were skipped)")


# ------------------------------------------------------------------------------------------------ suggested flags
def _options() -> dict[str, set[str]]:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return {name: set(p._option_string_actions) for name, p in sub.choices.items()}


def unknown_flags(command: str, message: str, options: dict[str, set[str]]) -> list[str]:
    """The --flags a message of `sendit command` suggests that the command does not have (a flag after another
    `sendit X` in the message is X's)."""
    others = set(re.findall(r"sendit (\w+)", message))
    return [f for f in re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", message)
            if f not in options[command] and not any(f in options.get(o, ()) for o in others)]


def test_documented_messages_suggest_only_flags_their_command_has():
    options = _options()
    docs = Path(__file__).parent.parent / "docs"
    text = "".join(p.read_text() for p in docs.glob("*.md"))
    messages = re.findall(r"sendit (\w+): error: ([^\n|`]*)", text)
    assert len(messages) > 100
    wrong = [(c, m) for c, m in messages if c in options and unknown_flags(c, m, options)]
    assert not wrong, wrong


BAD_FILES = {
    "empty.csv": b"",
    "columns.csv": b"score,body\n0,bad day\n",
    "labels.csv": b"label,text\n0,bad day\nbad,awful\ngood,great\n",
    "tweeteval.csv": b"label,text\n0,a\n1,b\n2,c\n",
    "wide.csv": b"label,text\n0,bad day\n1,good,day\n",
    "emptytext.csv": b"label,text\n0,  \n1,good day\n",
    "latin.csv": b"label,text\n0,caf\xe9\n1,good\n",
    "nul.csv": b"label,text\n0,bad\x00day\n",
    "quote.csv": b'label,text\n0,"bad day\n',
}


def test_every_command_suggests_only_flags_it_has(tmp_path, capsys, model_dir):
    """Each bad file through every command that reads one: the messages name only flags that command takes."""
    options = _options()
    for name, content in BAD_FILES.items():
        (tmp_path / name).write_bytes(content)
    commands = {
        "data": lambda f: ["data", f, "--bad-rows", "error"],
        "data --encoding": lambda f: ["data", f, "--bad-rows", "error", "--encoding", "utf-8"],
        "evaluate": lambda f: ["evaluate", str(model_dir), "--data", f, "--out", str(tmp_path / "e")],
        "evaluate --encoding": lambda f: ["evaluate", str(model_dir), "--data", f, "--encoding", "utf-8"],
        "predict": lambda f: ["predict", str(model_dir), "--input", f],
    }
    seen = 0
    for what, argv in commands.items():
        for name in [*BAD_FILES, "missing.csv", "embedded" if what.startswith("evaluate") else "missing.csv"]:
            args = argv(str(tmp_path / name) if name != "embedded" else "typo")
            code, line = cli(capsys, args)
            if code:
                seen += 1
                assert not unknown_flags(args[0], line, options), (what, name, line)
    assert seen > 30


def test_evaluate_takes_embedded_and_names_what_it_takes(tmp_path, capsys, model_dir):
    line = refused(capsys, ["evaluate", str(model_dir), "--data", str(tmp_path / "typo.csv")], "does not exist")
    assert "'hub'" not in line and "'embedded' for the packaged hand-labelled tweets" in line
    out = tmp_path / "e"
    assert cli(capsys, ["evaluate", str(model_dir), "--data", "embedded", "--out", str(out)])[0] == 0
    summary = pd.read_csv(out / "full_inference_metrics_summary.csv")
    assert summary["test_set"].tolist() == ["sentiment140-manual"] and summary["n"].tolist() == [359]
    (tmp_path / "tw.csv").write_text("label,text\n0,sad\n1,meh\n2,yay\n0,bad\n")
    refused(capsys, ["evaluate", str(model_dir), "--data", str(tmp_path / "tw.csv"), "--out", str(tmp_path / "x")],
            "--label-map")
    assert cli(capsys, ["evaluate", str(model_dir), "--data", str(tmp_path / "tw.csv"), "--out",
                        str(tmp_path / "x"), "--label-map", "{0: negative, 1: neutral, 2: positive}"])[0] == 0


# ------------------------------------------------------------------------------------------------ same names
def test_two_evaluation_files_with_the_same_stem_do_not_replace_each_other(tmp_path, capsys, model_dir):
    model = tmp_path / "m"
    shutil.copytree(model_dir, model)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "test.csv").write_bytes(CSV)
    (tmp_path / "b" / "test.csv").write_bytes(b"label,text\n0,sad\n1,yay\n0,no\n")
    assert cli(capsys, ["evaluate", str(model), "--data", str(tmp_path / "a" / "test.csv")])[0] == 0
    first = (model / "eval-test" / "full_inference_predictions.csv").read_bytes()
    assert cli(capsys, ["evaluate", str(model), "--data", str(tmp_path / "a" / "test.csv")])[0] == 0  # again: fine
    refused(capsys, ["evaluate", str(model), "--data", str(tmp_path / "b" / "test.csv")], "already holds the "
            "results on", "--test-name NAME")
    assert (model / "eval-test" / "full_inference_predictions.csv").read_bytes() == first
    # another file into the same --out is refused too, whatever its name: it would replace the rows of that seed
    (tmp_path / "other.csv").write_bytes(CSV)
    refused(capsys, ["evaluate", str(model), "--data", str(tmp_path / "other.csv"), "--out",
                     str(model / "eval-test")], "already holds")
    assert cli(capsys, ["evaluate", str(model), "--data", str(tmp_path / "b" / "test.csv"), "--test-name",
                        "b-test"])[0] == 0
    assert pd.read_csv(model / "eval-b-test" / "full_inference_predictions.csv")["test_set"].unique().tolist() == [
        "b-test"]
    assert (model / "eval-test" / "full_inference_predictions.csv").read_bytes() == first


def test_two_models_of_the_same_method_in_same_named_runs_are_labelled_apart(tmp_path, capsys, model_dir):
    for run in ("x/run", "y/run"):
        shutil.copytree(model_dir, tmp_path / run / "full")
    (tmp_path / "t.csv").write_bytes(CSV)
    out = tmp_path / "e"
    assert cli(capsys, ["evaluate", str(tmp_path / "x/run/full"), str(tmp_path / "y/run/full"), "--data",
                        str(tmp_path / "t.csv"), "--out", str(out)])[0] == 0
    assert sorted(p.name for p in out.glob("*_inference_metrics_summary.csv")) == [
        "full_inference_metrics_summary.csv", "run-full_inference_metrics_summary.csv"]
    manifest = json.loads((out / "evaluation.json").read_text())
    assert len(manifest["models"]) == 2
    refused(capsys, ["evaluate", str(tmp_path / "x/run/full"), str(tmp_path / "x/run/full"), "--data",
                     str(tmp_path / "t.csv"), "--out", str(tmp_path / "e2")], "is given twice")


# ------------------------------------------------------------------------------------------------ symbolic links
def test_outputs_that_are_symbolic_links_are_written_through(tmp_path, capsys, model_dir):
    from sendit.run.folder import atomic_write_text

    texts = tmp_path / "texts.csv"
    texts.write_text("text\nso happy\nso sad\n")
    target = tmp_path / "real" / "pred.csv"
    target.parent.mkdir()
    link = tmp_path / "pred.csv"
    link.symlink_to(target)  # dangling: the target is created, as > in a shell does
    for _ in range(2):  # then an earlier output behind the link is replaced
        assert cli(capsys, ["predict", str(model_dir), "--input", str(texts), "--output", str(link)])[0] == 0
        assert link.is_symlink() and pd.read_csv(target)["text"].tolist() == ["so happy", "so sad"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pred.csv", "real", "texts.csv"]

    run_file = tmp_path / "run.json"
    run_file.symlink_to(tmp_path / "real" / "run.json")
    atomic_write_text(run_file, "{}\n")
    assert run_file.is_symlink() and (tmp_path / "real" / "run.json").read_text() == "{}\n"

    exported = tmp_path / "real" / "export"
    assert cli(capsys, ["export", str(model_dir), "--out", str(exported)])[0] == 0
    elink = tmp_path / "export-link"
    elink.symlink_to(exported)
    assert cli(capsys, ["export", str(model_dir), "--out", str(elink), "--overwrite"])[0] == 0
    assert elink.is_symlink() and (exported / "sendit_model.json").is_file()
    assert not [p for p in (tmp_path / "real").iterdir() if p.name.startswith(".")]

    (tmp_path / "in-link.csv").symlink_to(texts)  # a link to the input is still the input
    refused(capsys, ["predict", str(model_dir), "--input", str(texts), "--output", str(tmp_path / "in-link.csv")],
            "is the --input file")
    assert texts.read_text() == "text\nso happy\nso sad\n"
