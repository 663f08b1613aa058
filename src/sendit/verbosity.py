"""How much sendit and the libraries under it print: `-q` (warnings, errors and results only), the default
(sendit's own lines and progress bars), `-v` (also the libraries' logging, progress bars and warnings).

transformers, peft and accelerate report things sendit already handles, in words that alarm a new user: a
"classifier.weight | MISSING ... newly initialized" table for the head every method trains, FutureWarnings about
their own internals. sendit says what it does in its own words and keeps theirs for `-v`.
"""

from __future__ import annotations

import os
import sys
import warnings
from contextlib import contextmanager
from typing import Iterator

QUIET, NORMAL, VERBOSE = 0, 1, 2
_level = NORMAL
_CATEGORIES = (FutureWarning, DeprecationWarning, UserWarning)
_LIBRARIES = r"(transformers|peft|accelerate|huggingface_hub|tokenizers)(\.|$)"


def set_level(level: int) -> None:
    """The process's level (the CLI's -q/-v). Below VERBOSE the libraries' logging and warnings are silenced."""
    global _level
    _level = level
    # transformers takes seconds to import, so a command that never loads it (report, methods) does not import it
    # here: it reads TRANSFORMERS_VERBOSITY when it is first imported.
    if level < VERBOSE:
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        _filter_warnings("ignore")
    else:
        if os.environ.get("TRANSFORMERS_VERBOSITY") == "error":
            del os.environ["TRANSFORMERS_VERBOSITY"]
        _filter_warnings("default")
    if "transformers" in sys.modules:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity(hf_logging.ERROR if level < VERBOSE else hf_logging.WARNING)


def level() -> int:
    return _level


def say(message: str) -> None:
    """Print one of sendit's own progress lines, unless quiet."""
    if _level >= NORMAL:
        print(message)


def bars_disabled() -> bool:
    """sendit's progress bars are off when quiet."""
    return _level < NORMAL


@contextmanager
def quiet_libraries() -> Iterator[None]:
    """Silence the libraries' logging, their own progress bars ("Loading weights") and warnings for a block
    (loading, preparing or saving a model), unless verbose; the previous settings come back afterwards.
    Download bars stay: a first download of a hub model can take minutes."""
    if _level >= VERBOSE:
        yield
        return
    from huggingface_hub import utils as hub_utils
    from transformers.utils import logging as hf_logging

    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hub_bars = not hub_utils.are_progress_bars_disabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()  # also turns off huggingface_hub's bars, turned on again below
    if hub_bars:
        hub_utils.enable_progress_bars()
    try:
        with warnings.catch_warnings():
            _filter_warnings("ignore")
            yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def _filter_warnings(action: str) -> None:
    # FutureWarning and DeprecationWarning speak to library authors, UserWarnings from the libraries' modules
    # about their defaults; sendit's own warnings stay visible. Inserted first, so the latest -q/-v call wins.
    for category in _CATEGORIES:
        module = _LIBRARIES if category is UserWarning else ""
        warnings.filterwarnings(action, category=category, module=module)
