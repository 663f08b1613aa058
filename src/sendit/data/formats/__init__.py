"""The data-format registry: every file sendit reads, batch (`read_table`: a run's data, `sendit data`, evaluate)
or streamed (`sendit predict --input`, chunk by chunk), is read by the format its name's suffix picks.

A format is one file in this folder plus one `register_format(...)` line (tests/test_plugin_format.py adds one in
a test). It gives a streamed reader: from the input's bytes (a file, a pipe or stdin, with gzip, bz2 and xz
already undone by `fileio`, whatever the name) to its columns and DataFrame chunks of its rows. The batch reader,
rows of text and label through `rows.collect`, follows from it; a format whose files need more (CSV: encodings,
the headerless Sentiment140 file, messages that name the line of a broken row) gives its own.
"""

from sendit.data.formats.registry import (  # noqa: F401  (the public API)
    BATCH_CHUNK, DEFAULT, FORMATS, Format, Request, StreamRequest, aligned, format_for, opened, peek, register_format,
    table_from_chunks,
)

from sendit.data.formats import csv, jsonl, parquet  # noqa: F401  (each file registers itself)
