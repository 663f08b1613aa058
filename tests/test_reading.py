"""The one tabular reader and the one atomic writer: streams decode like files, and nothing happens at import. Every bad data file
ends in one paragraph naming the file, line and fix (exit 2, no traceback; docs/reliability.md lists them)."""

from __future__ import annotations

import codecs
import gzip
import importlib
import importlib.util
import json
import os
import stat

import pytest
from helpers import SENTIMENT140_ROW, user_error

from sendit.cli import main
from sendit.config.schema import DataConfig
from sendit.data.reading import read_chunks, read_table
from sendit.errors import DataError
from sendit.run import folder as run_folder

# UTF-8 text, a byte-order mark in front and one latin-1 byte (Sentiment140's encoding) in a row of its own.
MIXED = "\ufefftext,label\ncaf\u00e9 ok,4\n".encode() + b"na\xefve,0\n"


def test_stream_reads_utf8_as_utf8_and_stray_bytes_as_latin1(tmp_path):
    path = tmp_path / "mixed.csv"
    path.write_bytes(MIXED)
    chunk = next(read_chunks(str(path)))
    assert chunk.columns.tolist() == ["text", "label"]  # the byte-order mark is not part of the first name
    assert chunk["text"].tolist() == ["caf\u00e9 ok", "na\u00efve"]


def test_stream_and_file_readers_agree_on_sentiment140(tmp_path):
    path = tmp_path / "s140.csv"
    path.write_bytes(b'"0","1","Mon","NO_QUERY","u","sad day"\n"4","2","Mon","NO_QUERY","u","fine day"\n')
    assert read_table(path, DataConfig()).texts == ["sad day", "fine day"]
    chunk = next(read_chunks(str(path)))
    assert chunk.columns.tolist() == ["target", "id", "date", "query", "user", "text"]
    assert chunk["text"].tolist() == ["sad day", "fine day"]


def test_stream_refuses_reserved_columns(tmp_path):
    path = tmp_path / "out.csv"
    path.write_text("text,prediction\nhi,1\n")
    with pytest.raises(DataError, match="already has a 'prediction' column"):
        next(read_chunks(str(path), reserved=("prediction",)))


@pytest.mark.parametrize("module", ["sendit.run.folder", "sendit.report.files", "sendit.serve.predict", "sendit.serve.export",
                                    "sendit.data.reading", "sendit.data.formats", "sendit.data.formats.csv"])
def test_import_changes_no_process_state(monkeypatch, module):
    """No umask read (which sets it) and no codec error handler registered when a module is imported."""
    importlib.import_module(module)  # its imports first: only the module's own top level runs below

    def forbidden(*args):
        raise AssertionError(f"{module} changes process state at import")

    monkeypatch.setattr(os, "umask", forbidden)
    monkeypatch.setattr(codecs, "register_error", forbidden)
    spec = importlib.util.find_spec(module)
    spec.loader.exec_module(importlib.util.module_from_spec(spec))  # a fresh copy, not the one other tests use


def test_atomic_write_uses_the_umask_at_write_time(tmp_path):
    old = os.umask(0o027)
    try:
        run_folder.atomic_write_text(tmp_path / "a.txt", "x")
        os.umask(0o002)
        run_folder.atomic_write_bytes(tmp_path / "b.bin", b"x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a.txt").stat().st_mode) == 0o640
    assert stat.S_IMODE((tmp_path / "b.bin").stat().st_mode) == 0o664
    assert (tmp_path / "a.txt").read_text() == "x" and not list(tmp_path.glob(".*.tmp"))


DATA_CASES = {
    "wrong column count": (b"label,text\n0,bad day\n1,good,day\n",
                           ["line 3", "expected 2 columns (label, text), found 3", "--bad-rows skip"]),
    "wrong column count, Sentiment140": (
        (SENTIMENT140_ROW.format(y=0, i=1, text="bad day") + '"4","2","d","q","good day"\n').encode(),
        ["line 2", "expected 6 columns (target, id, date, query, user, text), found 5"]),
    "quote never closed": (b'label,text\n0,"bad day\n1,good day\n',
                           ["line 2", "malformed CSV (unexpected end of data)", "read up to line 3", "quotes"]),
    "text after a closing quote": (b'label,text\n0,"good" day\n', ["line 2", "',' expected after '\"'"]),
    "NUL bytes": (b"label,text\n0,bad\x00 day\n1,good day\n", ["line 2", "NUL bytes", "tr -d"]),
    "empty text": (b"label,text\n0,   \n1,good day\n", ["line 2", "the tweet text is empty", "--bad-rows skip"]),
    "labels outside the set": (
        b"label,text\n0,bad day\nbad,awful\ngood,great\ngood,nice\n",
        ["'good': 2 rows (first on line 4)", "'bad': 1 rows (first on line 3)",
         "--label-map \"{'bad': 0, 'good': 4}\"", "--bad-rows skip"]),
    "missing columns": (b"score,body\n0,bad day\n", ["missing column(s) text, label", "found 'score', 'body'"]),
    "empty file": (b"", ["the file is empty"]),
    "whitespace-only file": (b"  \n\n\t\n", ["the file is empty"]),
    "header only": (b"label,text\n", ["no usable rows (it has no data rows)"]),
    "giant field": (b"label,text\n0," + b"x" * 200_000 + b"\n", ["line 2", "field larger than field limit"]),
}


