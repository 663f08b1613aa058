"""The one tabular reader and the one atomic writer: streams decode like files, and nothing happens at import."""

from __future__ import annotations

import codecs
import importlib
import importlib.util
import os
import stat

import pytest

from sendit.run import folder as run_folder
from sendit.config.schema import DataConfig
from sendit.data.reading import read_chunks, read_table
from sendit.errors import DataError

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
