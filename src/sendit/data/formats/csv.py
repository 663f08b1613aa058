"""CSV, the default format: a header with text and label columns, or the headerless six-column Sentiment140 file
(recognised by its first row), in any encoding.

Encoding "auto" is UTF-8, else latin-1 (the encoding of Sentiment140's own files, which any byte decodes): a file
read whole is decided as a whole; a stream (stdin, a 1.6M-row file read in chunks) cannot be read ahead, so there
a byte sequence that is not UTF-8 is read as latin-1 where it stands.
"""

from __future__ import annotations

import codecs
import csv
import io
import re
from collections import Counter
from pathlib import Path
from typing import BinaryIO, Iterator

from sendit.config.schema import DataConfig
from sendit.data.formats.registry import Format, Request, StreamRequest, register_format
from sendit.data.rows import Table, collect, find_columns
from sendit.errors import ConfigError, DataError
from sendit.fileio import format_problem, read_all

SENTIMENT140_COLUMNS = ("target", "id", "date", "query", "user", "text")
SENTIMENT140_NAMES = list(SENTIMENT140_COLUMNS)


def is_sentiment140(first_row: list[str]) -> bool:
    """Whether a file's first row is a data row of the headerless six-column Sentiment140 file (target 0/2/4,
    id, date, query, user, text) rather than a header."""
    return len(first_row) == 6 and first_row[0].strip() in ("0", "2", "4")


# --------------------------------------------------------------------------------------------- read whole
def table(source: BinaryIO, request: Request) -> Table:
    """The CSV as a Table: the Sentiment140 file by its shape (unless columns are named), else the header's
    text and label columns."""
    path, cfg = request.path, request.cfg
    stream = _text(source.read(), path, request.encoding, request.flag)
    try:
        first = next(csv.reader(io.StringIO(stream.readline())), [])
    except csv.Error:
        first = []
    stream.seek(0)
    if is_sentiment140(first) and (request.text_column, request.label_column) == (None, None):
        return _sentiment140(path, stream, cfg, request.classes)
    reader = csv.reader(stream, strict=True)
    try:
        header = [h.strip() for h in next(_numbered(reader), (1, []))[1]]
    except DataError as e:
        raise DataError(f"{path}, {e}") from None
    text_col, label_col = find_columns(path, header, request.text_column, request.label_column)
    ti, li = header.index(text_col), header.index(label_col)
    n = len(header)

    def items():
        for line, row in _numbered(reader):
            if not row:
                continue
            yield line, row[li] if len(row) == n else None, row[ti] if len(row) == n else None, len(row)

    return collect(path, items(), cfg, expect_cols=n, columns=tuple(header), classes=request.classes)


def read_sentiment140(path: str | Path, cfg: DataConfig | None = None, encoding: str = "latin-1",
                      classes: tuple[str, ...] | None = None) -> Table:
    """The original six-column file (target, id, date, query, user, text), no header, latin-1."""
    path = Path(path)
    raw = read_all(path, str(path), DataError)
    return _sentiment140(path, _text(raw, path, encoding), cfg or DataConfig(), classes)


def _sentiment140(path: Path, stream: io.StringIO, cfg: DataConfig, classes: tuple[str, ...] | None) -> Table:
    rows = csv.reader(stream, strict=True)
    items = ((i, r[0] if r else "", r[5] if len(r) == 6 else None, len(r)) for i, r in _numbered(rows))
    return collect(path, items, cfg, expect_cols=6, columns=SENTIMENT140_COLUMNS, classes=classes)


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


# --------------------------------------------------------------------------------------------- streamed
# surrogateescape turns each byte that is not valid UTF-8 into U+DC80..U+DCFF (bytes 0x80-0xFF; ASCII is always
# valid); mapping those back to the same byte read as latin-1 keeps valid UTF-8 as UTF-8 and every stray byte as
# the latin-1 character it is, without registering a codec error handler for the whole process.
_ESCAPED = re.compile("[\udc80-\udcff]")


def _as_latin1(text: str) -> str:
    return text if text.isascii() else _ESCAPED.sub(lambda m: chr(ord(m.group()) - 0xDC00), text)


class _Stream:
    """A text stream over bytes (UTF-8, stray bytes as latin-1) whose first line can be looked at and then handed
    back in front of the rest."""

    def __init__(self, raw: BinaryIO):
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


def stream(source: BinaryIO, where: str, request: StreamRequest) -> tuple[list[str], Iterator]:
    """The CSV's columns, every one as the text it was in the file, and chunks of its rows. The headerless
    Sentiment140 file (no `request.text_column` in its first line, which has its shape) gets the column names
    target, id, date, query, user, text. A row with more or fewer fields than the header is an error naming its
    line, or with `bad_rows` 'skip' left out and counted (as `malformed_row`, the reason training data uses)."""
    text = _Stream(source)
    head = text.first_line()
    if not head.strip():
        raise DataError(f"{where}: the input is empty (the first line must be a CSV header).")
    problem = format_problem(head[:8].encode("latin-1", "replace"))  # Parquet: the compressed formats are undone
    if problem or "\x00" in head:
        raise DataError(f"{where} is {problem or 'binary (its first line holds NUL bytes)'}, not a CSV "
                        f"file. Pass a CSV with a header and a text column.")
    first = next(csv.reader([head]), [])
    if request.text_column not in first and is_sentiment140(first):
        return SENTIMENT140_NAMES, _row_chunks(text, where, SENTIMENT140_NAMES, False, request)
    names = _unique(first)
    return names, _row_chunks(text, where, names, True, request)


def _unique(names: list[str]) -> list[str]:
    """Header names made unique as pandas makes them: a second 'x' becomes 'x.1'."""
    seen: Counter = Counter()
    out = []
    for name in names:
        out.append(f"{name}.{seen[name]}" if seen[name] else name)
        seen[name] += 1
    return out


def _row_chunks(stream: _Stream, where: str, names: list[str], header: bool, request: StreamRequest) -> Iterator:
    # The first line stays in the stream either way, so that line numbers count from the top.
    import pandas as pd

    numbered = _numbered(csv.reader(stream, strict=True))
    n, rows, skipped = len(names), [], 0
    try:
        if header:
            next(numbered, None)
        for line, row in numbered:
            if not row:
                continue  # a blank line, as pandas skips them
            if len(row) != n:
                if request.bad_rows != "skip":
                    raise DataError(
                        f"{where}, line {line}: expected {n} fields ({', '.join(names)}), found {len(row)} "
                        f"({'a missing field' if len(row) < n else 'an unquoted comma in the text?'}). Fix the row, "
                        f"or pass --bad-rows skip to leave such rows out (they are counted).")
                skipped += 1
                continue
            rows.append(row)
            if len(rows) == request.chunk_size:
                yield pd.DataFrame(rows, columns=names)
                rows = []
    except DataError as e:
        if str(e).startswith("line "):
            raise DataError(f"{where}, {e}") from None
        raise
    finally:
        if skipped:
            request.dropped["malformed_row"] += skipped
    if rows:
        yield pd.DataFrame(rows, columns=names)


register_format(Format("CSV", (".csv",), stream, table))
