"""The run folder has one home for its names (sendit.run.folder): finished run, tune and distill folders hold
nothing that module does not name, and its readers and writers agree on them. The lifecycle's job loop: one
failure policy for every recipe (a failed job is recorded, the jobs that need it are not tried, the others go on). One writer at a time (the lock), a folder that is not a run never overwritten, method labels
that cannot leave the run folder."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import types
from pathlib import Path

import pytest
from helpers import run_cli, save_tiny_opt, snapshot, tiny_run_args, user_error

from sendit.cli import main
from sendit.errors import ConfigError, TrainingError
from sendit.run import folder as run_folder
from sendit.run.lifecycle import Job, failed_jobs, open_run, run_jobs
from sendit.run.method import check_label, train_method

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """A tiny OPT classifier folder of this module's own (the typo and bad-input checks name it)."""
    return save_tiny_opt(tmp_path_factory.mktemp("opt"))


@pytest.fixture(scope="module")
def folders(tiny_opt, tmp_path_factory) -> dict:
    """A finished run (two methods, two seeds, with its report), a distillation into it, and a tune sweep."""
    root = tmp_path_factory.mktemp("folders")
    run, sweep = root / "run", root / "sweep"
    assert main([*tiny_run_args(tiny_opt, run, "bitfit,full", "--seeds", "0,1"), "--threads", "1"]) == 0
    assert main(["distill", "--teacher", str(run / "full"), "--student-layers", "1", "--method", "full", "--epochs",
                 "1", "--threads", "1"]) == 0  # into the teacher's run folder, with the report
    assert main(["tune", "--model", str(tiny_opt), "--methods", "head", "--trials", "2", "--train-size", "64",
                 "--val-size", "24", "--test-size", "24", "--epochs", "1", "--batch-size", "16", "--threads", "1",
                 "--out", str(sweep)]) == 0
    return {"run": run, "sweep": sweep}


@pytest.mark.parametrize("kind", ["run", "sweep"])
def test_a_finished_folder_holds_only_what_the_run_folder_module_names(folders, kind):
    run_dir = folders[kind]
    unnamed = [p.name for p in run_dir.iterdir() if run_folder.name_of(p, run_dir) is None]
    assert not unnamed, f"{kind} folder entries that sendit.run.folder does not name: {unnamed}"
    named = {run_folder.name_of(p, run_dir) for p in run_dir.iterdir()}
    assert {run_folder.RUN_MANIFEST, run_folder.CONFIG_FILE, run_folder.REPORT} <= named
    assert run_folder.LOCK not in named, "the lock is removed when the command ends"
    if kind == "sweep":
        assert {run_folder.TRIALS, run_folder.STUDY_JOURNAL} <= named
    else:
        assert run_folder.CACHE in named and "model folder" in named
        assert (run_dir / "full-seed1").is_dir()  # a later seed's model folder
        student = json.loads((run_dir / "run.json").read_text())["methods"][-1]
        assert (run_dir / student / run_folder.STUDENT_BASE / "config.json").is_file()
        assert (run_dir / student / run_folder.MODEL_MANIFEST).is_file()


def test_an_entry_sendit_did_not_write_is_not_named(folders, tmp_path):
    run_dir = folders["run"]
    assert run_folder.name_of(run_dir / "notes.txt", run_dir) is None
    assert run_folder.name_of(run_dir / "lora", run_dir) is None  # no lora in this run
    assert run_folder.name_of(run_dir / "bitfit-seed7", run_dir) is None  # nor a seed 7


def test_one_failure_policy_a_failed_job_stops_only_the_jobs_that_need_it(tmp_path):
    """What run, tune and distill share: a chain (teacher -> a -> b) whose first stage fails is not continued,
    the jobs beside it run, the status says why, and the command's exit code comes from it."""
    ran, lines = [], []

    def job(key, fail=False, needs=None):
        def run():
            ran.append(key)
            if fail:
                raise TrainingError("the training loss became nan in epoch 1")
        return Job(key, run, needs)

    with open_run(tmp_path / "r", fresh=True) as run_dir:
        status = run_jobs(run_dir, [job("a/seed0", fail=True), job("b/seed0", needs="a/seed0"), job("a/seed1"),
                                    job("b/seed1", needs="a/seed1")], lines.append)
    assert ran == ["a/seed0", "a/seed1", "b/seed1"]
    assert status["a/seed0"].startswith("failed: the training loss became nan")
    assert status["b/seed0"] == "failed: it needs a/seed0, which did not finish"
    assert status["a/seed1"] == status["b/seed1"] == "done"
    failed, jobs = failed_jobs(run_dir)
    assert set(failed) == {"a/seed0", "b/seed0"} and jobs == 4
    # resumed: the jobs done are skipped, the failed ones are tried again
    ran.clear()
    with open_run(run_dir, fresh=False):
        run_jobs(run_dir, [job("a/seed0"), job("b/seed0", needs="a/seed0"), job("a/seed1")], lines.append)
    assert ran == ["a/seed0", "b/seed0"] and "[3/3] a/seed1: already done, skipped" in lines
    assert not (run_dir / run_folder.LOCK).exists()


