"""Reading tabular input, files and streams: every CSV/JSONL/Parquet file sendit reads, and the CSV stream that
`sendit predict --input` works through chunk by chunk.

The labelled readers return a `Table` (texts, class ids) plus a `Counter` of dropped rows by reason, so that a run
can say exactly what it left out. Labels become class ids as `labels.py` says (by default Sentiment140's 0 = negative
and 4 = positive become 0 and 1, its neutral 2 dropped and counted; `--labels` keeps any set). Encoding "auto" is UTF-8, else latin-1 (the encoding of Sentiment140's own files, which
any byte decodes): a file is decided as a whole, a stream (stdin, a 1.6M-row file read in chunks) cannot be read
ahead, so there a byte sequence that is not UTF-8 is read as latin-1 where it stands.
"""

from __future__ import annotations

import codecs
import csv
import io
import os
import re
import sys
from collections import Counter
from importlib import resources
from pathlib import Path
from typing import Iterator

from sendit.config.schema import DataConfig
from sendit.data.rows import Table, collect, short
from sendit.errors import ConfigError, DataError
from sendit.fileio import format_problem, open_input, read_all, uncompressed

EMBEDDED = "embedded"
SENTIMENT140_COLUMNS = ("target", "id", "date", "query", "user", "text")
SENTIMENT140_NAMES = list(SENTIMENT140_COLUMNS)
HUB_DATASET = "stanfordnlp/sentiment140"
# --data sentiment140-manual: the packaged hand-labelled file (498 tweets, 0/2/4) as a training source.
MANUAL = "sentiment140-manual"
MANUAL_FILE = "testdata.manual.2009.06.14.csv"
TEXT_COLUMNS = ("text", "tweet", "sentence", "content")
LABEL_COLUMNS = ("label", "target", "sentiment", "polarity")


def is_sentiment140(first_row: list[str]) -> bool:
    """Whether a file's first row is a data row of the headerless six-column Sentiment140 file (target 0/2/4,
    id, date, query, user, text) rather than a header."""
    return len(first_row) == 6 and first_row[0].strip() in ("0", "2", "4")


# --------------------------------------------------------------------------------------------- readers
def _read_bytes(path: Path) -> bytes:
    """Every byte of a data file: a file, a pipe (<(zcat ...)), gzip/bz2/xz undone; devices and archives refused."""
    return read_all(path, str(path), DataError)


def _text(raw: bytes, path: Path, encoding: str, flag: str | None = "--data") -> io.StringIO:
    """The bytes as text. 'auto' is UTF-8 when the bytes are valid UTF-8, else latin-1 (Sentiment140's own files,
    which any byte decodes), or UTF-16 when they start with its byte-order mark (Excel's "Unicode text"); a UTF-8
    byte-order mark (Excel's "CSV UTF-8") is dropped either way."""
    raw = raw.removeprefix(codecs.BOM_UTF8)
    if not raw.strip():
        where = f"Point {flag} at" if flag else "Pass"
        raise DataError(f"{path}: the file is empty. {where} a CSV with text and label columns.")
    problem = format_problem(raw)
    if problem:
        raise DataError(f"{path} is {problem}.")
    if encoding == "auto" and raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        encoding = "utf-16"
    elif b"\x00" in raw:
        line = raw[: raw.index(b"\x00")].count(b"\n") + 1
        raise DataError(
            f"{path}, line {line}: the file contains NUL bytes, so it is binary or corrupted (a spreadsheet "
            f"export gone wrong?). Re-export it as plain CSV, or strip the NULs: tr -d '\\000' < in > out."
        )
    if encoding == "auto":
        try:
            return io.StringIO(raw.decode("utf-8"), newline="")
        except UnicodeDecodeError:
            return io.StringIO(raw.decode("latin-1"), newline="")
    try:
        return io.StringIO(raw.decode(encoding), newline="")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise DataError(
            f"{path}, line {line}: byte {raw[e.start:e.start + 1]!r} is not valid {encoding}. Pass --encoding "
            f"latin-1 (Sentiment140's encoding) or --encoding auto (UTF-8, else latin-1), or re-save the file as "
            f"{encoding}."
        ) from None
    except LookupError:
        raise ConfigError(f"--encoding {encoding!r} is not an encoding Python knows; use auto, utf-8 or "
                          f"latin-1.") from None


