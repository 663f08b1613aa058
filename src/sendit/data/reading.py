"""Reading data, whole or streamed: every file a command reads goes through the format its name picks
(`formats/`: CSV, JSON lines, Parquet; gzip, bz2 and xz are undone whatever the name, by `fileio`).

The labelled readers return a `Table` (texts, class ids) plus a `Counter` of dropped rows by reason, so that a run
can say exactly what it left out. Labels become class ids as `labels.py` says (by default Sentiment140's 0 = negative
and 4 = positive become 0 and 1, its neutral 2 dropped and counted; `--labels` keeps any set). `read_chunks` gives
`sendit predict --input` the input's columns chunk by chunk, so that memory stays bounded.
"""

from __future__ import annotations

import sys
from collections import Counter
from importlib import resources
from pathlib import Path
from typing import BinaryIO, Iterator

from sendit.config.schema import DataConfig
from sendit.data.formats import Request, StreamRequest, format_for, opened
from sendit.data.formats.csv import read_sentiment140
from sendit.data.rows import Table, collect
from sendit.errors import DataError
from sendit.fileio import open_input, uncompressed

EMBEDDED = "embedded"
HUB_DATASET = "stanfordnlp/sentiment140"
# --data sentiment140-manual: the packaged hand-labelled file (498 tweets, 0/2/4) as a training source.
MANUAL = "sentiment140-manual"
MANUAL_FILE = "testdata.manual.2009.06.14.csv"

# What else each option takes besides a file, for the message about a file that is not there.
OTHER_SOURCES = {
    "--data": f"'embedded' for the packaged sample, or 'hub' for {HUB_DATASET}",
    None: f"'embedded' for the packaged sample, or 'hub' for {HUB_DATASET}",  # sendit data SOURCE
    "--test-file": "'embedded' for the packaged hand-labelled tweets, or 'none'",
}


# --------------------------------------------------------------------------------------------- whole files
def read_table(path: str | Path, cfg: DataConfig | None = None, encoding: str | None = None,
               text_column: str | None = None, label_column: str | None = None, flag: str | None = "--data",
               also: str | None = None, classes: tuple[str, ...] | None = None) -> Table:
    """Any file in a registered format: the original Sentiment140 CSV (detected by its shape), or CSV/JSONL/Parquet
    with text and label columns (named text/label or a synonym, or `text_column`/`label_column`). `flag` is the
    option that named the file (None: a command's argument), `also` what else it takes, for the messages;
    `classes` the run's classes (labels.Reading decides them when None). A pipe or a process substitution reads
    like a file; gzip, bz2 and xz are decompressed whatever the file's name."""
    cfg = cfg or DataConfig()
    path = Path(path)
    if not path.exists():
        other = also or OTHER_SOURCES.get(flag, "no file")
        raise DataError(f"data file '{path}' does not exist. Pass {flag + ' with ' if flag else ''}a "
                        f"CSV/JSONL/Parquet file, {other}.")
    if path.is_dir():
        raise DataError(f"'{path}' is a folder; {flag + ' takes' if flag else 'pass'} a file.")
    request = Request(path, cfg, encoding or cfg.encoding, text_column, label_column, flag, classes)
    with open_input(path, str(path), DataError) as source:
        return format_for(path).read_table(source, request)


def embedded_path(name: str) -> Path:
    return Path(str(resources.files("sendit") / "resources" / name))


def read_source(spec: str, cfg: DataConfig, flag: str | None = "--data") -> Table:
    """Resolve --data: 'embedded', 'sentiment140-manual' (the packaged hand-labelled file, 0/2/4: the data of the
    three-class preset), 'hub' / 'hub:<dataset id>', or a file."""
    if spec == EMBEDDED:
        return read_sentiment140(embedded_path("sentiment140_sample.csv.gz"), cfg)
    if spec == MANUAL:
        return read_table(embedded_path(MANUAL_FILE), cfg)
    if spec == "hub" or spec.startswith("hub:"):
        return read_hub(spec.partition(":")[2] or HUB_DATASET, cfg)
    return read_table(spec, cfg, flag=flag)


