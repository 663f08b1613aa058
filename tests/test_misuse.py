"""What a careless user does, as a table: each row is a command line, the exit code it must end with, a phrase of
its one-paragraph message, and the files it must leave exactly as they were. None of them may print a traceback.
docs/reliability.md ("Misuse") lists the same cases with their messages.

Exit codes: 2 = bad input, nothing was done; 1 = a run failed part-way; 130 = interrupted."""

from __future__ import annotations

import errno
import io
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from sendit.cli import main
from sendit.config.schema import load_config
from sendit.data.dataset import split_sizes

pytestmark = pytest.mark.usefixtures("one_thread")


def tweets_csv(path: Path, labels: tuple = (0, 4), n: int = 20) -> Path:
    rows = [f"{labels[i % len(labels)]},tweet number {i} about the {'rain' if i % 2 else 'sun'}" for i in range(n)]
    path.write_text("label,text\n" + "\n".join(rows) + "\n")
    return path


@pytest.fixture
def world(tmp_path, tiny_opt, monkeypatch):
    """A working directory with what a user has lying around: a finished sendit run (holding a model folder and
    its data), a folder of photos, a folder with somebody else's run.json, data files good and bad."""
    w = tmp_path / "w"
    w.mkdir()
    monkeypatch.chdir(tmp_path)
    shutil.copytree(tiny_opt, w / "opt")
    tweets_csv(w / "tweets.csv")
    old = w / "oldrun"
    (old / "lora").mkdir(parents=True)
    tweets_csv(w / "forty.csv", n=40)
    config = load_config(None, {"model": str(w / "opt"), "data": str(w / "forty.csv"), "test_file": "none",
                                "train_size": 20, "val_size": 8, "test_size": 8, "batch_size": 8, "methods": "lora"})
    (old / "run.json").write_text(json.dumps({"sendit": {"kind": "run", "version": "0.1.0"}, "config": config.to_dict(),
                                              "status": {"lora/seed0": "done"}}))
    (old / "lora_results.csv").write_text("best_val_f1,method\n0.8,lora\n")
    (old / "lora" / "sendit_model.json").write_text(json.dumps({"method": "lora", "base_model": "embedded"}))
    shutil.copytree(w / "opt", old / "opt")
    tweets_csv(old / "mine.csv")
    for name, drop in (("noweights", ("model.safetensors",)), ("notokenizer", TOKENIZER_FILES)):
        shutil.copytree(w / "opt", w / name, ignore=shutil.ignore_patterns(*drop))
    (w / "photos").mkdir()
    (w / "photos" / "cat.jpg").write_bytes(b"\xff\xd8 a cat")
    (w / "other").mkdir()
    (w / "other" / "run.json").write_text('{"experiment": "not sendit"}')
    (w / "other" / "notes.txt").write_text("keep me")
    (w / "afile.txt").write_text("just a file")
    (w / "corrupt").mkdir()
    (w / "corrupt" / "run.json").write_text('{"config": {"data": ')
    (w / "listrun").mkdir()
    (w / "listrun" / "run.json").write_text("[1, 2]")
    (w / "header_only.csv").write_text("text\n")
    (w / "texts.csv").write_text("text\nso happy\n")
    (w / "prior.csv").write_text("id,text\n1,a file the user made\n")
    for name, rows in {"null_text": [{"text": None, "label": 0}], "object_text": [{"text": {"a": 1}, "label": 0}],
                       "list_text": [{"text": ["a", "b"], "label": 4}], "number_text": [{"text": 42, "label": 4}]
                       }.items():
        lines = [json.dumps({"text": "a real tweet", "label": 0}), *map(json.dumps, rows)]
        (w / f"{name}.jsonl").write_text("\n".join(lines) + "\n")
    tweets_csv(w / "tweeteval.csv", labels=(0, 1, 2), n=30)
    tweets_csv(w / "ratings.csv", labels=(1, 2, 3, 4, 5), n=30)
    tweets_csv(w / "polarity.csv", labels=(-1, 0, 1), n=30)
    rep = w / "badreport"
    rep.mkdir()
    (rep / "lora_results.csv").write_text("best_val_f1,val_accuracy,method,seed\nabc,0.5,lora,0\n")
    rep2 = w / "garbagereport"
    rep2.mkdir()
    (rep2 / "lora_results.csv").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(128, 256)) * 8)
    exp = w / "oldexport"
    exp.mkdir()
    (exp / "sendit_model.json").write_text(json.dumps({"method": "full", "exported_from": "x"}))
    return w


TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt", "special_tokens_map.json")
RUN = "run --model {w}/opt --no-report --out {w}/new"
SMALL = "--data {w}/forty.csv --test-file none --train-size 20 --val-size 8 --test-size 8"
TREE = ["oldrun", "photos", "other", "afile.txt", "corrupt", "listrun", "tweets.csv", "prior.csv", "oldexport"]

# (name, command line, exit code, phrase in the message); every case also checks that TREE is untouched.
CASES = [
    # Options: each names the flag, the value and what is allowed, before anything is loaded.
    ("epochs not a number", f"{RUN} --epochs abc", 2, "'epochs' must be an integer, got 'abc'"),
    ("epochs inf", f"{RUN} --epochs inf", 2, "'epochs' must be an integer, got 'inf'"),
    ("epochs fractional", f"{RUN} --epochs 2.5", 2, "'epochs' must be an integer, got '2.5'"),
    ("epochs negative", f"{RUN} --epochs=-3", 2, "--epochs must be at least 1 (got -3)"),
    ("lr nan", f"{RUN} --lr nan", 2, "--lr must be a finite number > 0 (got nan)"),
    ("lr inf", f"{RUN} --lr inf", 2, "--lr must be a finite number > 0 (got inf)"),
    ("lr overflows to inf", f"{RUN} --lr 1e400", 2, "--lr must be a finite number > 0 (got inf)"),
    ("lr words", f"{RUN} --lr fast", 2, "'lr' must be a number, got 'fast'"),
    ("negative clip norm (gradient ascent)", f"{RUN} --max-grad-norm -1", 2, "--max-grad-norm must be >= 0 (got -1.0)"),
    ("clip norm nan", f"{RUN} --max-grad-norm nan", 2, "--max-grad-norm must be a finite number >= 0 (got nan)"),
    ("eval batch size 0 (loops forever)", f"{RUN} --eval-batch-size 0", 2, "--eval-batch-size must be at least 1 (got 0)"),
    ("negative batch size", f"{RUN} --batch-size=-5", 2, "--batch-size must be at least 1 (got -5)"),
    ("negative weight decay", f"{RUN} --weight-decay=-0.01", 2, "--weight-decay must be >= 0 (got -0.01)"),
    ("weight decay inf", f"{RUN} --weight-decay inf", 2, "--weight-decay must be a finite number >= 0 (got inf)"),
    ("negative seed", f"{RUN} --seed=-1", 2, "--seed must be a whole number from 0 to 4294967295 (got -1)"),
    ("seed too large", f"{RUN} --seed 99999999999", 2, "--seed must be a whole number from 0 to 4294967295"),
    ("negative split seed", f"{RUN} --split-seed=-3", 2, "--split-seed must be a whole number from 0"),
    ("seed listed twice", f"{RUN} --seeds 0,1,0", 2, "--seeds lists seed 0 twice"),
    ("seed not a number", f"{RUN} --seeds 0,x", 2, "'seeds' must be an integer, got 'x'"),
    ("zero threads", f"{RUN} --threads 0", 2, "--threads must be at least 1 (got 0)"),
    ("absurd threads", f"{RUN} --threads 100000", 2, "--threads must be at most 1024 (got 100000)"),
    ("zero grad accum", f"{RUN} --grad-accum 0", 2, "--grad-accum must be at least 1 (got 0)"),
    ("zero patience", f"{RUN} --patience 0", 2, "--patience must be at least 1 (got 0)"),
    ("zero log every", f"{RUN} --log-every 0", 2, "--log-every must be at least 1 (got 0)"),
    ("warmup 1", f"{RUN} --warmup-ratio 1", 2, "--warmup-ratio must be in [0, 1) (got 1.0)"),
    ("negative warmup", f"{RUN} --warmup-ratio=-0.1", 2, "--warmup-ratio must be in [0, 1) (got -0.1)"),
    ("lora alpha 0", f"{RUN} --lora-alpha 0", 2, "--lora-alpha must be at least 1 (got 0)"),
    ("lora dropout nan", f"{RUN} --lora-dropout nan", 2, "--lora-dropout must be a finite number in [0, 1)"),
    ("size neither count nor fraction", f"{RUN} --train-size 1.5", 2, "--train-size 1.5 is neither a row count"),
    ("fractions over 1", f"{RUN} --train-size 0.6 --val-size 0.5", 2, "add up to 1.1, more than all the rows"),
    ("size inf", f"{RUN} --test-size inf", 2, "--test-size must be a finite number"),
    ("max length 0", f"{RUN} --max-length 0", 2, "--max-length must be at least 8 (got 0)"),
    ("label map to a non-label", f"{RUN} --label-map '{{happy: 7}}'", 2, "--label-map maps 'happy' to 7"),
    ("bool flag not a bool", f"{RUN} --compile maybe", 2, "'compile' must be true or false, got 'maybe'"),
    ("empty methods", f"{RUN} --methods ,", 2, "--methods is empty"),
    # Options whose range is the model's: checked from its config before any training.
    ("max length beyond the model's positions", f"{RUN} --max-length 500", 2,
     "--max-length 500 is longer than model"),
    ("unknown LoRA target module", f"{RUN} --methods lora --target-modules q_projj", 2,
     "--target-modules q_projj: model"),
    ("LoRA rank above the model width", f"{RUN} --methods lora --lora-r 100", 2, "--lora-r 100 is larger than the 16-wide"),
    # Data: rows that are no tweet, labels whose meaning is a guess, splits that cannot be made.
    ("JSON null text", "data {w}/null_text.jsonl --bad-rows error", 2, "line 2: the text is missing (null)"),
    ("JSON object text", "data {w}/object_text.jsonl --bad-rows error", 2, "the text is a JSON object"),
    ("JSON list text", "data {w}/list_text.jsonl --bad-rows error", 2, "the text is a JSON list"),
    ("JSON number text", "data {w}/number_text.jsonl --bad-rows error", 2, "the text is a number ('42')"),
    ("TweetEval 0/1/2 labels", "data {w}/tweeteval.csv --bad-rows skip", 2,
     "--label-map \"{0: negative, 1: neutral, 2: positive}\""),
    ("1-5 ratings", "data {w}/ratings.csv", 2,
     "--label-map \"{1: negative, 2: negative, 3: neutral, 4: positive, 5: positive}\""),
    ("-1/0/1 polarities", "data {w}/polarity.csv", 2, "the labels -1 (10 rows), 0 (10 rows), 1 (10 rows) have no"),
    ("ambiguous labels in a run", f"{RUN} --data {{w}}/tweeteval.csv --test-file none", 2, "have no single reading"),
    ("test file typo", f"{RUN} --data {{w}}/forty.csv --test-file {{w}}/typo.csv", 2,
     "data file '{w}/typo.csv' does not exist. Pass --test-file with"),
    ("extra training file typo", f"{RUN} {SMALL} --extra-train-file {{w}}/typo.csv", 2,
     "Pass --extra-train-file with"),
    ("config is a folder", f"{RUN} --config {{w}}/photos", 2, "is a folder; pass a YAML file"),
    ("fraction that rounds to 0 rows", f"{RUN} {SMALL} --val-size 0.001", 2, "--val-size 0.001 of the 40 rows"),
    # Paths: --overwrite replaces only sendit's own run folders, never a source, and only after every check.
    ("overwrite a folder of photos", f"{RUN.replace('{w}/new', '{w}/photos')} --overwrite", 2,
     "is not a sendit run folder (no run.json), so it is left alone"),
    ("overwrite a foreign run.json", f"{RUN.replace('{w}/new', '{w}/other')} --overwrite", 2,
     "holds a run.json that sendit did not write"),
    ("overwrite a run with a data typo", f"{RUN.replace('{w}/new', '{w}/oldrun')} --overwrite --data {{w}}/typo.csv",
     2, "data file '{w}/typo.csv' does not exist"),
    ("overwrite a run with a bad option", f"{RUN.replace('{w}/new', '{w}/oldrun')} --overwrite --max-length 500", 2,
     "--max-length 500 is longer"),
    ("overwrite a run with a model folder without weights",
     f"{RUN.replace('{w}/new', '{w}/oldrun').replace('{w}/opt', '{w}/noweights')} --overwrite", 2, "has no weights"),
    ("overwrite a run with a model folder without a tokenizer",
     f"{RUN.replace('{w}/new', '{w}/oldrun').replace('{w}/opt', '{w}/notokenizer')} --overwrite", 2,
     "has no usable tokenizer (its vocabulary has 1 tokens"),
    ("overwrite the run that holds the data", f"{RUN.replace('{w}/new', '{w}/oldrun')} --overwrite "
     f"--data {{w}}/oldrun/mine.csv --test-file none", 2, "which holds --data {w}/oldrun/mine.csv; it is left alone"),
    ("overwrite the run that holds the model",
     "run --model {w}/oldrun/opt --no-report --out {w}/oldrun --overwrite", 2, "which holds --model {w}/oldrun/opt"),
    ("overwrite a parent of the model", "run --model {w}/opt --no-report --out {w} --overwrite", 2,
     "is not a sendit run folder"),
    ("out below a file", f"{RUN.replace('{w}/new', '{w}/afile.txt/sub')}", 2, "is a file (Not a directory)"),
    ("out is a file", f"{RUN.replace('{w}/new', '{w}/afile.txt')}", 2, "is a file; the run folder must be a folder"),
    ("resume a corrupt run.json", "run --resume {w}/corrupt", 2, "is damaged (not valid JSON"),
    ("resume a run.json that is a list", "run --resume {w}/listrun", 2, "not a sendit run manifest (a JSON list"),
    ("resume somebody else's run.json", "run --resume {w}/other", 2, "no run.json with a config there"),
    ("export over photos", "export {w}/oldrun/lora --out {w}/photos --overwrite", 2, "is not a sendit export"),
    ("export over the run that holds the model", "export {w}/oldrun/lora --out {w}/oldrun --overwrite", 2,
     "holds the model folder being exported"),
    ("export over a file", "export {w}/oldrun/lora --out {w}/afile.txt --overwrite", 2, "is a file, which an export"),
    ("export into itself", "export {w}/oldrun/lora --out {w}/oldrun/lora --overwrite", 2,
     "is the model folder being exported"),
    ("export over an earlier export, no flag", "export {w}/oldrun/lora --out {w}/oldexport", 2, "Pass --overwrite"),
    # evaluate / predict flags and inputs, checked before the model loads.
    ("evaluate batch size 0", "evaluate {w}/oldrun/lora --data {w}/tweets.csv --batch-size 0", 2,
     "--batch-size must be at least 1 (got 0)"),
    ("evaluate batch size not a number", "evaluate {w}/oldrun/lora --data {w}/tweets.csv --batch-size abc", 2,
     "invalid int value: 'abc'"),
    ("evaluate a missing file", "evaluate {w}/oldrun/lora --data {w}/typo.csv", 2, "does not exist"),
    ("predict batch size 0", "predict {w}/oldrun/lora 'so happy' --batch-size 0", 2, "--batch-size must be at least 1"),
    ("predict chunk size 0", "predict {w}/oldrun/lora --input {w}/texts.csv --chunk-size 0", 2,
     "--chunk-size must be at least 1"),
    ("predict a header-only file", "predict {w}/oldrun/lora --input {w}/header_only.csv", 2,
     "has a header but no rows"),
    ("predict onto its input", "predict {w}/oldrun/lora --input {w}/prior.csv --output {w}/prior.csv", 2,
     "is the --input file"),
    ("predict onto a user's file", "predict {w}/oldrun/lora --input {w}/texts.csv --output {w}/prior.csv", 2,
     "is not an output of sendit predict"),
    ("predict into a folder", "predict {w}/oldrun/lora --input {w}/texts.csv --output {w}/photos", 2, "is a folder"),
    # Reports of damaged CSV files.
    ("report with words in a number column", "report {w}/badreport", 2,
     "lora_results.csv, line 2: column 'best_val_f1' holds 'abc', not a number"),
    ("report of a garbage CSV", "report {w}/garbagereport", 2, "is not a readable CSV file"),
]