@pytest.mark.parametrize("case", list(DATA_CASES))
def test_bad_data_file(tmp_path, capsys, case):
    content, expected = DATA_CASES[case]
    path = tmp_path / "tweets.csv"
    path.write_bytes(content)
    msg = user_error(capsys, ["data", str(path), "--bad-rows", "error"])
    assert str(path) in msg
    for text in expected:
        assert text in msg


@pytest.mark.parametrize("name, content, expected", [
    ("missing.csv", None, "does not exist. Pass a CSV/JSONL/Parquet file"),  # sendit data has no --data flag
    ("folder", "dir", "is a folder; pass a file"),
    ("broken.csv.gz", b"\x1f\x8bnot gzip at all", "is gzip-compressed but damaged or cut short"),
    ("broken.jsonl", b'{"text": "ok", "label": 0}\n{not json\n', "could not be read"),
    ("broken.parquet", b"PAR1 nope", "could not be read"),
])
def test_missing_or_unreadable_file(tmp_path, capsys, name, content, expected):
    path = tmp_path / name
    if content == "dir":
        path.mkdir()
    elif content is not None:
        path.write_bytes(content)
    msg = user_error(capsys, ["data", str(path)])
    assert str(path) in msg and expected in msg


def test_bytes_outside_the_declared_encoding(tmp_path, capsys):
    path = tmp_path / "latin.csv"
    path.write_bytes("label,text\n1,good day\n0,caf\xe9 closed\n".encode("latin-1"))
    msg = user_error(capsys, ["data", str(path), "--encoding", "utf-8"])
    assert "line 3: byte b'\\xe9' is not valid utf-8" in msg and "--encoding latin-1" in msg
    assert "--encoding 'klingon' is not an encoding" in user_error(capsys, ["data", str(path), "--encoding", "klingon"])
    assert main(["data", str(path)]) == 0  # auto: not UTF-8, so latin-1, like Sentiment140's own files
    assert main(["data", str(path), "--encoding", "latin-1"]) == 0


def test_utf8_with_byte_order_mark_reads(tmp_path, capsys):
    path = tmp_path / "excel.csv"
    path.write_bytes("\ufefflabel,text\n0,café closed 😞\n1,good day\n".encode("utf-8"))
    assert main(["data", str(path), "--bad-rows", "error"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["rows"] == 2 and info["labels"] == {"negative": 1, "positive": 1}


def test_skipped_rows_are_counted_by_reason(tmp_path, capsys):
    path = tmp_path / "messy.csv"
    path.write_text("label,text\n0,bad day\n1,good,day\n1,  \nhappy,yay\n2,meh\n4,great\n")
    assert main(["data", str(path), "--bad-rows", "skip", "--normalize", "false"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["rows"] == 2
    assert info["dropped"] == {"malformed_row": 1, "empty_text": 1, "unknown_label": 1, "neutral": 1}


def test_gzip_sentiment140_reads(tmp_path, capsys):
    path = tmp_path / "s140.csv.gz"
    path.write_bytes(gzip.compress("".join(SENTIMENT140_ROW.format(y=y, i=i, text=f"tweet {i}")
                                           for i, y in enumerate([0, 4, 2, 4])).encode("latin-1")))
    assert main(["data", str(path), "--bad-rows", "error"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["labels"] == {"negative": 1, "positive": 2} and info["dropped"] == {"neutral": 1}


@pytest.mark.usefixtures("one_thread")
def test_rows_that_are_no_tweet_are_dropped_and_counted(world, capsys):
    path = world / "mixed.jsonl"
    rows = [{"text": "a good day", "label": 4}, {"text": "a bad day", "label": 0}, {"text": None, "label": 0},
            {"text": {"a": 1}, "label": 0}, {"text": [1], "label": 4}, {"text": 42, "label": 4},
            {"text": "42", "label": 4}, {"text": "   ", "label": 0}]
    path.write_text("\n".join(map(json.dumps, rows)) + "\n")
    assert main(["data", str(path), "--bad-rows", "skip"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["rows"] == 3  # "42" written as a string is a (short) tweet
    assert info["dropped"] == {"missing_text": 1, "not_text": 3, "empty_text": 1}
