"""`sendit predict`: texts or a (large) CSV in, the input's columns plus `prediction` and `prob_positive` out.

A CSV is streamed in chunks, so memory stays bounded however many rows it has (the 1.6M-row Sentiment140 file
included); the output is written to a temporary file and renamed into place at the end, or streamed to stdout
with `--output -`. The gold-label column of a labelled input (`label`, `target`) is kept as it is, so the output
pairs truth and prediction the way a run's `{method}_inference_predictions.csv` does.
"""

from __future__ import annotations

import argparse
import codecs
import csv
import gzip
import io
import os
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
from tqdm.auto import tqdm

from sendit.data import SENTIMENT140_COLUMNS, DataError
from sendit.predict import SenditModel, load

ADDED = ("prediction", "prob_positive")


def _latin1_fallback(err: UnicodeDecodeError) -> tuple[str, int]:
    # Valid UTF-8 decodes as UTF-8; a byte that is not is read as latin-1, the encoding the Sentiment140 files (and
    # sendit.data's readers) use, instead of failing the whole file: every byte is a latin-1 character.
    return err.object[err.start : err.end].decode("latin-1"), err.end


codecs.register_error("sendit-latin1", _latin1_fallback)


def predict_command(args: argparse.Namespace) -> int:
    if not args.texts and not args.input:
        raise DataError('nothing to predict: give texts (sendit predict MODEL_DIR "so happy") or --input FILE.csv '
                        "(or --input - to read a CSV from stdin).")
    if args.texts and args.input:
        raise DataError("give either texts on the command line or --input FILE.csv, not both.")
    if args.batch_size < 1 or args.chunk_size < 1:
        raise DataError(f"--batch-size and --chunk-size must be at least 1 (got {args.batch_size} and "
                        f"{args.chunk_size}).")
    model = load(args.model_dir)
    if args.texts:
        probs = model.predict_proba(args.texts, args.batch_size).probs[:, 1]
        df = pd.DataFrame({"text": args.texts, "prediction": (probs >= 0.5).astype(int), "prob_positive": probs})
        with _Output(args.output) as out:
            df.to_csv(out, index=False, float_format="%.6f")
        return 0
    predict_csv(model, args.input, args.output, args.text_column, args.chunk_size, args.batch_size)
    return 0


class _Output:
    """stdout for None/'-', otherwise a temporary file in the target's folder renamed into place on success."""

    def __init__(self, output: str | None):
        self.output = output
        self.tmp: str | None = None
        self.reader_left = False

    def __enter__(self):
        if self.output in (None, "-"):
            return sys.stdout
        out = Path(self.output)
        out.parent.mkdir(parents=True, exist_ok=True)
        fd, self.tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp")
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(fd, 0o666 & ~umask)  # mkstemp makes 0600; the result should look like any other file written
        self.file = os.fdopen(fd, "w", newline="", encoding="utf-8")
        return self.file

    def __exit__(self, kind, value, tb) -> bool:
        if self.tmp is None:
            if kind is BrokenPipeError:  # `sendit predict ... | head`: the reader left, which is not an error
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
                self.reader_left = True
                return True
            sys.stdout.flush()
            return False
        self.file.close()
        if kind is None:
            os.replace(self.tmp, self.output)
        else:
            Path(self.tmp).unlink(missing_ok=True)
        return False


class _Rejoined:
    """A text stream whose first line was already read (to look at the header), handed back in front."""

    def __init__(self, head: str, rest: io.TextIOBase):
        self.head, self.rest = head, rest

    def read(self, n: int = -1) -> str:
        if not self.head:
            return self.rest.read(n)
        if n is None or n < 0:
            out, self.head = self.head + self.rest.read(), ""
        else:
            out, self.head = self.head[:n], self.head[n:]
        return out

    def __iter__(self):
        return iter(self.readline, "")

    def readline(self) -> str:
        if self.head:
            out, self.head = self.head, ""
            return out
        return self.rest.readline()


def _open_input(input_path: str) -> io.TextIOBase:
    if input_path == "-":
        raw = sys.stdin.buffer
    else:
        path = Path(input_path)
        if not path.is_file():
            raise DataError(f"--input '{input_path}' does not exist or is not a file. Pass a CSV file with a "
                            f"header and a text column, or '-' to read the CSV from stdin.")
        raw = gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")
    return io.TextIOWrapper(raw, encoding="utf-8", errors="sendit-latin1", newline="")


def read_chunks(input_path: str, text_column: str = "text", chunk_size: int = 10_000):
    """The CSV (or '-' = stdin) as DataFrames of chunk_size rows, every column as the text it was in the file.

    The headerless six-column Sentiment140 file is recognised by its first line and gets the column names
    target, id, date, query, user, text."""
    where = "stdin" if input_path == "-" else input_path
    stream = _open_input(input_path)
    head = stream.readline()
    if not head.strip():
        raise DataError(f"--input {where}: the input is empty (the first line must be a CSV header).")
    first = next(csv.reader([head]), [])
    names = None
    if text_column not in first and len(first) == 6 and first[0].strip() in ("0", "2", "4"):
        names = list(SENTIMENT140_COLUMNS)
    elif text_column not in first:
        raise DataError(f"--input {where}: no '{text_column}' column in the header (found "
                        f"{', '.join(first) or 'nothing'}). Pass --text-column NAME, or add a header line.")
    dup = [c for c in ADDED if c in (names or first)]
    if dup:
        raise DataError(f"--input {where} already has a '{dup[0]}' column (is it an output of sendit predict?). "
                        f"Drop or rename it first so the prediction does not overwrite it.")
    try:
        yield from pd.read_csv(_Rejoined(head, stream), chunksize=chunk_size, dtype=str, keep_default_na=False,
                               header=None if names else "infer", names=names)
    except pd.errors.ParserError as e:
        raise DataError(f"--input {where}: malformed CSV ({e}). Check the quoting and the number of fields "
                        f"on that line.") from None
    finally:
        if input_path == "-":
            stream.detach()  # leave sys.stdin usable (and open) for the caller
        else:
            stream.close()


def predict_csv(model: SenditModel, input_path: str, output: str | None, text_column: str = "text",
                chunk_size: int = 10_000, batch_size: int = 256) -> int:
    """Stream input_path (or '-' = stdin) through the model chunk by chunk into output (None or '-' = stdout).

    Every row is kept, in order, with all its columns; `prediction` (0 = negative, 1 = positive) and
    `prob_positive` are added. Empty texts are predicted too (the model sees only its special tokens), so row
    counts always match. Returns the number of rows."""
    n, t0 = 0, time.perf_counter()
    progress = tqdm(unit=" tweets", file=sys.stderr, desc="predict", disable=None, mininterval=1.0)
    with (writer := _Output(output)) as sink:
        for i, chunk in enumerate(read_chunks(input_path, text_column, chunk_size)):
            probs = model.predict_proba(chunk[text_column].tolist(), batch_size).probs[:, 1]
            chunk["prediction"] = (probs >= 0.5).astype(int)
            chunk["prob_positive"] = probs
            chunk.to_csv(sink, index=False, header=i == 0, float_format="%.6f")
            n += len(chunk)
            progress.update(len(chunk))
    progress.close()
    seconds = time.perf_counter() - t0
    where = "stdout" if output in (None, "-") else output
    if writer.reader_left:
        where += " (closed by its reader; stopped there)"
    print(f"predicted {n:,} rows in {seconds:.1f} s ({n / max(seconds, 1e-9):,.0f} tweets/s) -> {where}",
          file=sys.stderr)
    return n
