"""The run lifecycle, one for every command that writes a run folder (run, train, tune, distill) and for evaluate's
folder: check the folder before anything is written -> lock it -> clear it (a fresh run) or take its config back
(--resume) -> run.json -> the job loop, with one failure policy -> finish (run.json's finish and wall time; the
recipe ends its trackers and writes the report). The exit code of a finished run comes from its jobs' status
(`failed_jobs`), the same for every command.

Failure policy: a job whose training fails (TrainingError) is recorded as failed in run.json's status and the
jobs that do not need it go on; a job that needs it (a distillation stage whose teacher is the failed stage) is
recorded as failed without being tried. Anything else (a full disk, Ctrl-C) stops the run; what finished is kept,
and --resume skips the jobs already done."""

from __future__ import annotations

import os
import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Callable, Iterator

from sendit.config.schema import RunConfig
from sendit.errors import ConfigError, TrainingError
from sendit.run.folder import (
    LOCK,
    RUN_MANIFEST,
    clear_run_folder,
    holder_of,
    is_run_folder,
    read_manifest,
    update_manifest,
    writing,
)


def check_run_dir(out: str | None, resume: bool = False, overwrite: bool = False,
                  sources: dict[str, str | None] | None = None) -> Path:
    """The run folder for --out (or --resume), checked and left untouched. `--overwrite` may replace only a folder
    whose run.json sendit wrote, and never one that holds a source of the run (`sources`: flag -> path) or the
    working directory."""
    run_dir = Path(out or f"runs/{datetime.now():%Y%m%d-%H%M%S}")
    if run_dir.exists() and not run_dir.is_dir():
        raise ConfigError(f"--out '{run_dir}' is a file; the run folder must be a folder. Pass another --out.")
    existing = next(p for p in [run_dir, *run_dir.parents] if p.exists() or p == Path(p.anchor or "."))
    if not existing.is_dir():
        raise ConfigError(f"--out '{run_dir}' cannot be made: '{existing}' is a file (Not a directory). Pass "
                          f"another --out.")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"--out '{run_dir}': no permission to write in '{existing}'. Pass another --out.")
    if resume:
        # read_manifest names a damaged run.json (not JSON, a list); one without a config is nobody's run to resume
        if not (run_dir / RUN_MANIFEST).exists() or not read_manifest(run_dir).get("config"):
            raise ConfigError(f"--resume {run_dir}: no {RUN_MANIFEST} with a config there, nothing to resume.")
        if not is_run_folder(run_dir):
            raise ConfigError(f"--resume {run_dir}: its run.json was not written by sendit, so there is nothing to "
                              f"resume.")
        return run_dir
    if not run_dir.exists() or not [e for e in run_dir.iterdir() if e.name != LOCK]:
        return run_dir
    if not (run_dir / RUN_MANIFEST).exists():  # --overwrite deletes run folders only, never `--out .` or ~
        raise ConfigError(f"'{run_dir}' already exists, is not empty and is not a sendit run folder (no "
                          f"run.json), so it is left alone. Pass another --out.")
    if not is_run_folder(run_dir):
        raise ConfigError(f"'{run_dir}' holds a run.json that sendit did not write (or a damaged one), so it is not a "
                          f"sendit run folder and is left alone, even with --overwrite. Pass another --out.")
    if not overwrite:
        raise ConfigError(f"run folder '{run_dir}' already exists and is not empty. Pass --overwrite to replace "
                          f"it, --resume {run_dir} to continue it, or another --out.")
    held = holder_of(run_dir, {**(sources or {}), "the working directory": Path.cwd()})
    if held:
        raise ConfigError(f"--overwrite would delete '{run_dir}', which holds {held}; it is left alone. Pass "
                          f"another --out.")
    return run_dir


