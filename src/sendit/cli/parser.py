"""The argument parser: every subcommand and its flags (config fields become flags through config/flags.py)."""

from __future__ import annotations

import argparse
import dataclasses

from sendit.cli.commands import (
    READING_FIELDS,
    cmd_bench,
    cmd_data,
    cmd_distill,
    cmd_evaluate,
    cmd_export,
    cmd_methods,
    cmd_predict,
    cmd_report,
    cmd_run,
    cmd_serve,
    cmd_train,
    cmd_tune,
)
from sendit.config.distill import DistillConfig
from sendit.config.flags import add_config_flags, add_field_flags, add_tune_flags
from sendit.config.schema import DataConfig

ALIASES = {"data": ["--data"], "model": ["--model"], "methods": ["--methods"], "method": ["--method"]}


def _add_precision_flag(p: argparse.ArgumentParser) -> None:
    from sendit.config.fields import PRECISIONS

    p.add_argument("--precision", default="auto", choices=PRECISIONS, help="inference precision: auto "
                   "(bf16 where the hardware has it, or what SENDIT_PRECISION says), bf16 or fp32 (default: auto)")


def _add_verbosity_flags(p: argparse.ArgumentParser, default: object) -> None:
    from sendit.verbosity import QUIET, VERBOSE

    group = p.add_mutually_exclusive_group()
    group.add_argument("-q", "--quiet", dest="verbosity", action="store_const", const=QUIET, default=default,
                       help="no progress lines or bars: only warnings, errors and the output itself")
    group.add_argument("-v", "--verbose", dest="verbosity", action="store_const", const=VERBOSE, default=default,
                       help="also show the libraries' logging, progress bars and warnings (transformers, peft)")


def build_parser() -> argparse.ArgumentParser:
    from sendit import __version__
    from sendit.verbosity import NORMAL

    parser = argparse.ArgumentParser(
        prog="sendit",
        description="Parameter-efficient fine-tuning and distillation of small language models for tweet sentiment.",
    )
    parser.add_argument("--version", action="version", version=f"sendit {__version__}")
    _add_verbosity_flags(parser, NORMAL)
    sub = parser.add_subparsers(dest="command", required=True)
    _add_training_commands(sub)
    _add_model_commands(sub)
    _add_data_commands(sub)
    for command in sub.choices.values():  # -q/-v before or after the command; SUPPRESS keeps the top-level value
        _add_verbosity_flags(command, argparse.SUPPRESS)
    return parser


def _add_training_commands(sub) -> None:
    """run, train, tune, distill: the commands that train and write a run folder."""
    p = sub.add_parser("run", help="compare methods end to end (default: the embedded quick preset)")
    add_config_flags(p)
    p.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run: finished methods are kept, the "
                   "interrupted one restarts from its last epoch checkpoint")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out folder")
    p.add_argument("--no-report", action="store_true", help="skip the report at the end")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("train", help="train and test one method")
    add_config_flags(p, skip=("methods",))
    p.add_argument("--method", required=True, help="the method to train (see `sendit methods`)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out folder")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("tune", help="tune every method under one budget, retrain the best over seeds, compare",
                       description="Search each method's hyperparameters (Optuna TPE, validation only, the same "
                       "budget per method), retrain the best with every seed, test and report. docs/tuning.md.")
    add_config_flags(p)
    add_tune_flags(p)
    p.add_argument("--resume", metavar="RUN_DIR", help="continue a stopped sweep: finished trials and confirmed "
                   "runs are kept")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out folder")
    p.add_argument("--no-report", action="store_true", help="skip the report at the end")
    p.set_defaults(func=cmd_tune)

    p = sub.add_parser("distill", help="distil a fine-tuned teacher into smaller students (or a chain of them)",
                       description="Train students with (1 - kd_ratio) * CE + kd_ratio * T^2 * KL from --teacher "
                       "RUN_DIR/<method>, on that run's data split and test sets, and write them into RUN_DIR (or "
                       "--out). Settings: --config < the teacher run's config < flags. See docs/distillation.md.")
    add_config_flags(p, skip=("methods", "model"), out_help="run folder the students are written into (default: "
                      "the teacher's run folder, RUN_DIR of --teacher RUN_DIR/<method>); a new folder gets its own "
                      "run.json and config.yaml")
    add_field_flags(p, dataclasses.fields(DistillConfig))
    p.add_argument("--no-report", action="store_true", help="skip the report at the end")
    p.set_defaults(func=cmd_distill)


