"""`sendit predict`: texts or a (large) file in, the input's columns plus `prediction` and `prob_positive` out as CSV
(a model of other classes than negative/positive: `prediction`, `label_name` and one `prob_<name>` per class).

The input is read by the format its name picks (CSV, JSON lines, Parquet: `sendit.data.formats`) and streamed in
chunks, so memory stays bounded however many rows it has (the 1.6M-row Sentiment140 file included); the output is written to a temporary file and renamed into place at the end, or streamed to stdout
with `--output -`. The gold-label column of a labelled input (`label`, `target`) is kept as it is, so the output
pairs truth and prediction the way a run's `{method}_inference_predictions.csv` does.
"""

from __future__ import annotations

import csv
import itertools
import os
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Iterable

import pandas as pd
from tqdm.auto import tqdm

from sendit.config.schema import check_count
from sendit.data.reading import read_chunks
from sendit.errors import DataError
from sendit.fileio import write_target
from sendit.run.folder import temp_beside
from sendit.serve.model_folder import SenditModel, load

ADDED = ("prediction", "prob_positive")


def predict_command(model_dir: str, texts: list[str], input: str | None, output: str | None, text_column: str,
                    batch_size: int, chunk_size: int, bad_rows: str, precision: str) -> int:
    """`sendit predict`: texts from the command line, or a file (or stdin) streamed in chunks, to CSV."""
    if not texts and not input:
        raise DataError('nothing to predict: give texts (sendit predict MODEL_DIR "so happy") or --input FILE.csv '
                        "(or --input - to read a CSV from stdin).")
    if texts and input:
        raise DataError("give either texts on the command line or --input FILE.csv, not both.")
    check_count("--batch-size", batch_size)
    check_count("--chunk-size", chunk_size)
    check_output(output, input)
    # The input's header and first chunk are read before the model loads: a wrong file fails in a moment.
    dropped: Counter = Counter()
    chunks = (read_chunks(input, text_column, chunk_size, ADDED, bad_rows, dropped)
              if input else None)
    first = next(chunks) if chunks is not None else None
    model = load(model_dir, precision=precision)
    if texts:
        df = with_predictions(pd.DataFrame({"text": texts}),
                              model.predict_proba(texts, batch_size).probs, model.classes)
        with _Output(output) as out:
            df.to_csv(out, index=False, float_format="%.6f")
        return 0
    predict_csv(model, input, output, text_column, chunk_size, batch_size,
                chunks=itertools.chain([first], chunks))
    if dropped:
        print(f"sendit predict: note: {dropped['malformed_row']:,} rows of {input} left out (--bad-rows skip): "
              f"their number of fields differs from the header's.", file=sys.stderr)
    return 0


def check_output(output: str | None, input_path: str | None = None) -> None:
    """--output may be stdout, a new file, or an earlier output of sendit predict: never the input itself, a
    folder, or another file (it is replaced at the end)."""
    if output in (None, "-"):
        return
    out = Path(output)
    if out.is_dir():
        raise DataError(f"--output '{output}' is a folder; pass a file name such as predictions.csv.")
    if not out.exists():
        return
    if input_path not in (None, "-") and Path(input_path).exists() and out.samefile(input_path):
        raise DataError(f"--output '{output}' is the --input file; writing it would replace the tweets being "
                        f"read. Pass another --output.")
    with open(out, "rb") as f:
        header = next(csv.reader([f.readline().decode("utf-8", "replace")]), [])
    if "prediction" not in header or not any(c.startswith("prob_") for c in header):
        raise DataError(f"--output '{output}' already exists and is not an output of sendit predict (no "
                        f"prediction and prob_* columns), so it is not replaced. Pass another --output, or delete "
                        f"it first.")


def with_predictions(frame: pd.DataFrame, probs, classes: tuple[str, ...]) -> pd.DataFrame:
    """The frame with the predicted class and its probabilities: `prediction` (1 when P(positive) >= 0.5) and
    `prob_positive` for a negative/positive model, as the study wrote them; else `prediction` (the class id, the
    most probable class), `label_name` and `prob_<name>` for every class."""
    if tuple(classes) == ("negative", "positive"):
        frame["prediction"] = (probs[:, 1] >= 0.5).astype(int)
        frame["prob_positive"] = probs[:, 1]
        return frame
    frame["prediction"] = probs.argmax(-1)
    frame["label_name"] = [classes[i] for i in frame["prediction"]]
    for i, name in enumerate(classes):
        frame[f"prob_{name}"] = probs[:, i]
    return frame


class _Output:
    """stdout for None/'-', otherwise a temporary file in the target's folder renamed into place on success."""

    def __init__(self, output: str | None):
        self.output = output
        self.tmp: str | None = None
        self.reader_left = False

    def __enter__(self):
        if self.output in (None, "-"):
            return sys.stdout
        self.target = write_target(self.output)  # a symbolic link is written through, not replaced
        fd, self.tmp = temp_beside(self.target)
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
        if kind is None:  # synced before the rename, as run_folder.atomic_write_bytes does: a crash leaves the old file
            self.file.flush()
            os.fsync(self.file.fileno())
        self.file.close()
        if kind is None:
            os.replace(self.tmp, self.target)
        else:
            Path(self.tmp).unlink(missing_ok=True)
        return False


def predict_csv(model: SenditModel, input_path: str, output: str | None, text_column: str = "text",
                chunk_size: int = 10_000, batch_size: int = 256, chunks: Iterable[pd.DataFrame] | None = None) -> int:
    """Stream input_path (any registered format; '-' = stdin, CSV) through the model chunk by chunk into output
    (None or '-' = stdout), as CSV.

    Every row is kept, in order, with all its columns; `prediction` (0 = negative, 1 = positive) and
    `prob_positive` are added (other classes: `prediction`, `label_name`, `prob_<name>` per class). Empty texts are predicted too (the model sees only its special tokens), so row
    counts always match. Returns the number of rows."""
    n, t0 = 0, time.perf_counter()
    progress = tqdm(unit=" tweets", file=sys.stderr, desc="predict", disable=None, mininterval=1.0)
    chunks = chunks if chunks is not None else read_chunks(input_path, text_column, chunk_size, ADDED)
    with (writer := _Output(output)) as sink:
        for i, chunk in enumerate(chunks):
            probs = model.predict_proba(chunk[text_column].tolist(), batch_size, progress=False).probs
            chunk = with_predictions(chunk, probs, getattr(model, "classes", ("negative", "positive")))
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
