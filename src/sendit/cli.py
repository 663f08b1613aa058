"""`sendit` command line: parse arguments, then one function call per subcommand.

Every config field is also a flag (`--lora-r 16`, `--method-lr "{lora: 1e-3}"`); flags override the config file.
User mistakes (bad data, unknown names, out-of-range values) end with a one-paragraph message and exit code 2,
never a traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from sendit.config import ConfigError, DistillConfig, field_index

ALIASES = {"data": ["--data"], "model": ["--model"], "methods": ["--methods"], "method": ["--method"]}
EXIT_USER_ERROR = 2


def _add_config_flags(p: argparse.ArgumentParser, skip: tuple[str, ...] = ()) -> None:
    p.add_argument("--config", help="YAML config file or shipped preset name (quick, paper, ...); flags override it")
    p.add_argument("--out", help="run folder (default: runs/<timestamp>)")
    for name, (section, f) in field_index().items():
        if name in skip:
            continue
        flag = f"--{name.replace('_', '-')}"
        help_text = f.metadata.get("help", "")
        if f.default is not dataclasses.MISSING:
            help_text += f" (default: {f.default})"
        elif f.default_factory is not dataclasses.MISSING:
            help_text += f" (default: {f.default_factory()})"
        p.add_argument(flag, dest=name, default=None, metavar=section.upper(), help=help_text)


def _overrides(args: argparse.Namespace) -> dict:
    names = set(field_index())
    out = {k: v for k, v in vars(args).items() if k in names and v is not None}
    if getattr(args, "out", None):
        out["out"] = args.out
    return out


def _config(args: argparse.Namespace):
    from sendit.config import load_config, resolve_config_path

    path = resolve_config_path(args.config) if args.config else None
    return load_config(path, _overrides(args))


def cmd_run(args: argparse.Namespace) -> int:
    from sendit.workflow import run

    if args.resume:
        from sendit.config import from_dict
        from sendit.outputs import read_manifest

        saved = read_manifest(Path(args.resume)).get("config")
        if not saved:
            raise ConfigError(f"--resume {args.resume}: no run.json with a config there, nothing to resume.")
        saved["out"] = args.resume
        cfg = from_dict(saved, source=f"{args.resume}/run.json")
        ignored = [f"--{k.replace('_', '-')}" for k in _overrides(args) if k != "out"]
        ignored += ["--config"] if args.config else []
        if ignored:
            print(f"sendit run: note: --resume finishes the run with the config it started with; ignoring "
                  f"{', '.join(ignored)}.", file=sys.stderr)
    else:
        cfg = _config(args)
    run_dir = run(cfg, resume=bool(args.resume), overwrite=args.overwrite, report=not args.no_report)
    return _failures(run_dir)


def _failures(run_dir: Path, command: str = "run") -> int:
    """Exit code of a finished run: 0, or 2 when a method failed (the others' results are saved)."""
    from sendit.outputs import read_manifest

    status = read_manifest(run_dir).get("status", {})
    failed = {k: v for k, v in status.items() if str(v).startswith("failed")}
    if not failed:
        return 0
    print(f"sendit {command}: error: {len(failed)} of {len(status)} method runs failed ("
          + "; ".join(f"{k} {v}" for k, v in failed.items())
          + f"). The others finished and are saved in {run_dir}.", file=sys.stderr)
    return EXIT_USER_ERROR


def cmd_train(args: argparse.Namespace) -> int:
    from sendit.workflow import run

    args.methods = args.method
    cfg = _config(args)
    if len(cfg.method.methods) != 1:
        raise ConfigError("sendit train takes one --method; use sendit run --methods a,b to compare several")
    return _failures(run(cfg, overwrite=args.overwrite, report=False), "train")


def cmd_evaluate(args: argparse.Namespace) -> int:
    from sendit.workflow import evaluate_folder

    evaluate_folder(args.model_dir, args.data, args.out, args.batch_size)
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from sendit.serve import predict_command

    return predict_command(args)


def cmd_distill(args: argparse.Namespace) -> int:
    from sendit.distill import distill_command

    return distill_command(args)


def cmd_data(args: argparse.Namespace) -> int:
    from sendit.config import DataConfig
    from sendit.data import describe, read_source, read_test_file

    cfg = DataConfig(bad_rows=args.bad_rows, normalize=args.normalize != "false", encoding=args.encoding)
    table = read_test_file(args.source, cfg) if args.test_file else read_source(args.source, cfg)
    tokenizer = None
    if args.model:
        from sendit.models import load_tokenizer

        tokenizer = load_tokenizer(args.model)
    print(json.dumps(describe(table, tokenizer), indent=2))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from sendit.report import main_report

    return main_report(args.run_dirs, args.out)


def cmd_methods(args: argparse.Namespace) -> int:
    from sendit.methods import METHODS

    for name, m in METHODS.items():
        doc = (sys.modules[type(m).__module__].__doc__ or "").strip().splitlines()[0]
        print(f"{name:8s} default lr {m.default_lr:<8g} {doc}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sendit",
        description="Parameter-efficient fine-tuning and distillation of small language models for tweet sentiment.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("run", help="compare methods end to end (default: the embedded quick preset)")
    _add_config_flags(p)
    p.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run: finished methods are kept, the "
                   "interrupted one restarts from its last epoch checkpoint")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out folder")
    p.add_argument("--no-report", action="store_true", help="skip the report at the end")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("train", help="train and test one method")
    _add_config_flags(p, skip=("methods",))
    p.add_argument("--method", required=True, help="the method to train (see `sendit methods`)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out folder")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="evaluate a saved model folder on any labelled file")
    p.add_argument("model_dir", help="a model folder written by a run (RUN_DIR/<method>)")
    p.add_argument("--data", required=True, help="labelled CSV/JSONL/Parquet or original Sentiment140 file")
    p.add_argument("--out", help="folder for the metrics/predictions CSVs (default: MODEL_DIR/eval-<file>)")
    p.add_argument("--batch-size", type=int, default=256, help="inference batch size")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("predict", help="classify texts with a saved model folder")
    p.add_argument("model_dir", help="a model folder written by a run (RUN_DIR/<method>) or by sendit export")
    p.add_argument("texts", nargs="*", help="texts to classify")
    p.add_argument("--input", help="CSV with a header and a text column, streamed in chunks ('-' = stdin; "
                   "the headerless Sentiment140 file is recognised); output: its columns + prediction, prob_positive")
    p.add_argument("--output", help="output CSV, written atomically ('-' or absent = stdout)")
    p.add_argument("--text-column", default="text", help="name of the text column of --input")
    p.add_argument("--batch-size", type=int, default=256, help="inference batch size")
    p.add_argument("--chunk-size", type=int, default=10_000, help="rows read, predicted and written at a time")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("data", help="inspect a dataset: rows, labels, dropped rows, token lengths")
    p.add_argument("source", nargs="?", default="embedded", help="'embedded', 'hub', or a file")
    p.add_argument("--test-file", action="store_true", help="read SOURCE as a hand-labelled test file")
    p.add_argument("--model", help="tokenizer for token-length statistics (e.g. embedded, facebook/opt-125m)")
    p.add_argument("--bad-rows", default="skip", choices=["error", "skip"], help="what to do with bad rows")
    p.add_argument("--normalize", default="true", choices=["true", "false"], help="normalise tweets first")
    p.add_argument("--encoding", default="auto", help="text encoding: auto (UTF-8, else latin-1), utf-8, latin-1, ...")
    p.set_defaults(func=cmd_data)

    p = sub.add_parser("report", help="figures, tables, statistics and index.html from run folders")
    p.add_argument("run_dirs", nargs="+", help="run folders (or folders with the study's CSV files)")
    p.add_argument("--out", help="report folder (default: FIRST_RUN_DIR/report)")
    p.set_defaults(func=cmd_report)

    from sendit.export import export_command  # torch-free import; torch loads when the command runs

    p = sub.add_parser("export", help="write a model folder as a standard Hugging Face folder (plain transformers)")
    p.add_argument("model_dir", help="a model folder written by a run (RUN_DIR/<method>)")
    p.add_argument("--out", required=True, help="the folder to write")
    p.add_argument("--merge", action=argparse.BooleanOptionalAction, default=True, help="fold LoRA/DoRA/IA3 into "
                   "the base weights so plain transformers loads the folder (default); --no-merge writes the small "
                   "peft adapter folder instead (needs peft and the base model)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out folder")
    p.set_defaults(func=export_command)

    p = sub.add_parser("distill", help="distil a fine-tuned teacher into smaller students (or a chain of them)",
                       description="Train students with (1 - kd_ratio) * CE + kd_ratio * T^2 * KL from --teacher "
                       "RUN_DIR/<method>, on that run's data split and test sets, and write them into RUN_DIR (or "
                       "--out). Settings: --config < the teacher run's config < flags. See docs/distillation.md.")
    _add_config_flags(p, skip=("methods", "model"))
    for f in dataclasses.fields(DistillConfig):
        p.add_argument(f"--{f.name.replace('_', '-')}", dest=f.name, default=None,
                       help=f"{f.metadata['help']} (default: {f.default})")
    p.add_argument("--no-report", action="store_true", help="skip the report at the end")
    p.set_defaults(func=cmd_distill)

    from sendit import bench

    p = sub.add_parser("bench", help="training/inference throughput against the HF Trainer + peft and pipeline")
    bench.add_arguments(p)
    p.set_defaults(func=bench.cmd_bench)

    p = sub.add_parser("methods", help="list the registered methods")
    p.set_defaults(func=cmd_methods)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from sendit.data import DataError

    user_errors: tuple = (ConfigError, DataError)
    try:
        from sendit.engine import TrainingError
        from sendit.models import ModelError

        user_errors += (ModelError, TrainingError)
    except ImportError:  # torch-free install: report works, training does not
        pass
    try:
        return args.func(args)
    except user_errors as e:
        print(f"sendit {args.command}: error: {_paragraph(e)}", file=sys.stderr)
        return EXIT_USER_ERROR
    except OSError as e:  # a file that cannot be read or written (permissions, disk full): no traceback either
        where = f" ({e.filename})" if e.filename else ""
        print(f"sendit {args.command}: error: {e.strerror or _paragraph(e)}{where}. Finished work is saved; "
              f"continue a run with --resume RUN_DIR.", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print(f"sendit {args.command}: interrupted. Finished work is saved; continue a run with --resume RUN_DIR.",
              file=sys.stderr)
        return 130


def _paragraph(e: BaseException) -> str:
    """One paragraph: library messages quoted inside ours may span lines."""
    return " ".join(str(e).split())


if __name__ == "__main__":
    sys.exit(main())
