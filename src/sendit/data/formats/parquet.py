"""Parquet: typed columns, read a record batch of --chunk-size rows at a time."""

from __future__ import annotations

import io
from typing import BinaryIO

from sendit.data.formats.registry import Format, StreamRequest, peek, register_format


def stream(source: BinaryIO, where: str, request: StreamRequest):
    import pyarrow.parquet as pq

    # A Parquet file's index of its row groups is at its end, so a pipe (or a decompressed stream) is read whole
    # first; memory is then the (compressed) file plus one chunk of decoded rows.
    file = pq.ParquetFile(io.BytesIO(source.read()))
    columns, chunks = peek(batch.to_pandas() for batch in file.iter_batches(batch_size=request.chunk_size))
    return columns or list(file.schema_arrow.names), chunks  # a file of no rows still has its columns


register_format(Format("Parquet", (".parquet",), stream))