def run_cli(capsys, argv: list[str]) -> tuple[int, str]:
    """The CLI's exit code and stderr; argparse's own exit (bad flag syntax) counts as its code."""
    try:
        code = main(argv)
    except SystemExit as e:
        code = e.code
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    return code, err


def snapshot(root: Path, names: list[str]) -> dict:
    files = {}
    for name in names:
        path = root / name
        for f in [path] if path.is_file() else sorted(path.rglob("*")):
            files[str(f.relative_to(root))] = f.read_bytes() if f.is_file() else "dir"
    return files


@pytest.mark.parametrize("name, command, code, phrase", CASES, ids=[c[0] for c in CASES])
def test_misuse(world, capsys, name, command, code, phrase):
    before = snapshot(world, TREE)
    got, err = run_cli(capsys, shlex.split(command.replace("{w}", str(world))))
    assert got == code, err
    assert phrase.replace("{w}", str(world)) in err, err
    if code == 2 and "invalid int value" not in phrase:  # argparse's usage lines come first; ours is one paragraph
        lines = err.rstrip().splitlines()
        assert lines[-1].startswith(f"sendit {command.split()[0]}: error: "), err
    assert snapshot(world, TREE) == before
    assert not (world / "new").exists()  # refused before the run folder was made


def test_predict_stdin_empty_or_closed(world, capsys, monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"")))  # < /dev/null
    code, err = run_cli(capsys, ["predict", str(world / "oldrun" / "lora"), "--input", "-"])
    assert code == 2 and "the input is empty" in err
    monkeypatch.setattr(sys, "stdin", None)  # <&- : Python sets sys.stdin to None
    code, err = run_cli(capsys, ["predict", str(world / "oldrun" / "lora"), "--input", "-"])
    assert code == 2 and "stdin is closed" in err


