"""The data-format registry: a Format is read by file suffix, batch and streamed; register_format adds one.
sendit.data.formats re-exports it."""

from __future__ import annotations

import itertools
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Callable, Iterator

from sendit.config.schema import DataConfig
from sendit.data.rows import Table, collect, find_columns
from sendit.errors import DataError

if TYPE_CHECKING:
    import pandas as pd

# Rows per chunk when a whole file is read through a format's streamed reader: a large file still parses in a few
# pieces, and a small one (every test's) in one, so its errors come in the order the file holds them.
BATCH_CHUNK = 100_000


@dataclass
class StreamRequest:
    """What a streamed reader is asked for. `text_column` helps a reader tell a header from data (the headerless
    Sentiment140 CSV); `bad_rows` and `dropped` apply to rows a format can find malformed (a CSV row's field count)."""

    chunk_size: int = 10_000
    text_column: str = "text"
    bad_rows: str = "error"
    dropped: Counter = field(default_factory=Counter)


@dataclass
class Request:
    """What a batch reader is asked for: the file, how to read it (--bad-rows, --label-map, --encoding), its
    columns when named, the option that named it (None: a command's argument) and the classes to read labels as."""

    path: Path
    cfg: DataConfig
    encoding: str
    text_column: str | None = None
    label_column: str | None = None
    flag: str | None = "--data"
    classes: tuple[str, ...] | None = None


Columns = list
Stream = Callable[[BinaryIO, str, StreamRequest], "tuple[Columns, Iterator[pd.DataFrame]]"]


@dataclass(frozen=True)
class Format:
    name: str  # in messages: "CSV", "JSON lines"
    suffixes: tuple[str, ...]  # ".csv"; the last two suffixes of a name are looked up, so tweets.csv.gz is CSV
    stream: Stream  # (bytes, where, request) -> the input's columns, and its rows as DataFrame chunks
    table: Callable[[BinaryIO, Request], Table] | None = None  # default: `stream`'s chunks through rows.collect

    def read_table(self, source: BinaryIO, request: Request) -> Table:
        return self.table(source, request) if self.table else table_from_chunks(source, request, self)


FORMATS: dict[str, Format] = {}
DEFAULT = ".csv"  # a name without a known suffix: stdin, /dev/fd/63 (a process substitution), tweets.txt


def register_format(fmt: Format) -> Format:
    for suffix in fmt.suffixes:
        FORMATS[suffix.lower()] = fmt
    return fmt


def format_for(path: str | Path) -> Format:
    """The format of a file by its name: tweets.jsonl, tweets.jsonl.gz and tweets.v2.parquet have one."""
    for suffix in reversed(Path(path).suffixes[-2:]):
        if suffix.lower() in FORMATS:
            return FORMATS[suffix.lower()]
    return FORMATS[DEFAULT]


def peek(chunks: Iterator[pd.DataFrame]) -> tuple[Columns, Iterator[pd.DataFrame]]:
    """The columns of the first chunk, and every chunk (the first handed back in front): for readers that know
    their columns only once they have read rows (JSON lines, pandas' chunked readers)."""
    first = next(chunks, None)
    if first is None:
        return [], iter(())
    return list(first.columns), itertools.chain([first], chunks)


def aligned(columns: Columns, chunks: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
    """Every chunk with the first chunk's columns: a JSON key that first appears later is left out, one that is
    missing is empty (NaN), so that each chunk's rows line up under one header."""
    for chunk in chunks:
        yield chunk if list(chunk.columns) == columns else chunk.reindex(columns=columns)


def table_from_chunks(source: BinaryIO, request: Request, fmt: Format) -> Table:
    """A format's streamed chunks as a Table: the text and label columns found, each row through rows.collect."""
    path, cfg = request.path, request.cfg
    wanted = StreamRequest(BATCH_CHUNK, request.text_column or "text", cfg.bad_rows)
    columns, chunks = opened(fmt, source, str(path), wanted)
    text_col, label_col = find_columns(path, columns, request.text_column, request.label_column)

    def items():
        line = 0
        for chunk in chunks:
            for label, text in zip(chunk[label_col], chunk[text_col]):
                line += 1
                yield line, label, text, None

    table = collect(path, items(), cfg, classes=request.classes)
    table.dropped.update(wanted.dropped)
    return table


def opened(fmt: Format, source: BinaryIO, where: str, request: StreamRequest) -> tuple[Columns, Iterator]:
    """`fmt.stream`, its chunks aligned under the first one's columns, with the errors a parser raises on a file
    that is not what its name says (pandas' and pyarrow's ValueError, OSError), at the start or in any chunk, as
    one DataError that names the input (`where`)."""
    try:
        columns, chunks = fmt.stream(source, where, request)
    except DataError:
        raise
    except (ValueError, OSError) as e:
        raise _unreadable(where, e) from None
    return columns, _checked(aligned(columns, chunks), where)


def _checked(chunks: Iterator, where: str) -> Iterator:
    try:
        yield from chunks
    except DataError:
        raise
    except (ValueError, OSError) as e:
        raise _unreadable(where, e) from None


def _unreadable(where: str, e: Exception) -> DataError:
    return DataError(f"{where}: could not be read ({e}). Check that the file is valid.")
