"""`sendit predict`: texts or a (large) CSV in, the input's columns plus `prediction` and `prob_positive` out.

A CSV is streamed in chunks, so memory stays bounded however many rows it has; the output is written to a
temporary file and renamed into place at the end (or streamed to stdout with `--output -`).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

from sendit.data import DataError
from sendit.predict import load


def predict_command(args: argparse.Namespace) -> int:
    if not args.texts and not args.input:
        raise DataError("nothing to predict: give texts (sendit predict MODEL_DIR \"so happy\") or --input FILE.csv")
    model = load(args.model_dir)
    if args.texts:
        probs = model.predict_proba(args.texts, args.batch_size).probs[:, 1]
        df = pd.DataFrame({"text": args.texts, "prediction": (probs >= 0.5).astype(int), "prob_positive": probs})
        _write_frame(df, args.output)
        return 0
    predict_csv(model, args.input, args.output, args.text_column, args.chunk_size, args.batch_size)
    return 0


def _write_frame(df: pd.DataFrame, output: str | None) -> None:
    if output in (None, "-"):
        df.to_csv(sys.stdout, index=False)
    else:
        tmp = Path(output).with_name(f".{Path(output).name}.tmp")
        df.to_csv(tmp, index=False)
        os.replace(tmp, output)


def predict_csv(model, input_path: str, output: str | None, text_column: str = "text", chunk_size: int = 10_000,
                batch_size: int = 256) -> int:
    """Stream input_path (or '-' for stdin) through the model in chunks; returns the number of rows."""
    source = sys.stdin if input_path == "-" else input_path
    if input_path != "-" and not Path(input_path).exists():
        raise DataError(f"--input '{input_path}' does not exist.")
    to_stdout = output in (None, "-")
    if to_stdout:
        sink, tmp = sys.stdout, None
    else:
        out = Path(output)
        out.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp")
        sink = os.fdopen(fd, "w", newline="", encoding="utf-8")
    n, t0 = 0, time.perf_counter()
    try:
        reader = pd.read_csv(source, chunksize=chunk_size, dtype=str, keep_default_na=False, encoding="utf-8",
                             encoding_errors="replace")
        for i, chunk in enumerate(reader):
            if text_column not in chunk.columns:
                raise DataError(f"--input {input_path}: no '{text_column}' column (found "
                                f"{', '.join(chunk.columns)}). Pass --text-column NAME.")
            probs = model.predict_proba(chunk[text_column].tolist(), batch_size).probs[:, 1]
            chunk["prediction"] = (probs >= 0.5).astype(int)
            chunk["prob_positive"] = probs
            chunk.to_csv(sink, index=False, header=i == 0)
            n += len(chunk)
            rate = n / (time.perf_counter() - t0)
            print(f"\rpredicted {n:,} rows ({rate:,.0f} tweets/s)", end="", file=sys.stderr, flush=True)
        print(file=sys.stderr)
        if tmp:
            sink.close()
            os.replace(tmp, output)
    except BaseException:
        if tmp:
            sink.close()
            Path(tmp).unlink(missing_ok=True)
        raise
    return n