def prepare_run_dir(out: str | None, resume: bool = False, overwrite: bool = False,
                    sources: dict[str, str | None] | None = None) -> Path:
    """check_run_dir, then an empty (or resumed) run folder; for callers that take no lock (scripts)."""
    run_dir = check_run_dir(out, resume, overwrite, sources)
    if run_dir.exists() and not resume:
        clear_run_folder(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    return run_dir


def check_added_to(run_dir: Path, what: str) -> Path:
    """A run folder that a command adds jobs to (sendit distill: students into the teacher's run folder, or a new
    one): it must be a sendit run folder, empty, or not there yet; it is never cleared."""
    if run_dir.exists() and not run_dir.is_dir():
        raise ConfigError(f"--out '{run_dir}' is a file; the run folder must be a folder. Pass another --out.")
    if run_dir.exists() and [e for e in run_dir.iterdir() if e.name != LOCK] and not is_run_folder(run_dir):
        raise ConfigError(f"--out '{run_dir}' already exists, is not empty and is not a sendit run folder, so no "
                          f"{what} are written into it. Pass another --out.")
    return run_dir


def run_sources(cfg: RunConfig) -> dict[str, str | None]:
    """The files and folders a run reads, by flag: a folder that holds one is never deleted."""
    return {"--data": cfg.data.data, "--test-file": cfg.data.test_file, "--extra-train-file": cfg.data.extra_train_file,
            "--model": cfg.model.model}



def resumed_config(run_dir: Path) -> RunConfig:
    """On --resume the run's own config wins: the run must finish as it started (run, train, tune, distill)."""
    from sendit.config.schema import from_dict

    saved = read_manifest(run_dir).get("config")
    if not saved:
        raise ConfigError(f"--resume {run_dir}: no {RUN_MANIFEST} with a config there, nothing to resume.")
    return from_dict({**saved, "out": str(run_dir)}, source=str(run_dir / RUN_MANIFEST))


def is_main_process() -> bool:
    """Under `accelerate launch` every process runs a command; the main one (RANK 0) owns the run folder."""
    return os.environ.get("RANK", "0") == "0"


@contextmanager
def open_run(run_dir: Path, fresh: bool) -> Iterator[Path]:
    """Hold the run folder's lock (main process) for the whole command; a fresh run's folder (one check_run_dir
    allowed: empty, or a sendit run with --overwrite) is cleared first, a resumed or extended one is kept."""
    main = is_main_process()
    with writing(run_dir) if main else nullcontext(run_dir):
        if main and fresh:
            clear_run_folder(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        yield run_dir


@dataclass
class Job:
    """One training of a run: `key` names it in run.json's status (`<label>/seed<seed>`); `needs` is the key of a
    job it builds on (a distillation stage's teacher stage), None when it stands alone."""

    key: str
    run: Callable[[], object]
    needs: str | None = None
    title: str | None = None  # how the progress line names it (default: the key)


def run_jobs(run_dir: Path, jobs: list[Job], log: Callable[[str], None], main: bool = True) -> dict:
    """The job loop of every recipe: jobs done before (--resume) are skipped, the others run in order under the
    failure policy above; run.json's status is written after each job. Returns the status."""
    status: dict = read_manifest(run_dir).get("status", {})
    seconds, finished = 0.0, 0
    for i, job in enumerate(jobs, 1):
        where = f"[{i}/{len(jobs)}] "
        if status.get(job.key) == "done":
            log(f"{where}{job.key}: already done, skipped")
            continue
        if job.needs is not None and status.get(job.needs) != "done":
            status[job.key] = f"failed: it needs {job.needs}, which did not finish"
            log(f"{where}{job.key} not tried: it needs {job.needs}, which did not finish")
        else:
            log(where + (job.title or job.key) + _time_left(seconds, finished, len(jobs) - i + 1))
            started = time.perf_counter()
            try:
                job.run()
                status[job.key] = "done"
            except TrainingError as e:
                status[job.key] = f"failed: {e}"
                log(f"{job.key} FAILED: {e}\nThe jobs that do not need it go on.")
            seconds, finished = seconds + time.perf_counter() - started, finished + 1
        if main:
            update_manifest(run_dir, status=status)
    return status


def _time_left(seconds: float, done: int, left: int) -> str:
    """A rough estimate from the trainings finished so far (methods differ in cost), or nothing before the first."""
    rest = seconds / max(done, 1) * left
    when = f"{rest:.0f} s" if rest < 90 else f"{rest / 60:.0f} min"
    return f" (about {when} left, from the {done} finished so far)" if done else ""


def finish_run(run_dir: Path, started: float, main: bool = True, wall_key: str = "wall_time_sec") -> float:
    """run.json's finish time and wall time (added to a resumed run's); returns the wall time. The recipe writes
    the report after it (sendit.report.report_run): the run folder's lifecycle does not import the report."""
    wall = time.perf_counter() - started
    if main:
        wall += read_manifest(run_dir).get(wall_key, 0.0) if wall_key == "wall_time_sec" else 0.0
        update_manifest(run_dir, **{"finished": datetime.now().isoformat(timespec="seconds"), wall_key: wall})
    return wall


def failed_jobs(run_dir: Path) -> tuple[dict, int]:
    """The failed jobs of a finished run and the number of jobs: a run exits 1 when one failed (cli)."""
    status = read_manifest(run_dir).get("status", {})
    return {k: v for k, v in status.items() if str(v).startswith("failed")}, len(status)