def read_sentiment140(path: str | Path, cfg: DataConfig | None = None, encoding: str = "latin-1",
                      classes: tuple[str, ...] | None = None) -> Table:
    """The original six-column file (target, id, date, query, user, text), no header, latin-1."""
    path = Path(path)
    return _sentiment140(path, _text(_read_bytes(path), path, encoding), cfg or DataConfig(), classes)


def _sentiment140(path: Path, stream: io.StringIO, cfg: DataConfig, classes: tuple[str, ...] | None) -> Table:
    rows = csv.reader(stream, strict=True)
    items = ((i, r[0] if r else "", r[5] if len(r) == 6 else None, len(r)) for i, r in _numbered(rows))
    return collect(path, items, cfg, expect_cols=6, columns=SENTIMENT140_COLUMNS, classes=classes)


def _numbered(rows):
    """(line number, row) pairs that survive csv's own errors (broken quoting) as a DataError. The reader is
    strict, so a quote that is never closed fails instead of swallowing the rest of the file into one tweet."""
    it = iter(rows)
    while True:
        start = rows.line_num + 1
        try:
            row = next(it)
        except StopIteration:
            return
        except csv.Error as e:
            upto = f" (read up to line {rows.line_num})" if rows.line_num > start else ""
            raise DataError(f"line {start}: malformed CSV ({e}) in the row that starts there{upto}. Check its "
                            f"quotes: a quoted field must end with a quote followed by a comma or the line end, "
                            f"and quotes inside it are doubled (\"\").") from None
        yield rows.line_num, row


# What else each option takes besides a file, for the message about a file that is not there.
OTHER_SOURCES = {
    "--data": f"'embedded' for the packaged sample, or 'hub' for {HUB_DATASET}",
    None: f"'embedded' for the packaged sample, or 'hub' for {HUB_DATASET}",  # sendit data SOURCE
    "--test-file": "'embedded' for the packaged hand-labelled tweets, or 'none'",
}


def read_table(path: str | Path, cfg: DataConfig | None = None, encoding: str | None = None,
               text_column: str | None = None, label_column: str | None = None, flag: str | None = "--data",
               also: str | None = None, classes: tuple[str, ...] | None = None) -> Table:
    """Any supported file: the original Sentiment140 CSV (detected by its shape), or CSV/JSONL/Parquet with
    text and label columns (named text/label or a synonym, or `text_column`/`label_column`). `flag` is the option
    that named the file (None: a command's argument), `also` what else it takes, for the messages; `classes` the
    run's classes (labels.Reading decides them when None). A pipe or a process substitution reads like a file;
    gzip, bz2 and xz are decompressed whatever the file's name."""
    named = (text_column, label_column)
    cfg = cfg or DataConfig()
    path = Path(path)
    if not path.exists():
        other = also or OTHER_SOURCES.get(flag, "no file")
        raise DataError(f"data file '{path}' does not exist. Pass {flag + ' with ' if flag else ''}a "
                        f"CSV/JSONL/Parquet file, {other}.")
    if path.is_dir():
        raise DataError(f"'{path}' is a folder; {flag + ' takes' if flag else 'pass'} a file.")
    raw = _read_bytes(path)
    suffixes = "".join(path.suffixes[-2:]).lower()
    if ".parquet" in suffixes or ".jsonl" in suffixes or suffixes.endswith(".json"):
        import pandas as pd

        try:
            # dtype=False: texts stay as the file wrote them (pandas would turn a column of "42"s into numbers)
            df = (pd.read_parquet(io.BytesIO(raw)) if ".parquet" in suffixes
                  else pd.read_json(io.BytesIO(raw), lines=True, dtype=False))
        except (ValueError, OSError) as e:
            raise DataError(f"{path}: could not be read ({e}). Check that the file is valid.") from None
        text_col, label_col = _find_columns(path, list(df.columns), *named)
        items = ((i + 1, lab, txt, None) for i, (lab, txt) in enumerate(zip(df[label_col], df[text_col])))
        return collect(path, items, cfg, classes=classes)
    stream = _text(raw, path, encoding or cfg.encoding, flag)
    try:
        first = next(csv.reader(io.StringIO(stream.readline())), [])
    except csv.Error:
        first = []
    stream.seek(0)
    if is_sentiment140(first) and named == (None, None):
        return _sentiment140(path, stream, cfg, classes)
    reader = csv.reader(stream, strict=True)
    try:
        header = [h.strip() for h in next(_numbered(reader), (1, []))[1]]
    except DataError as e:
        raise DataError(f"{path}, {e}") from None
    text_col, label_col = _find_columns(path, header, *named)
    ti, li = header.index(text_col), header.index(label_col)
    n = len(header)

    def items():
        for line, row in _numbered(reader):
            if not row:
                continue
            yield line, row[li] if len(row) == n else None, row[ti] if len(row) == n else None, len(row)

    return collect(path, items(), cfg, expect_cols=n, columns=tuple(header), classes=classes)


