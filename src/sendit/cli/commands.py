"""The command functions: one per subcommand, each turning its parsed flags into one call of a recipe or of the
serve, data and report packages (which never see argparse)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from sendit.config.fields import field_default
from sendit.config.flags import config_overrides
from sendit.errors import EXIT_FAILED, ConfigError


def _config(args: argparse.Namespace):
    from sendit.config.schema import load_config, resolve_config_path

    path = resolve_config_path(args.config) if args.config else None
    return load_config(path, config_overrides(args))


def cmd_run(args: argparse.Namespace) -> int:
    from sendit.recipes.compare import run

    if args.resume:  # run() checks the folder, then reads the run's own config back (the lifecycle's resume)
        from sendit.config.schema import load_config

        cfg = load_config(None, {"out": args.resume})
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
    """Exit code of a finished run, tune or distillation: 0, or 1 when a job failed (the others' results are
    saved): run.json's status, as the lifecycle's job loop wrote it."""
    from sendit.run.lifecycle import failed_jobs

    failed, jobs = failed_jobs(run_dir)
    if not failed:
        return 0
    print(f"sendit {command}: error: {len(failed)} of {jobs} method runs failed ("
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

    return predict_command(args.model_dir, args.texts, args.input, args.output, args.text_column, args.batch_size,
                           args.chunk_size, args.bad_rows, args.precision)


def cmd_export(args: argparse.Namespace) -> int:
    from sendit.serve.export import export

    def log(line: str) -> None:
        print(line, file=sys.stderr)

    out = export(args.model_dir, args.out, merge=args.merge, overwrite=args.overwrite, format=args.format,
                 quantize=args.quantize, min_agreement=args.min_agreement, force=args.force, log=log)
    print(f"exported {args.model_dir} -> {out}", file=sys.stderr)
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    """Flags -> BenchConfig, through the one coercion of every config (`sendit.config.fields`), then its checks."""
    from sendit.bench.training import BenchConfig, run_bench, validate
    from sendit.config.fields import coerce

    kw = {f.name: coerce(BenchConfig, f.name, getattr(args, f.name)) for f in dataclasses.fields(BenchConfig)
          if getattr(args, f.name, None) not in (None, False)}
    run_bench(validate(BenchConfig(**kw)))
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from sendit.serve.server import Limits, serve
    from sendit.verbosity import VERBOSE

    limits = Limits(max_batch=args.max_batch, max_wait_ms=args.max_wait_ms, max_texts=args.max_texts,
                    max_body_bytes=args.max_body_bytes, max_text_chars=args.max_text_chars)
    return serve(args.model_dir, args.host, args.port, args.precision, limits,
                 log_level="info" if args.verbosity >= VERBOSE else "warning")


def cmd_distill(args: argparse.Namespace) -> int:
    from sendit.config.distill import DistillConfig
    from sendit.recipes.distill import distill, distill_settings

    flags = {f.name: getattr(args, f.name) for f in dataclasses.fields(DistillConfig)
             if getattr(args, f.name, None) is not None}
    cfg, d = distill_settings(args.config, config_overrides(args, with_out=False), flags, args.out)
    return _failures(distill(cfg, d, args.out, report=not args.no_report), "distill")


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
        from sendit.recipes.tune.search import tune, tune_settings
    except ModuleNotFoundError as e:
        if e.name != "optuna":
            raise
        raise ConfigError("sendit tune needs Optuna; install it with pip install 'sendit[tune]'.") from None
    from sendit.config.flags import tune_overrides

    overrides, tune_flags = config_overrides(args), tune_overrides(args)
    cfg, tcfg = tune_settings(args.config, overrides, tune_flags, args.resume)
    ignored = [f"--{k.replace('_', '-')}" for k in [*overrides, *tune_flags] if k != "out"]
    ignored += ["--config"] if args.config else []
    if args.resume and ignored:
        print(f"sendit tune: note: --resume finishes the sweep with the settings it started with; ignoring "
              f"{', '.join(ignored)}.", file=sys.stderr)
    run_dir = tune(cfg, tcfg, resume=bool(args.resume), overwrite=args.overwrite, report=not args.no_report)
    return _failures(run_dir, "tune")  # one rule for run, train, tune and distill


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