def _add_model_commands(sub) -> None:
    """evaluate, predict, serve, export: the commands that use a saved model folder."""
    p = sub.add_parser("evaluate", help="evaluate saved model folders on any labelled file (then: sendit report OUT)",
                       description="Score one or several model folders on the same rows of a labelled file and "
                       "write a run's test-set CSVs into --out; `sendit report OUT` then compares them with "
                       "confidence intervals and pairwise tests.")
    p.add_argument("model_dirs", nargs="+", metavar="MODEL_DIR", help="model folders written by a run "
                   "(RUN_DIR/<method>) or by sendit export")
    p.add_argument("--data", required=True, metavar="PATH", help="labelled CSV/JSONL/Parquet or original "
                   "Sentiment140 file, or 'embedded' for the packaged hand-labelled tweets (the test set of a run)")
    p.add_argument("--out", metavar="DIR", help="folder for the metrics/predictions CSVs (default with one model: "
                   "MODEL_DIR/eval-<file stem>; needed with several)")
    p.add_argument("--text-column", metavar="NAME", help="the file's text column (default: text, tweet or sentence)")
    p.add_argument("--label-column", metavar="NAME", help="the file's label column (default: label, target or "
                   "sentiment)")
    p.add_argument("--test-name", metavar="NAME", help="the test set's name in the CSVs and the report (default: "
                   "the file's stem)")
    p.add_argument("--batch-size", type=int, default=256, metavar="N", help="inference batch size")
    _add_precision_flag(p)
    add_field_flags(p, [f for f in dataclasses.fields(DataConfig) if f.name in READING_FIELDS])
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("predict", help="classify texts with a saved model folder")
    p.add_argument("model_dir", help="a model folder written by a run (RUN_DIR/<method>) or by sendit export")
    p.add_argument("texts", nargs="*", help="texts to classify")
    p.add_argument("--input", metavar="PATH", help="CSV (with a header), JSONL or Parquet file with a text "
                   "column, streamed in chunks ('-' = stdin, CSV; the headerless Sentiment140 file is recognised); output: its columns + prediction, prob_positive")
    p.add_argument("--output", metavar="PATH", help="output CSV, written atomically ('-' or absent = stdout)")
    p.add_argument("--text-column", default="text", metavar="NAME", help="name of the text column of --input")
    p.add_argument("--batch-size", type=int, default=256, metavar="N", help="inference batch size")
    p.add_argument("--chunk-size", type=int, default=10_000, metavar="N", help="rows read, predicted and written at a time")
    p.add_argument("--bad-rows", default="error", choices=["error", "skip"], help="rows with more or fewer fields "
                   "than the header: 'error' (stop at the first) or 'skip' (leave out, count) (default: error)")
    _add_precision_flag(p)
    p.set_defaults(func=cmd_predict)

    _add_serve_command(sub)


    p = sub.add_parser("export", help="write a model folder as a standard Hugging Face folder (plain transformers) or ONNX")
    p.add_argument("model_dir", help="a model folder written by a run (RUN_DIR/<method>)")
    p.add_argument("--out", required=True, metavar="DIR", help="the folder to write")
    p.add_argument("--merge", action=argparse.BooleanOptionalAction, default=True, help="fold LoRA/DoRA/IA3 into "
                   "the base weights so plain transformers loads the folder (default); --no-merge writes the small "
                   "peft adapter folder instead (needs peft and the base model)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out folder")
    p.add_argument("--format", default="hf", choices=["hf", "onnx"], help="hf: a transformers folder (safetensors); "
                   "onnx: model.onnx for ONNX Runtime, merged, checked against the sendit model on held-out tweets "
                   "(needs pip install 'sendit[onnx]')")
    p.add_argument("--quantize", choices=["int8"], help="with --format onnx: ONNX Runtime's dynamic int8 "
                   "quantisation (int8 weights; smaller, faster on CPU)")
    p.add_argument("--min-agreement", type=float, default=0.99, metavar="FRACTION", help="with --format onnx: "
                   "refuse to write a model whose labels agree with the sendit model's on fewer of the parity "
                   "tweets than this")
    p.add_argument("--force", action="store_true", help="with --format onnx: write the model even below "
                   "--min-agreement")
    p.set_defaults(func=cmd_export)