def _find_columns(path: Path, columns: list, text_column: str | None = None,
                  label_column: str | None = None) -> tuple[str, str]:
    for flag, name in (("--text-column", text_column), ("--label-column", label_column)):
        if name is not None and name not in columns:
            raise DataError(f"{path}: {flag} {name!r} is not a column of the file; its columns are "
                            f"{', '.join(short(c) for c in columns) or 'none'}.")
    lower = {str(c).strip().lower(): c for c in columns}
    text = text_column or next((lower[c] for c in TEXT_COLUMNS if c in lower), None)
    label = label_column or next((lower[c] for c in LABEL_COLUMNS if c in lower), None)
    missing = [what for what, col in (("text", text), ("label", label)) if col is None]
    if missing:
        raise DataError(
            f"{path}: missing column(s) {', '.join(missing)}; found {', '.join(short(c) for c in columns) or 'none'}. "
            f"The file needs a header with a 'text' column (or tweet/sentence) and a 'label' column "
            f"(or target/sentiment), or the headerless six-column Sentiment140 format."
        )
    return text, label


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
# surrogateescape turns each byte that is not valid UTF-8 into U+DC80..U+DCFF (bytes 0x80-0xFF; ASCII is always
# valid); mapping those back to the same byte read as latin-1 keeps valid UTF-8 as UTF-8 and every stray byte as
# the latin-1 character it is, without registering a codec error handler for the whole process.
_ESCAPED = re.compile("[\udc80-\udcff]")


def _as_latin1(text: str) -> str:
    return text if text.isascii() else _ESCAPED.sub(lambda m: chr(ord(m.group()) - 0xDC00), text)


class _Stream:
    """A text stream over bytes (UTF-8, stray bytes as latin-1) whose first line can be looked at and then handed
    back in front of the rest."""

    def __init__(self, raw: io.BufferedIOBase):
        self.text = io.TextIOWrapper(raw, encoding="utf-8", errors="surrogateescape", newline="")
        self.head = ""

    def first_line(self) -> str:
        # A UTF-8 byte-order mark (Excel's "CSV UTF-8") is dropped, as the file readers drop it.
        self.head = _as_latin1(self.text.readline()).removeprefix("\ufeff")
        return self.head

    def __iter__(self):
        return iter(self.readline, "")

    def readline(self) -> str:
        if self.head:
            out, self.head = self.head, ""
            return out
        return _as_latin1(self.text.readline())


def _open_stream(input_path: str) -> _Stream:
    if input_path == "-":
        if sys.stdin is None or sys.stdin.closed:
            raise DataError("--input -: stdin is closed, so there is nothing to read. Pipe a CSV in "
                            "(cat tweets.csv | sendit predict MODEL_DIR --input -) or pass --input FILE.csv.")
        return _Stream(uncompressed(sys.stdin.buffer, "--input - (stdin)", DataError, close=False))
    if not os.path.exists(input_path):
        raise DataError(f"--input '{input_path}' does not exist or is not a file. Pass a CSV file with a "
                        f"header and a text column, or '-' to read the CSV from stdin.")
    return _Stream(open_input(input_path, f"--input '{input_path}'", DataError))


def read_chunks(input_path: str, text_column: str = "text", chunk_size: int = 10_000,
                reserved: tuple[str, ...] = (), bad_rows: str = "error", dropped: Counter | None = None) -> Iterator:
    """The CSV (or '-' = stdin) as DataFrames of chunk_size rows, every column as the text it was in the file.

    The headerless six-column Sentiment140 file is recognised by its first line and gets the column names
    target, id, date, query, user, text. An input that already has a `reserved` column is refused. A row with
    more or fewer fields than the header is an error naming its line, or with `bad_rows` 'skip' left out and
    counted in `dropped` (as `malformed_row`, the reason training data uses)."""
    where = "stdin" if input_path == "-" else input_path
    stream = _open_stream(input_path)
    try:
        names, header = _header(stream, where, text_column, reserved)
        yield from _row_chunks(stream, where, names, header, chunk_size, bad_rows, dropped)
    finally:
        if input_path == "-":
            stream.text.detach()  # leave sys.stdin usable (and open) for the caller
        else:
            stream.text.close()