def test_rows_that_are_no_tweet_are_dropped_and_counted(world, capsys):
    path = world / "mixed.jsonl"
    rows = [{"text": "a good day", "label": 4}, {"text": "a bad day", "label": 0}, {"text": None, "label": 0},
            {"text": {"a": 1}, "label": 0}, {"text": [1], "label": 4}, {"text": 42, "label": 4},
            {"text": "42", "label": 4}, {"text": "   ", "label": 0}]
    path.write_text("\n".join(map(json.dumps, rows)) + "\n")
    assert main(["data", str(path), "--bad-rows", "skip"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["rows"] == 3  # "42" written as a string is a (short) tweet
    assert info["dropped"] == {"missing_text": 1, "not_text": 3, "empty_text": 1}


def test_label_map_resolves_ambiguous_labels(world, capsys):
    code = main(["data", str(world / "tweeteval.csv"), "--bad-rows", "error"])
    assert code == 2
    capsys.readouterr()
    from sendit.config.schema import DataConfig
    from sendit.data.reading import read_table

    table = read_table(world / "tweeteval.csv", DataConfig(label_map={0: "negative", 1: "neutral", 2: "positive"}))
    assert table.labels.tolist() == [0, 1] * 10 and table.dropped == {"neutral": 10}
    # Sentiment140's 0/2/4 and binary 0/1 need no map; 0/1/2/4 is Sentiment140 with a 1 for positive.
    for labels, expected in (((0, 4), [0, 1]), ((0, 1), [0, 1]), ((0, 2, 4), [0, 1]), ((0, 1, 2, 4), [0, 1, 1])):
        table = read_table(tweets_csv(world / "ok.csv", labels, n=len(labels) * 2), DataConfig())
        assert table.labels.tolist()[: len(expected)] == expected


def test_fraction_sizes_always_add_up():
    over = 0
    for n in range(1, 5001):
        sizes = split_sizes([0.98, 0.01, 0.01], n)
        assert sum(sizes) == n  # 0.98 + 0.01 + 0.01 = 1: every row, never one more
        over += sum(int(round(f * n)) for f in (0.98, 0.01, 0.01)) > n
    assert over > 1000  # rounding each on its own overshoots for about a quarter of row counts
    assert split_sizes([4000, 0.5, 0.25], 10000) == [4000, 5000, 2500]


def test_paper_config_splits_its_rows(tmp_path):
    from sendit.config.schema import load_config
    from sendit.data.dataset import load_splits

    path = tweets_csv(tmp_path / "t.csv", n=403)  # 0.98/0.01/0.01 of 403 rounds to 395 + 4 + 4 = 403 rows
    cfg = load_config(Path(__file__).parents[1] / "configs" / "paper.yaml", {"data": str(path), "test_file": "none"})
    splits = load_splits(cfg.data)
    assert len(splits.train) + len(splits.val) + len(splits.test) == 403


# ------------------------------------------------------------------------------------------------ one writer
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


# ------------------------------------------------------------------------------------------------ failures in a run
def test_full_disk_while_saving_a_checkpoint_keeps_the_last_good_one(tmp_path):
    from helpers import tiny_training_state

    from sendit.train import checkpoint
    from sendit.train.checkpoint import load_checkpoint, save_checkpoint
    from sendit.train.engine import FitResult

    model, optimizer, scheduler = tiny_training_state()
    best = {n: p.detach().clone() for n, p in model.named_parameters()}
    save_checkpoint(tmp_path, 1, model, optimizer, scheduler, vars(FitResult(best_epoch=1)), best, 0)
    good = {p.name: p.read_bytes() for p in tmp_path.iterdir()}

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    for target in ("save_file", "torch_save", "second_save_file"):
        calls = {"n": 0}
        original = checkpoint.save_file

        def second_save_file(*args, **kwargs):
            calls["n"] += 1
            return original(*args, **kwargs) if calls["n"] == 1 else full()

        patches = {"save_file": ("save_file", full), "second_save_file": ("save_file", second_save_file)}
        with pytest.MonkeyPatch.context() as mp:
            if target == "torch_save":
                mp.setattr(checkpoint.torch, "save", full)
            else:
                mp.setattr(checkpoint, patches[target][0], patches[target][1])
            with pytest.raises(OSError) as info:
                save_checkpoint(tmp_path, 2, model, optimizer, scheduler, vars(FitResult(best_epoch=2)), best, 0)
        assert info.value.errno == errno.ENOSPC
        assert "No space left on device while saving the checkpoint of epoch 2" in str(info.value)
        assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == good  # the partial epoch-2 files are gone
    model2, optimizer2, scheduler2 = tiny_training_state()
    assert load_checkpoint(tmp_path, model2, optimizer2, scheduler2)[0] == 2  # epoch 1's checkpoint still loads


def test_full_disk_in_a_run_exits_1_and_says_how_to_resume(world, capsys, monkeypatch):
    from sendit.train import checkpoint

    saves = {"n": 0}
    original = checkpoint.torch.save

    def full_on_second_epoch(obj, f, *args, **kwargs):
        saves["n"] += 1
        if saves["n"] == 2:
            raise RuntimeError("[enforce fail at inline_container.cc:672] . PytorchStreamWriter failed writing file "
                               "data/0: file write failed")  # what torch.save says on a full disk
        return original(obj, f, *args, **kwargs)

    monkeypatch.setattr(checkpoint.torch, "save", full_on_second_epoch)
    out = world / "run"
    code, err = run_cli(capsys, ["run", "--model", str(world / "opt"), "--data", str(world / "forty.csv"),
                                 "--test-file", "none", "--train-size", "20", "--val-size", "8", "--test-size", "8",
                                 "--methods", "head", "--epochs", "3", "--patience", "9", "--batch-size", "10",
                                 "--out", str(out), "--no-report"])
    assert code == 1, err
    last = err.rstrip().splitlines()[-1]
    assert "No space left on device while saving the checkpoint of epoch 2" in last
    assert f"continue a run with --resume {out}" in last
    ckpt = out / ".checkpoints" / "head-seed0"
    assert sorted(p.name for p in ckpt.iterdir()) == ["best-epoch1.safetensors", "state.pt",
                                                      "trainable-epoch1.safetensors"]


def test_interrupt_names_the_run_folder_only_when_a_run_was_interrupted(world, capsys, monkeypatch):
    import sendit.recipes.compare

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(sendit.recipes.compare, "train_method", interrupted)
    out = world / "run"
    code, err = run_cli(capsys, ["run", "--model", str(world / "opt"), "--data", str(world / "forty.csv"),
                                 "--test-file", "none", "--train-size", "20", "--val-size", "8", "--test-size", "8",
                                 "--methods", "head", "--batch-size", "8", "--out", str(out), "--no-report"])
    assert code == 130 and f"continue a run with --resume {out}." in err
    assert json.loads((out / "run.json").read_text())["sendit"]["kind"] == "run"  # the mark --overwrite checks
    monkeypatch.setattr(pd, "read_csv", interrupted)
    code, err = run_cli(capsys, ["report", str(world / "oldrun")])
    assert code == 130 and err.strip() == "sendit report: interrupted."


def test_file_errors_outside_a_run_give_no_resume_hint(world, capsys):
    code, err = run_cli(capsys, ["report", str(world / "oldrun"), "--out", str(world / "afile.txt" / "rep")])
    assert code == 2 and "--resume" not in err and "sendit report: error:" in err


def test_an_export_overwrite_replaces_only_an_export(world, capsys, monkeypatch):
    from sendit.serve import export as export_module

    seen = {}

    def fake_load(src, **kwargs):
        seen["loaded"] = src
        raise KeyboardInterrupt  # stop after the checks: what matters is that they let it through

    monkeypatch.setattr("sendit.serve.model_folder.load", fake_load)
    code, err = run_cli(capsys, ["export", str(world / "oldrun" / "lora"), "--out", str(world / "oldexport"),
                                 "--overwrite"])
    assert code == 130 and seen["loaded"] == world / "oldrun" / "lora"
    assert (world / "oldexport" / "sendit_model.json").exists()  # interrupted before the swap: left as it was
    assert export_module._is_export(world / "oldexport") and not export_module._is_export(world / "oldrun" / "lora")
