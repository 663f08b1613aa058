"""JSON lines: one JSON object per line, its keys the columns (a .json file is read as JSON lines too)."""

from __future__ import annotations

from typing import BinaryIO

from sendit.data.formats.registry import Format, StreamRequest, peek, register_format


def stream(source: BinaryIO, where: str, request: StreamRequest):
    import pandas as pd

    # dtype=False: texts stay as the file wrote them (pandas would turn a column of "42"s into numbers); pandas
    # parses chunk_size lines at a time, so a large file streams.
    return peek(iter(pd.read_json(source, lines=True, dtype=False, chunksize=request.chunk_size)))


register_format(Format("JSON lines", (".jsonl", ".json"), stream))