def _header(stream: _Stream, where: str, text_column: str, reserved: tuple[str, ...]) -> tuple[list[str], bool]:
    """The input's columns, and whether its first line is a header (not when it is the headerless Sentiment140
    file). The first line stays in the stream either way, so that line numbers count from the top."""
    head = stream.first_line()
    if not head.strip():
        raise DataError(f"--input {where}: the input is empty (the first line must be a CSV header).")
    problem = format_problem(head[:8].encode("latin-1", "replace"))  # Parquet: the compressed formats are undone
    if problem or "\x00" in head:
        raise DataError(f"--input {where} is {problem or 'binary (its first line holds NUL bytes)'}, not a CSV "
                        f"file. Pass a CSV with a header and a text column.")
    first = next(csv.reader([head]), [])
    if text_column not in first and is_sentiment140(first):
        names = SENTIMENT140_NAMES
    elif text_column not in first:
        raise DataError(f"--input {where}: no '{text_column}' column in the header (found "
                        f"{', '.join(first) or 'nothing'}). Pass --text-column NAME, or add a header line.")
    else:
        names = _unique(first)
    dup = [c for c in reserved if c in names]
    if dup:
        raise DataError(f"--input {where} already has a '{dup[0]}' column (is it an output of sendit predict?). "
                        f"Drop or rename it first so the prediction does not overwrite it.")
    return names, names is not SENTIMENT140_NAMES


def _unique(names: list[str]) -> list[str]:
    """Header names made unique as pandas makes them: a second 'x' becomes 'x.1'."""
    seen: Counter = Counter()
    out = []
    for name in names:
        out.append(f"{name}.{seen[name]}" if seen[name] else name)
        seen[name] += 1
    return out


def _row_chunks(stream: _Stream, where: str, names: list[str], header: bool, chunk_size: int, bad_rows: str,
                dropped: Counter | None) -> Iterator:
    import pandas as pd

    numbered = _numbered(csv.reader(stream, strict=True))
    n, rows, total, skipped = len(names), [], 0, 0
    try:
        if header:
            next(numbered, None)
        for line, row in numbered:
            if not row:
                continue  # a blank line, as pandas skips them
            if len(row) != n:
                if bad_rows != "skip":
                    raise DataError(
                        f"--input {where}, line {line}: expected {n} fields ({', '.join(names)}), found {len(row)} "
                        f"({'a missing field' if len(row) < n else 'an unquoted comma in the text?'}). Fix the row, "
                        f"or pass --bad-rows skip to leave such rows out (they are counted).")
                skipped += 1
                continue
            rows.append(row)
            if len(rows) == chunk_size:
                total += len(rows)
                yield pd.DataFrame(rows, columns=names)
                rows = []
    except DataError as e:
        if str(e).startswith("line "):
            raise DataError(f"--input {where}, {e}") from None
        raise
    finally:
        if dropped is not None and skipped:
            dropped["malformed_row"] += skipped
    if rows:
        yield pd.DataFrame(rows, columns=names)
    elif not total:
        why = f" ({skipped} malformed rows were skipped)" if skipped else ""
        raise DataError(f"--input {where}: the file has a header but no rows{why}, so there is nothing to predict.")


def read_texts(path: str | Path, column: str = "text") -> list[str]:
    """Unlabelled texts: a CSV read as `sendit predict --input` reads it, or one JSON object per line."""
    path = Path(path)
    if path.suffix != ".jsonl":
        return [text for chunk in read_chunks(str(path), column) for text in chunk[column]]
    import pandas as pd

    if not path.exists():
        raise DataError(f"'{path}' does not exist or is not a file. Pass a JSON-lines file with a '{column}' key.")
    raw = _read_bytes(path)
    try:
        df = pd.read_json(io.BytesIO(raw), lines=True)
    except (ValueError, OSError) as e:
        raise DataError(f"{path}: could not be read as JSON lines ({' '.join(str(e).split())}). Check that each "
                        f"line is one JSON object.") from None
    if column not in df.columns:
        raise DataError(f"{path}: no '{column}' column (found {', '.join(map(str, df.columns))}).")
    return ["" if v is None or (isinstance(v, float) and v != v) else str(v) for v in df[column]]
