"""`sendit` command line: parse arguments, then one function call per subcommand.

Every config field is also a flag (`--lora-r 16`, `--method-lr "{lora: 1e-3}"`); flags override the config file.
User mistakes (bad data, unknown names, out-of-range values) end with a one-paragraph message and exit code 2,
never a traceback.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from sendit.cli.parser import build_parser
from sendit.errors import (
    EXIT_BROKEN_PIPE,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_USER_ERROR,
    ConfigError,
    DataError,
    ModelError,
    RunStopped,
    TrainingError,
)
from sendit.fileio import WRITE_FULL, as_write_error, write_hint
from sendit.verbosity import set_level

__all__ = ["build_parser", "main"]


def main(argv: list[str] | None = None) -> int:
    """Run one command. Every failure is one paragraph on stderr, never a traceback: exit code 2 for bad input
    (nothing was done), 1 for a run that failed part-way, 130 for Ctrl-C."""
    parser = build_parser()
    args = parser.parse_args(argv)
    set_level(args.verbosity)
    user_errors, failures = (ConfigError, DataError, ModelError), (TrainingError,)

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


