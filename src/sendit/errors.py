"""Every error sendit raises on purpose, in one leaf module: the CLI turns each into one paragraph and an exit
code (docs/reliability.md); nothing here imports the rest of sendit."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sendit.train.engine import FitResult

# The exit codes of every command (docs/reliability.md).
EXIT_FAILED = 1  # a run failed part-way (a method's training, a full disk)
EXIT_USER_ERROR = 2  # bad input: nothing was done
EXIT_INTERRUPTED = 130  # Ctrl-C
EXIT_BROKEN_PIPE = 141  # what a shell reports for a writer stopped by SIGPIPE


class ConfigError(ValueError):
    """A user mistake in a config file or on the command line (shown without a traceback)."""


class DataError(ValueError):
    """Bad input data, with a message that names the file, the line or value, and the fix."""


class ModelError(ValueError):
    """A model that cannot be found or used, with a message saying what to do."""


class TrainingError(RuntimeError):
    """Training cannot go on (e.g. the loss became NaN); the best checkpoint so far is kept.

    `result` is the history up to the failure when there is one; the model then holds its best epoch's weights.
    """

    def __init__(self, message: str, result: FitResult | None = None):
        super().__init__(message)
        self.result = result


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C while a run wrote its folder: what finished is saved there."""

    def __init__(self, run_dir: Path):
        super().__init__(str(run_dir))
        self.run_dir = run_dir


class RunStopped(RuntimeError):
    """A file-system error (a full disk, a folder removed under the run) stopped a run part-way; what finished
    is saved in its folder."""

    def __init__(self, run_dir: Path, error: OSError):
        super().__init__(f"{error.strerror or error}" + (f" ({error.filename})" if error.filename else ""))
        self.run_dir, self.error = run_dir, error


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be read back (damaged, another version, or holding more than tensors)."""
