"""Adding a data format is one file plus one registry line: tab-separated values, defined and registered here and
nowhere else, are then read by `sendit data`, a run's --data, `sendit evaluate` and, streamed in chunks,
`sendit predict` (which writes the columns and predictions it writes for the same rows as CSV)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from helpers import paths_atol, tiny_run_args

from sendit.cli import main
from sendit.config.schema import DataConfig
from sendit.data.formats import FORMATS, Format, StreamRequest, peek, register_format
from sendit.data.reading import read_source

pytestmark = pytest.mark.usefixtures("one_thread")


def read_tsv(source, where: str, request: StreamRequest):
    """The whole file of a new format: its columns, and its rows in chunks of the size asked for."""
    return peek(iter(pd.read_csv(source, sep="\t", dtype=str, keep_default_na=False, chunksize=request.chunk_size)))


@pytest.fixture
def tsv():
    fmt = register_format(Format("TSV", (".tsv",), read_tsv))  # the one registry line
    yield fmt
    FORMATS.pop(".tsv")


@pytest.fixture
def tweets(tmp_path):
    """200 tweets as TSV and, for comparison, as CSV; commas in the texts would split them in a CSV reader."""
    table = read_source("embedded", DataConfig(normalize=False))
    frame = pd.DataFrame({"id": range(200), "text": [t + ", ok" for t in table.texts[:200]],
                          "label": [4 * int(y) for y in table.labels[:200]]})
    frame.to_csv(tmp_path / "tweets.tsv", sep="\t", index=False)
    frame.to_csv(tmp_path / "tweets.csv", index=False)
    return frame


def _data(capsys, path) -> dict:
    code = main(["data", str(path)])
    captured = capsys.readouterr()
    return json.loads(captured.out) if code == 0 else {"error": captured.err}


def test_a_new_format_needs_one_file_and_one_registry_line(tiny_opt, tweets, tmp_path, capsys):
    path = tmp_path / "tweets.tsv"
    assert "missing column(s)" in _data(capsys, path)["error"]  # unregistered: read as CSV, one column per line

    register_format(Format("TSV", (".tsv",), read_tsv))
    try:
        info = _data(capsys, path)
        assert info["rows"] == 200 and info["rows"] == _data(capsys, tmp_path / "tweets.csv")["rows"]
        assert read_source(str(path), DataConfig(normalize=False)).texts == tweets["text"].tolist()

        run = tmp_path / "run"
        assert main(tiny_run_args(tiny_opt, run, "head", "--data", str(path), "--epochs", "1")) == 0
        assert json.loads((run / "run.json").read_text())["config"]["data"]["data"] == str(path)
        model = run / "head"

        assert main(["evaluate", str(model), "--data", str(path), "--out", str(tmp_path / "eval")]) == 0
        summary = pd.read_csv(tmp_path / "eval" / "head_inference_metrics_summary.csv")
        assert summary["test_set"].tolist() == ["tweets"] and summary["n"].tolist() == [200]

        for name in ("tweets.tsv", "tweets.csv"):
            argv = ["predict", str(model), "--input", str(tmp_path / name), "--output", str(tmp_path / f"{name}.out"),
                    "--chunk-size", "7"]
            assert main(argv) == 0, capsys.readouterr().err
        got, want = (pd.read_csv(tmp_path / f"{name}.out") for name in ("tweets.tsv", "tweets.csv"))
        assert list(got.columns) == ["id", "text", "label", "prediction", "prob_positive"] == list(want.columns)
        assert got["text"].tolist() == tweets["text"].tolist()
        np.testing.assert_allclose(got["prob_positive"], want["prob_positive"], atol=paths_atol(1e-6))
    finally:
        FORMATS.pop(".tsv")
    assert "missing column(s)" in _data(capsys, path)["error"]  # and it leaves with its line


def test_a_new_format_is_found_under_compression_and_a_second_suffix(tsv, tweets, tmp_path, capsys):
    import gzip

    packed = tmp_path / "tweets.v2.tsv.gz"
    packed.write_bytes(gzip.compress((tmp_path / "tweets.tsv").read_bytes()))
    assert _data(capsys, packed)["rows"] == 200