def test_a_distillation_whose_stage_fails_goes_on_with_the_other_seed_and_exits_1(folders, monkeypatch, capsys):
    """Before, distill stopped at a failed stage with its own rule; now the lifecycle's: the teacher run's other
    seed is still distilled, the exit code is 1 as for run and tune, and run.json says which job failed."""
    import sendit.recipes.distill as distill

    real, tried = distill.distill_stage, []

    def fails_for_seed0(ctx, stage, teacher_dir, d, seed):
        tried.append(seed)
        if seed == 0:
            raise TrainingError(f"{stage.label}: the training loss became nan in epoch 1")
        return real(ctx, stage, teacher_dir, d, seed)

    monkeypatch.setattr(distill, "distill_stage", fails_for_seed0)
    run, out = folders["run"], folders["run"].parent / "failing"
    code = main(["distill", "--teacher", str(run / "full"), "--student-layers", "1", "--method", "full", "--epochs",
                 "1", "--threads", "1", "--no-report", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 1 and "sendit distill: error: 1 of 2 method runs failed" in err and tried == [0, 1]
    status = json.loads((out / "run.json").read_text())["status"]
    assert sorted(v.split(":")[0] for v in status.values()) == ["done", "failed"], status


def test_run_folder_is_never_overwritten_silently(tmp_path, capsys, model):
    out = tmp_path / "run"
    out.mkdir()
    (out / "precious.csv").write_text("a\n1\n")
    for flags in ([], ["--overwrite"]):  # not a run folder: left alone even with --overwrite
        msg = user_error(capsys, ["run", "--model", str(model), "--out", str(out), *flags])
        assert "is not a sendit run folder (no run.json), so it is left alone" in msg
    (out / "run.json").write_text("{}")  # a run.json, but not sendit's: left alone even with --overwrite
    for flags in ([], ["--overwrite"]):
        msg = user_error(capsys, ["run", "--model", str(model), "--out", str(out), *flags])
        assert "holds a run.json that sendit did not write" in msg and "left alone, even with --overwrite" in msg
    (out / "run.json").write_text('{"config": {}, "status": {}}')  # a run folder from before the sendit mark
    msg = user_error(capsys, ["run", "--model", str(model), "--out", str(out)])
    assert "already exists and is not empty. Pass --overwrite" in msg and f"--resume {out}" in msg
    assert (out / "precious.csv").read_text() == "a\n1\n"
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    assert "is a file" in user_error(capsys, ["run", "--model", str(model), "--out", str(a_file)])
    msg = user_error(capsys, ["run", "--resume", str(tmp_path / "nothing-here")])
    assert "no run.json with a config there, nothing to resume" in msg
    msg = user_error(capsys, ["run", "--model", str(model), "--out", str(a_file / "sub")])
    assert "Not a directory" in msg and str(a_file) in msg  # OSError: no traceback either


HOLDER = """
import sys, time
from pathlib import Path
from sendit.run.folder import writing
with writing(Path(sys.argv[1])):
    print("locked", flush=True)
    time.sleep(120)
"""


def _holder(run_dir: Path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(run_dir)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    return proc


@pytest.mark.usefixtures("one_thread")
def test_second_writer_is_refused_naming_the_holder_and_a_dead_holder_is_taken_over(world, capsys):
    old = world / "oldrun"
    proc = _holder(old)
    try:
        before = snapshot(world, ["oldrun"])
        for command in (f"run --model {world}/opt --no-report --out {old} --overwrite --data {world}/forty.csv "
                        f"--test-file none --train-size 20 --val-size 8 --test-size 8 --batch-size 8",
                        f"run --resume {old}"):
            code, err = run_cli(capsys, shlex.split(command))
            assert code == 2, err
            assert f"is being written by another sendit process (PID {proc.pid}" in err
        assert snapshot(world, ["oldrun"]) == before  # nothing deleted by the refused --overwrite
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    from sendit.run.folder import LOCK, writing

    assert (old / LOCK).exists()  # the killed holder never released it: a stale lock
    with writing(old):
        assert (old / LOCK).read_text().split("\n")[0] == str(os.getpid())
    assert not (old / LOCK).exists()


@pytest.mark.parametrize("label", ["../escape", "a/b", "/abs", ".hidden", "..", ".", "", "a\\b"])
def test_method_labels_cannot_leave_the_run_folder(label, tmp_path):
    with pytest.raises(ConfigError, match="cannot name a folder inside the run folder"):
        check_label(label)
    if label:  # an empty label means "the method's name"
        ctx = types.SimpleNamespace(cfg=None, accelerator=None, run_dir=tmp_path)
        with pytest.raises(ConfigError):
            train_method(ctx, "head", 0, label=label)
        assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("label", ["lora", "distill-3L-full", "distill-opt-125m-lora", "a.b_c"])
def test_ordinary_labels_pass(label):
    assert check_label(label) == label