def _add_data_commands(sub) -> None:
    """data, report, bench, methods: inspecting data, run folders, speed and the method registry."""
    p = sub.add_parser("data", help="inspect a dataset: rows, labels, dropped rows, token lengths")
    p.add_argument("source", nargs="?", default="embedded", help="'embedded', 'hub', or a file")
    p.add_argument("--test-file", action="store_true", help="read SOURCE as a hand-labelled test file")
    p.add_argument("--model", metavar="MODEL", help="tokenizer for token-length statistics (e.g. embedded, facebook/opt-125m)")
    p.add_argument("--bad-rows", default="skip", choices=["error", "skip"], help="what to do with bad rows")
    p.add_argument("--normalize", default="true", choices=["true", "false"], help="normalise tweets first")
    p.add_argument("--encoding", default="auto", metavar="CODEC", help="text encoding: auto (UTF-8, else latin-1), utf-8, latin-1, ...")
    add_field_flags(p, [f for f in dataclasses.fields(DataConfig) if f.name in ("labels", "label_map")])
    p.set_defaults(func=cmd_data)

    p = sub.add_parser("report", help="figures, tables, statistics and index.html from run folders")
    p.add_argument("run_dirs", nargs="+", help="run folders (or folders with the study's CSV files)")
    p.add_argument("--out", metavar="DIR", help="report folder (default: FIRST_RUN_DIR/report)")
    p.add_argument("--margin", type=float, metavar="POINTS", help="non-inferiority margin of the recommendation, in "
                   "accuracy points (default: the sweep's tune.margin, else 1)")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("bench", help="training/inference throughput against the HF Trainer + peft and pipeline")
    from sendit.bench.training import BenchConfig

    add_field_flags(p, dataclasses.fields(BenchConfig), switches=True)  # one flag per field, as every command
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("methods", help="list the registered methods")
    p.set_defaults(func=cmd_methods)


def _add_serve_command(sub) -> None:
    """sendit serve: the HTTP service and its limits."""
    p = sub.add_parser("serve", help="serve a model folder over HTTP: POST /predict, GET /health, GET /model",
                       description="An HTTP service (FastAPI + uvicorn; pip install 'sendit[serve]') that answers "
                       "POST /predict {\"texts\": [...]} with sendit predict's fields and numbers; concurrent "
                       "requests are predicted together. SIGTERM or Ctrl-C stops it after answering every request "
                       "in flight. See docs/use-the-winner.md.")
    p.add_argument("model_dir", help="a model folder written by a run (RUN_DIR/<method>) or by sendit export")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface; default: "
                   "127.0.0.1, this machine only)")
    p.add_argument("--port", type=int, default=8000, help="port to listen on (0: any free port; default: 8000)")
    _add_precision_flag(p)
    p.add_argument("--max-batch", type=int, default=64, metavar="N", help="most texts predicted in one model call "
                   "(default: 64)")
    p.add_argument("--max-wait-ms", type=float, default=5.0, metavar="MS", help="how long a request waits for "
                   "others to share its model call (default: 5; 0: only requests already queued)")
    p.add_argument("--max-texts", type=int, default=256, metavar="N", help="most texts per request (default: 256)")
    p.add_argument("--max-body-bytes", type=int, default=1_000_000, metavar="N", help="largest request body "
                   "(default: 1000000)")
    p.add_argument("--max-text-chars", type=int, default=5_000, metavar="N", help="longest text, in characters "
                   "(default: 5000)")
    p.set_defaults(func=cmd_serve)
