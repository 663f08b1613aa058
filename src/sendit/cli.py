"""`sendit` command line: parse arguments, then one function call per subcommand.

Every config field is also a flag (`--lora-r 16`, `--method-lr "{lora: 1e-3}"`); flags override the config file.
User mistakes (bad data, unknown names, out-of-range values) end with a one-paragraph message and exit code 2,
never a traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from pathlib import Path

from sendit.errors import ConfigError
from sendit.config.fields import field_default
from sendit.config.schema import DataConfig
from sendit.config.distill import DistillConfig
from sendit.fileio import WRITE_FULL, as_write_error, write_hint
from sendit.config.flags import add_config_flags, add_field_flags, config_overrides
from sendit.verbosity import set_level

ALIASES = {"data": ["--data"], "model": ["--model"], "methods": ["--methods"], "method": ["--method"]}
EXIT_USER_ERROR = 2  # bad input: nothing was done
EXIT_FAILED = 1  # a run failed part-way (a method's training, a full disk)
EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 141  # what a shell reports for a writer stopped by SIGPIPE


def _config(args: argparse.Namespace):
    from sendit.config.schema import load_config, resolve_config_path

    path = resolve_config_path(args.config) if args.config else None
    return load_config(path, config_overrides(args))


def cmd_run(args: argparse.Namespace) -> int:
    from sendit.recipes.compare import run

    if args.resume:
        from sendit.config.schema import from_dict
        from sendit.run.folder import read_manifest

        saved = read_manifest(Path(args.resume)).get("config")
        if not saved:
            raise ConfigError(f"--resume {args.resume}: no run.json with a config there, nothing to resume.")
        saved["out"] = args.resume
        cfg = from_dict(saved, source=f"{args.resume}/run.json")
        ignored = [f"--{k.replace('_', '-')}" for k in config_overrides(args) if k != "out"]
        ignored += ["--config"] if args.config else []
        if ignored:
            print(f"sendit run: note: --resume finishes the run with the config it started with; ignoring "
                  f"{', '.join(ignored)}.", file=sys.stderr)
    else:
        cfg = _config(args)
    run_dir = run(cfg, resume=bool(args.resume), overwrite=args.overwrite, report=not args.no_report)
    return _failures(run_dir)


def _failures(run_dir: Path, command: str = "run") -> int:
    """Exit code of a finished run: 0, or 1 when a method failed (the others' results are saved)."""
    from sendit.run.folder import read_manifest

    status = read_manifest(run_dir).get("status", {})
    failed = {k: v for k, v in status.items() if str(v).startswith("failed")}
    if not failed:
        return 0
    print(f"sendit {command}: error: {len(failed)} of {len(status)} method runs failed ("
          + "; ".join(f"{k} {v}" for k, v in failed.items())
          + f"). The others finished and are saved in {run_dir}.", file=sys.stderr)
    return EXIT_FAILED


def cmd_train(args: argparse.Namespace) -> int:
    from sendit.recipes.compare import run

    args.methods = args.method
    cfg = _config(args)
    if len(cfg.method.methods) != 1:
        raise ConfigError("sendit train takes one --method; use sendit run --methods a,b to compare several")
    return _failures(run(cfg, overwrite=args.overwrite, report=False), "train")


def cmd_evaluate(args: argparse.Namespace) -> int:
    from sendit.config.schema import check_count
    from sendit.serve.evaluate import evaluate_folder

    check_count("--batch-size", args.batch_size)
    evaluate_folder(args.model_dirs, args.data, args.out, args.batch_size, precision=args.precision,
                    text_column=args.text_column, label_column=args.label_column, test_name=args.test_name,
                    data_config=_reading_config(args))
    return 0


READING_FIELDS = ("bad_rows", "label_map", "encoding")  # evaluate and data take them: messages suggest them


def _reading_config(args: argparse.Namespace, **given):
    """The data section with the reading flags given (checked as `sendit run` checks them)."""
    from sendit.config.schema import load_config

    return load_config(None, {**{k: getattr(args, k, None) for k in READING_FIELDS}, **given}).data


def cmd_predict(args: argparse.Namespace) -> int:
    from sendit.serve.predict import predict_command

    return predict_command(args)


def cmd_distill(args: argparse.Namespace) -> int:
    from sendit.recipes.distill import distill_command

    return distill_command(args)


def cmd_data(args: argparse.Namespace) -> int:
    from sendit.data.dataset import describe
    from sendit.data.reading import read_source, read_test_file

    cfg = _reading_config(args, normalize=args.normalize != "false", labels=args.labels)
    table = read_test_file(args.source, cfg, flag=None) if args.test_file else read_source(args.source, cfg, None)
    tokenizer = None
    if args.model:
        from sendit.train.models import load_tokenizer

        tokenizer = load_tokenizer(args.model)
    print(json.dumps(describe(table, tokenizer), indent=2))
    return 0


def cmd_tune(args: argparse.Namespace) -> int:
    try:
        from sendit.recipes.tune.search import tune_command
    except ModuleNotFoundError as e:
        if e.name != "optuna":
            raise
        raise ConfigError("sendit tune needs Optuna; install it with pip install 'sendit[tune]'.") from None
    return _failures(tune_command(args, config_overrides(args)), "tune")  # one rule for run, train and tune


def cmd_report(args: argparse.Namespace) -> int:
    from sendit.report import main_report

    return main_report(args.run_dirs, args.out, args.margin)


def cmd_methods(args: argparse.Namespace) -> int:
    from sendit.methods import METHODS

    for name, m in METHODS.items():
        doc = (sys.modules[type(m).__module__].__doc__ or "").strip().splitlines()[0]
        print(f"{name:8s} default lr {m.default_lr:<8g} {doc}")
        settings = getattr(m, "settings", None)  # its own flags, which `sendit run --help` lists among all others
        if settings:
            print(" " * 9 + "settings: " + ", ".join(f"--{f.name.replace('_', '-')} (default {field_default(f)})"
                                                   for f in dataclasses.fields(settings)))
    return 0


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

    from sendit.config.tune import add_arguments as add_tune_arguments

    p = sub.add_parser("tune", help="tune every method under one budget, retrain the best over seeds, compare",
                       description="Search each method's hyperparameters (Optuna TPE, validation only, the same "
                       "budget per method), retrain the best with every seed, test and report. docs/tuning.md.")
    add_config_flags(p)
    add_tune_arguments(p)
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
    """evaluate, predict, export: the commands that use a saved model folder."""
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
    p.add_argument("--input", metavar="PATH", help="CSV with a header and a text column, streamed in chunks ('-' = stdin; "
                   "the headerless Sentiment140 file is recognised); output: its columns + prediction, prob_positive")
    p.add_argument("--output", metavar="PATH", help="output CSV, written atomically ('-' or absent = stdout)")
    p.add_argument("--text-column", default="text", metavar="NAME", help="name of the text column of --input")
    p.add_argument("--batch-size", type=int, default=256, metavar="N", help="inference batch size")
    p.add_argument("--chunk-size", type=int, default=10_000, metavar="N", help="rows read, predicted and written at a time")
    p.add_argument("--bad-rows", default="error", choices=["error", "skip"], help="rows with more or fewer fields "
                   "than the header: 'error' (stop at the first) or 'skip' (leave out, count) (default: error)")
    _add_precision_flag(p)
    p.set_defaults(func=cmd_predict)

    from sendit.serve.export import export_command  # torch-free import; torch loads when the command runs

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
    p.set_defaults(func=export_command)


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

    from sendit.bench import training as bench

    p = sub.add_parser("bench", help="training/inference throughput against the HF Trainer + peft and pipeline")
    bench.add_arguments(p)
    p.set_defaults(func=bench.cmd_bench)

    p = sub.add_parser("methods", help="list the registered methods")
    p.set_defaults(func=cmd_methods)


def main(argv: list[str] | None = None) -> int:
    """Run one command. Every failure is one paragraph on stderr, never a traceback: exit code 2 for bad input
    (nothing was done), 1 for a run that failed part-way, 130 for Ctrl-C."""
    parser = build_parser()
    args = parser.parse_args(argv)
    set_level(args.verbosity)
    from sendit.errors import DataError
    from sendit.errors import RunStopped

    user_errors: tuple = (ConfigError, DataError)
    failures: tuple = ()
    try:
        from sendit.errors import TrainingError
        from sendit.errors import ModelError

        user_errors += (ModelError,)
        failures += (TrainingError,)
    except ImportError:  # torch-free install: report works, training does not
        pass

    def say(text: str) -> None:
        print(f"sendit {args.command}: {text}", file=sys.stderr)

    try:
        return args.func(args)
    except user_errors as e:
        say(f"error: {_paragraph(e)}")
        return EXIT_USER_ERROR
    except failures as e:
        say(f"error: {_paragraph(e)}")
        return EXIT_FAILED
    except RunStopped as e:
        say(f"error: {_paragraph(e)}{write_hint(e.error)}. The run stopped. {_saved(args.command, e.run_dir)}")
        return EXIT_FAILED
    except BrokenPipeError:  # the reader went away (`sendit methods | head`): stop quietly, as other tools do
        try:  # Python would report the pipe again when it flushes stdout at exit
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except (OSError, ValueError, AttributeError):
            pass
        return EXIT_BROKEN_PIPE
    except OSError as e:  # a path that cannot be read or written: nothing ran yet, or the disk is full
        return _file_error(say, e)
    except KeyboardInterrupt as e:
        run_dir = getattr(e, "run_dir", None)
        if run_dir is not None:
            say(f"interrupted. {_saved(args.command, run_dir)}")
        elif args.command in ("run", "train"):
            say("interrupted. Finished work is saved; continue a run with --resume RUN_DIR.")
        else:
            say("interrupted.")
        return EXIT_INTERRUPTED
    except Exception as e:  # a defect, not a user mistake: still one paragraph, the traceback on request
        if isinstance(e, MemoryError) or type(e).__name__ == "OutOfMemoryError":  # torch's is a RuntimeError
            say("error: out of memory. Lower --batch-size, --eval-batch-size or --max-length, or use a smaller "
                "model.")
            return EXIT_FAILED
        full = as_write_error(e)  # a full disk or the file-size limit, as safetensors or torch say it
        if full is not None:
            return _file_error(say, full)
        if os.environ.get("SENDIT_DEBUG"):
            raise
        say(f"error: unexpected {type(e).__name__}: {_paragraph(e)} (set SENDIT_DEBUG=1 to see where; please report "
            f"this with the command you ran).")
        return EXIT_FAILED


def _file_error(say, e: OSError) -> int:
    """Exit 2 for a path that cannot be read or written; 1 for a full disk, a quota or the file-size limit."""
    where = f" ({e.filename})" if e.filename else ""
    say(f"error: {e.strerror or _paragraph(e)}{where}{write_hint(e)}.")
    return EXIT_FAILED if e.errno in WRITE_FULL else EXIT_USER_ERROR


def _saved(command: str, run_dir: Path) -> str:
    """Where finished work is, and how to go on: `sendit run --resume` continues run and train folders."""
    if command in ("run", "train"):
        return f"Finished work is saved in {run_dir}; continue a run with --resume {run_dir}."
    return f"Finished work is saved in {run_dir}."


def _paragraph(e: BaseException) -> str:
    """One paragraph: library messages quoted inside ours may span lines."""
    return " ".join(str(e).split())


if __name__ == "__main__":
    sys.exit(main())