def read_hub(dataset_id: str, cfg: DataConfig) -> Table:
    """The Hugging Face hub copy of Sentiment140 (columns text, sentiment 0/4). Needs `pip install sendit[hub]`."""
    try:
        import datasets
    except ImportError:
        raise DataError("reading from the hub needs the datasets package: pip install 'sendit[hub]'") from None
    try:
        ds = datasets.load_dataset(dataset_id, split="train")
    except Exception as e:  # network errors, missing dataset: all surface as a user-facing message
        raise DataError(
            f"could not load '{dataset_id}' from the Hugging Face hub ({type(e).__name__}: {e}). Offline? "
            f"Download training.1600000.processed.noemoticon.csv and pass it with --data."
        ) from None
    label_col = "sentiment" if "sentiment" in ds.column_names else "label"
    items = ((i + 1, lab, txt, None) for i, (lab, txt) in enumerate(zip(ds[label_col], ds["text"])))
    return collect(Path(dataset_id), items, cfg)


def read_test_file(spec: str, cfg: DataConfig, classes: tuple[str, ...] | None = None,
                   flag: str | None = "--test-file", also: str | None = None, **columns: str | None) -> Table:
    """The hand-labelled test file, read against the run's classes: for the binary classes its neutral rows are
    dropped (498 -> 359 tweets). `columns`: text_column, label_column."""
    path = embedded_path(MANUAL_FILE) if spec == EMBEDDED else spec
    return read_table(path, cfg, flag=flag, also=also, classes=classes, **columns)


# --------------------------------------------------------------------------------------------- streams
def read_chunks(input_path: str, text_column: str = "text", chunk_size: int = 10_000,
                reserved: tuple[str, ...] = (), bad_rows: str = "error", dropped: Counter | None = None) -> Iterator:
    """The input (or '-' = stdin, read as CSV) as DataFrames of chunk_size rows with every column of the file,
    in the format its name picks; the text column's values are strings (a JSON null or an empty Parquet cell is
    the empty text, which is predicted like any).

    An input without `text_column`, or that already has a `reserved` column, is refused. Rows a format finds
    malformed (a CSV row with more or fewer fields than the header) are an error naming their line, or with
    `bad_rows` 'skip' left out and counted in `dropped` (as `malformed_row`, the reason training data uses)."""
    where = "--input " + ("stdin" if input_path == "-" else input_path)
    source = _open_stream(input_path)
    request = StreamRequest(chunk_size, text_column, bad_rows)
    try:
        columns, chunks = opened(format_for(input_path), source, where, request)
        _check_columns(columns, where, text_column, reserved)
        rows = 0
        for chunk in chunks:
            rows += len(chunk)
            chunk[text_column] = [_as_text(v) for v in chunk[text_column]]
            yield chunk
        if not rows:
            skipped = request.dropped["malformed_row"]
            why = f" ({skipped} malformed rows were skipped)" if skipped else ""
            raise DataError(f"{where}: the file has a header but no rows{why}, so there is nothing to predict.")
    finally:
        source.close()  # stdin itself stays open for the caller (_open_stream)
        if dropped is not None:
            dropped.update(request.dropped)


def _open_stream(input_path: str) -> BinaryIO:
    if input_path == "-":
        if sys.stdin is None or sys.stdin.closed:
            raise DataError("--input -: stdin is closed, so there is nothing to read. Pipe a CSV in "
                            "(cat tweets.csv | sendit predict MODEL_DIR --input -) or pass --input FILE.csv.")
        return uncompressed(sys.stdin.buffer, "--input - (stdin)", DataError, close=False)
    if not Path(input_path).exists():
        raise DataError(f"--input '{input_path}' does not exist or is not a file. Pass a CSV, JSONL or Parquet "
                        f"file with a text column (a CSV with a header), or '-' to read a CSV from stdin.")
    return open_input(input_path, f"--input '{input_path}'", DataError)


def _check_columns(columns: list, where: str, text_column: str, reserved: tuple[str, ...]) -> None:
    if not columns:
        raise DataError(f"{where}: the input is empty (no columns, no rows).")
    if text_column not in columns:
        raise DataError(f"{where}: no '{text_column}' column in the header (found "
                        f"{', '.join(map(str, columns)) or 'nothing'}). Pass --text-column NAME, or add a header "
                        f"line.")
    dup = [c for c in reserved if c in columns]
    if dup:
        raise DataError(f"{where} already has a '{dup[0]}' column (is it an output of sendit predict?). "
                        f"Drop or rename it first so the prediction does not overwrite it.")


def _as_text(value: object) -> str:
    """A text cell as the model reads it: a string as it is, a missing value (None, NaN, NA) as the empty text,
    anything else (a number) as its spelling."""
    if isinstance(value, str):
        return value
    missing = value is None or type(value).__name__ == "NAType" or (isinstance(value, float) and value != value)
    return "" if missing else str(value)
