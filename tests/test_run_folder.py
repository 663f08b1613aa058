"""The run folder has one home for its names (sendit.run.folder): finished run, tune and distill folders hold
nothing that module does not name, and its readers and writers agree on them. The lifecycle's job loop: one
failure policy for every recipe (a failed job is recorded, the jobs that need it are not tried, the others go on)."""

from __future__ import annotations

import json

import pytest
from helpers import tiny_run_args

from sendit.cli import main
from sendit.errors import TrainingError
from sendit.run import folder as run_folder
from sendit.run.lifecycle import Job, failed_jobs, open_run, run_jobs

pytestmark = pytest.mark.usefixtures("one_thread")


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
