"""Fuzzing the readers: whatever bytes a file holds, reading it either works or raises DataError (a message for
the user), never another exception. Runs with hypothesis, offline, in a few seconds."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sendit.config.schema import DataConfig
from sendit.data.formats.csv import read_sentiment140
from sendit.data.reading import read_chunks, read_table
from sendit.errors import DataError

# SENDIT_FUZZ_EXAMPLES=2000 for a deeper search (about a minute); the default keeps the suite fast.
SETTINGS = settings(max_examples=int(os.environ.get("SENDIT_FUZZ_EXAMPLES", 150)), deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

# CSV-shaped noise: the characters that break CSV files, labels near the valid ones, and bytes of other encodings.
PIECES = st.sampled_from([",", '"', '""', "\n", "\r\n", "\r", "\x00", " ", "\t", "0", "1", "2", "4", "-1", "4.0",
                          "pos", "neg", "label", "text", "tweet", "target", "\ufeff", "é", "😀", "x" * 50])
CSV_TEXT = st.lists(st.one_of(PIECES, st.text(max_size=8)), max_size=60).map("".join)
ENCODED = st.tuples(CSV_TEXT, st.sampled_from(["utf-8", "latin-1", "utf-16"])).map(
    lambda t: t[0].encode(t[1], errors="replace"))
HEADERS = st.sampled_from([b"", b"label,text\n", b"text,label\n", b"sentiment,tweet,extra\n"])
CSV_BYTES = st.one_of(st.binary(max_size=400), st.tuples(HEADERS, ENCODED).map(b"".join))
CONFIGS = st.builds(DataConfig, bad_rows=st.sampled_from(["error", "skip"]),
                    encoding=st.sampled_from(["auto", "utf-8", "latin-1"]),
                    label_map=st.sampled_from([{}, {"pos": 4, "neg": 0}]))



@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


def _file(folder: Path, name: str, content: bytes) -> Path:
    path = folder / name
    path.write_bytes(content)
    return path


@pytest.mark.parametrize("suffix", [".csv", ".csv.gz", ".jsonl", ".json", ".parquet"])
@SETTINGS
@given(content=CSV_BYTES, cfg=CONFIGS)
def test_read_table_raises_only_data_errors(work, suffix, content, cfg):
    if suffix == ".csv.gz" and content[:1] != b"\x1f":
        content = gzip.compress(content)  # mostly valid gzip around noise, sometimes noise itself
    path = _file(work, "fuzz" + suffix, content)
    try:
        table = read_table(path, cfg)
    except DataError:
        return
    assert len(table) == len(table.labels) > 0
    assert set(table.labels.tolist()) <= {0, 1}
    assert all(isinstance(t, str) and t.strip() for t in table.texts)


@SETTINGS
@given(content=CSV_BYTES, cfg=CONFIGS)
def test_read_sentiment140_raises_only_data_errors(work, content, cfg):
    path = _file(work, "fuzz-s140.csv", content)
    try:
        table = read_sentiment140(path, cfg, encoding=cfg.encoding)
    except DataError:
        return
    assert len(table) == len(table.labels) > 0


@SETTINGS
@given(content=CSV_BYTES, suffix=st.sampled_from([".csv", ".csv.gz", ".jsonl", ".parquet"]),
       bad_rows=st.sampled_from(["error", "skip"]))
def test_streamed_reading_raises_only_data_errors(work, content, suffix, bad_rows):
    """What `sendit predict --input` reads, chunk by chunk, in every format."""
    path = _file(work, "fuzz-stream" + suffix, content)
    try:
        chunks = list(read_chunks(str(path), chunk_size=3, bad_rows=bad_rows))
    except DataError:
        return
    assert chunks and all(isinstance(t, str) for chunk in chunks for t in chunk["text"])


def test_fuzzer_reaches_both_outcomes(work):
    """The strategies are not vacuous: a well-formed file from the same alphabet reads, a broken one fails."""
    assert len(read_table(_file(work, "ok.csv", b"label,text\n0,bad day\n4,good day\n"), DataConfig())) == 2
    with pytest.raises(DataError):
        read_table(_file(work, "bad.csv", b'label,text\n0,"bad day\n'), DataConfig())
