"""`sendit predict` and `sendit.load(...).predict(...)`: streaming a CSV in bounded memory with its rows, columns
and order kept, stdin/stdout, atomic output, CSV quirks, and the Python API."""

from __future__ import annotations

import csv
import gzip
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers import LIBRARY_NOISE, captured_fds, decided, paths_atol, run_cli, save_tiny_opt, tiny_run_args

import sendit
from sendit.cli import main
from sendit.config.schema import DataConfig
from sendit.data.reading import embedded_path, read_source
from sendit.errors import DataError
from sendit.serve.predict import predict_csv

SENDIT = [sys.executable, "-m", "sendit.cli"]
ONE_THREAD = {**os.environ, "OMP_NUM_THREADS": "1"}  # the same for subprocesses
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    """A sendit model folder (method 'full') around an untrained tiny OPT: no training needed to predict."""
    from sendit.run.model_folder import save_model_folder
    from sendit.train.models import load_tokenizer

    root = tmp_path_factory.mktemp("predict")
    base = save_tiny_opt(root / "tiny-opt", seed=3)
    tok = load_tokenizer(str(base))
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(base)
    save_model_folder(model, tok, root / "full", "full", str(base), {"max_length": 64, "normalize": True})
    return root / "full"


@pytest.fixture(scope="module")
def model(model_dir):
    return sendit.load(model_dir)


@pytest.fixture(scope="module")
def tweets() -> list[str]:
    return read_source("embedded", DataConfig(normalize=False)).texts[:500]


def test_python_api(model, model_dir):
    out = sendit.load(model_dir).predict(["so happy today", "@bob this is awful http://x.co", ""])
    assert [set(d) for d in out] == [{"label", "label_name", "prob_positive"}] * 3
    for d in out:
        assert d["label"] == int(d["prob_positive"] >= 0.5)
        assert d["label_name"] == ("positive" if d["label"] else "negative")
    one = model.predict("so happy today")  # a single string is one text, not a list of characters
    assert len(one) == 1 and one[0] == out[0]
    # Tweets are normalised as in training: another mention or URL gives the same prediction.
    other = model.predict(["@carol this is awful https://y.org/z"])[0]
    assert other["prob_positive"] == pytest.approx(out[1]["prob_positive"], abs=1e-6)


def test_cli_texts_print_csv(model_dir, capsys):
    assert main(["predict", str(model_dir), "so happy", "so sad, it hurts"]) == 0
    out = pd.read_csv(io.StringIO(capsys.readouterr().out))
    assert list(out.columns) == ["text", "prediction", "prob_positive"]
    assert out["text"].tolist() == ["so happy", "so sad, it hurts"]
    assert (out["prediction"] == (out["prob_positive"] >= 0.5)).all()


def test_csv_keeps_rows_columns_and_order_and_handles_quirks(model, tmp_path, tweets):
    texts = tweets[:40] + ["", "multi\nline, with \"quotes\"", "caf\u00e9 \U0001f600"]
    src = tmp_path / "in.csv"
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["id", "label", "text", "note"])
    w.writerows([[f"{i:05d}", i % 2, t, "NA" if i % 3 else ""] for i, t in enumerate(texts)])
    # A latin-1 byte (Sentiment140's encoding) in an otherwise UTF-8 file is read as latin-1, not an error.
    src.write_bytes(buf.getvalue().encode("utf-8") + b"99999,1,na\xefve latin-1,x\r\n")
    out = tmp_path / "out" / "pred.csv"
    assert predict_csv(model, str(src), str(out), chunk_size=7, batch_size=4) == len(texts) + 1
    df = pd.read_csv(out, dtype=str, keep_default_na=False)
    assert list(df.columns) == ["id", "label", "text", "note", "prediction", "prob_positive"]
    assert df["id"].tolist() == [f"{i:05d}" for i in range(len(texts))] + ["99999"]  # order and leading zeros kept
    assert df["text"].tolist() == texts + ["na\u00efve latin-1"]
    assert df["note"].tolist()[:4] == ["", "NA", "NA", ""]  # "NA" stays text, not a missing value
    expected = model.predict_proba(df["text"].tolist()).probs[:, 1]  # one call, other batches than the chunks
    atol = paths_atol(1e-6)
    np.testing.assert_allclose(df["prob_positive"].astype(float), expected, atol=atol)
    sure = decided(expected, atol)
    assert (df["prediction"].astype(int)[sure] == (expected >= 0.5)[sure]).all()
    umask = os.umask(0)
    os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o666 & ~umask  # like any file the user writes, not mkstemp's 0600


def test_headerless_sentiment140_file(model, tmp_path):
    with gzip.open(embedded_path("sentiment140_sample.csv.gz"), "rt", encoding="latin-1") as f:
        lines = [next(f) for _ in range(30)]
    src = tmp_path / "s140.csv.gz"
    with gzip.open(src, "wt", encoding="latin-1") as f:
        f.writelines(lines)
    out = tmp_path / "s140-pred.csv"
    assert predict_csv(model, str(src), str(out)) == 30
    df = pd.read_csv(out, dtype=str, keep_default_na=False)
    assert list(df.columns) == ["target", "id", "date", "query", "user", "text", "prediction", "prob_positive"]
    assert df["text"].tolist() == [r[5] for r in csv.reader(lines)]


def test_bad_inputs_are_data_errors_and_leave_no_output(model, tmp_path, capsys, model_dir):
    good = tmp_path / "good.csv"
    pd.DataFrame({"tweet": ["a", "b"]}).to_csv(good, index=False)
    out = tmp_path / "out.csv"
    with pytest.raises(DataError, match="no 'text' column.*--text-column"):
        predict_csv(model, str(good), str(out))
    assert predict_csv(model, str(good), str(out), text_column="tweet") == 2
    with pytest.raises(DataError, match="already has a 'prediction' column"):
        predict_csv(model, str(out), str(tmp_path / "again.csv"), text_column="tweet")

    # A malformed row after the first chunks: nothing half-written replaces the previous output.
    broken = tmp_path / "broken.csv"
    broken.write_text("text\n" + "".join(f"row {i}\n" for i in range(20)) + '"never closed\n')
    before = out.read_bytes()
    with pytest.raises(DataError):
        predict_csv(model, str(broken), str(out), chunk_size=5)
    assert out.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken.csv", "good.csv", "out.csv"]

    empty = tmp_path / "empty.csv"
    empty.write_text("")
    assert main(["predict", str(model_dir), "--input", str(empty)]) == 2
    assert "empty" in capsys.readouterr().err
    assert main(["predict", str(model_dir), "--input", str(tmp_path / "missing.csv")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_stdin_to_stdout_composes_with_pipes(model, model_dir, tmp_path, tweets):
    src = tmp_path / "in.csv"
    pd.DataFrame({"id": range(100), "text": tweets[:100]}).to_csv(src, index=False)
    expected = tmp_path / "expected.csv"
    predict_csv(model, str(src), str(expected), chunk_size=64)
    run = subprocess.run([*SENDIT, "predict", str(model_dir), "--input", "-", "--output", "-", "--chunk-size", "64"],
                         input=src.read_bytes(), capture_output=True, timeout=300, check=False,
                         env=ONE_THREAD)
    assert run.returncode == 0, run.stderr.decode()
    assert run.stdout == expected.read_bytes()
    assert b"predicted 100 rows" in run.stderr


# A fresh interpreter predicts a small file first (so the model, the tokenizer and one chunk's buffers are
# counted), then the big one; the growth of the peak RSS (VmHWM) is what the big file cost on top. The default
# test uses a stand-in model whose prob_positive is a function of the text (fast, and it shows every prediction
# stayed with its row); the slow one predicts with a real (tiny OPT) sendit model.
MEMORY_SCRIPT = """
import json, sys
import numpy as np
import sendit
from sendit.train.engine import Predictions
from sendit.serve.predict import predict_csv

def peak_rss() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM"))

class Fake:
    def predict_proba(self, texts, batch_size, progress=True):
        p = np.array([len(t) % 100 / 100 for t in texts], dtype=np.float32)
        return Predictions(np.log(np.stack([1 - p, p], 1) + 1e-9), 0.0, 0)  # logits whose softmax is (1 - p, p)

folder, small, big, out, chunk = sys.argv[1:]
model = Fake() if folder == "fake" else sendit.load(folder)  # loaded once: a second load would count as growth
predict_csv(model, small, out + ".small", chunk_size=int(chunk))
before = peak_rss()
predict_csv(model, big, out, chunk_size=int(chunk))
print(json.dumps({"before": before, "after": peak_rss()}))
"""


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads VmHWM from /proc")
@pytest.mark.parametrize("which", ["fake", pytest.param("tiny-opt", marks=pytest.mark.slow)])
def test_200k_rows_stream_in_bounded_memory_and_keep_order(which, model_dir, tmp_path, tweets):
    n, chunk = 200_000, 5_000
    pick = np.random.default_rng(0).integers(0, len(tweets), n)
    big, small = tmp_path / "big.csv", tmp_path / "small.csv"
    for path, rows in ((big, n), (small, 8 * chunk)):  # 8 chunks: the allocator has settled (2 leave ~12 MB)
        with open(path, "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(["id", "text", "context"])  # a wide column makes the file large next to fixed overheads
            w.writerows([i, tweets[j], tweets[j - 1] + " | " + tweets[j - 2]] for i, j in enumerate(pick[:rows]))
    out = tmp_path / "big-pred.csv"
    model = "fake" if which == "fake" else str(model_dir)
    run = subprocess.run([sys.executable, "-c", MEMORY_SCRIPT, model, str(small), str(big), str(out), str(chunk)],
                         capture_output=True, text=True, timeout=1800, env=ONE_THREAD, check=False)
    assert run.returncode == 0, run.stderr
    rss = json.loads(run.stdout.strip().splitlines()[-1])
    growth, size = rss["after"] - rss["before"], big.stat().st_size
    print(f"{which}: file {size / 2**20:.1f} MB, peak RSS {rss['before'] / 2**20:.0f} -> {rss['after'] / 2**20:.0f} MB")
    # Measured: the whole 45 MB file in one chunk grows the peak by 187 MB; streamed in chunks of 5,000 rows, by
    # 0-3 MB (allocator noise, not growing with the file: 1.7 MB at 100k rows, 0.0 at 400k).
    assert growth < size / 4, f"peak RSS grew {growth / 2**20:.1f} MB for a {size / 2**20:.1f} MB file"
    df = pd.read_csv(out, dtype={"text": str}, keep_default_na=False)
    np.testing.assert_array_equal(df["id"].to_numpy(), np.arange(n))
    assert df["text"].tolist() == [tweets[j] for j in pick]
    assert df["prediction"].isin([0, 1]).all() and len(df) == n
    if which == "fake":
        np.testing.assert_allclose(df["prob_positive"], [len(tweets[j]) % 100 / 100 for j in pick], atol=1e-6)


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet", ".jsonl.gz"])
def test_jsonl_and_parquet_stream_like_csv(model, model_dir, tmp_path, tweets, suffix, capsys):
    """The same rows as JSON lines or Parquet, read in chunks that do not divide them, give the CSV's columns and
    predictions; a null text is the empty text and a number its spelling, as a CSV cell would hold them."""
    frame = pd.DataFrame({"id": range(23), "tweet": tweets[:21] + [None, 42], "label": [i % 2 for i in range(23)]})
    as_csv = frame.assign(tweet=frame["tweet"].map(lambda t: "" if t is None else str(t)))
    as_csv.to_csv(tmp_path / "in.csv", index=False)
    src = tmp_path / f"in{suffix}"
    if suffix == ".parquet":
        frame.assign(tweet=frame["tweet"].map(lambda t: t if t is None else str(t))).to_parquet(src)  # typed
    else:
        text = frame.to_json(orient="records", lines=True)
        src.write_bytes(gzip.compress(text.encode()) if suffix.endswith(".gz") else text.encode())
    expected = tmp_path / "expected.csv"
    assert predict_csv(model, str(tmp_path / "in.csv"), str(expected), text_column="tweet") == 23
    out = tmp_path / "out.csv"
    argv = ["predict", str(model_dir), "--input", str(src), "--output", str(out), "--text-column", "tweet",
            "--chunk-size", "5", "--batch-size", "4"]
    assert main(argv) == 0, capsys.readouterr().err
    got, want = pd.read_csv(out, keep_default_na=False), pd.read_csv(expected, keep_default_na=False)
    assert list(got.columns) == ["id", "tweet", "label", "prediction", "prob_positive"] == list(want.columns)
    assert got["id"].tolist() == list(range(23)) and got["tweet"].tolist()[-2:] == ["", "42"]
    np.testing.assert_allclose(got["prob_positive"], want["prob_positive"], atol=paths_atol(1e-6))
    sure = decided(want["prob_positive"].to_numpy(), paths_atol(1e-6))
    assert (got["prediction"][sure] == want["prediction"][sure]).all()


def test_jsonl_and_parquet_inputs_are_checked_like_csv(model_dir, tmp_path, capsys):
    jsonl = tmp_path / "in.jsonl"
    jsonl.write_text('{"tweet": "so happy"}\n')
    assert main(["predict", str(model_dir), "--input", str(jsonl)]) == 2
    assert "no 'text' column in the header (found tweet). Pass --text-column NAME" in capsys.readouterr().err
    pd.DataFrame({"text": ["a"], "prediction": [1]}).to_parquet(tmp_path / "old.parquet")
    assert main(["predict", str(model_dir), "--input", str(tmp_path / "old.parquet")]) == 2
    assert "already has a 'prediction' column" in capsys.readouterr().err
    jsonl.write_text('{"text": "so happy"}\n{"text": broken\n')
    assert main(["predict", str(model_dir), "--input", str(jsonl)]) == 2
    err = capsys.readouterr().err
    assert f"--input {jsonl}: could not be read" in err and "Traceback" not in err
    jsonl.write_text("")
    assert main(["predict", str(model_dir), "--input", str(jsonl)]) == 2
    assert "the input is empty" in capsys.readouterr().err


@pytest.mark.usefixtures("one_thread")
def test_predict_stdin_empty_or_closed(world, capsys, monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"")))  # < /dev/null
    code, err = run_cli(capsys, ["predict", str(world / "oldrun" / "lora"), "--input", "-"])
    assert code == 2 and "the input is empty" in err
    monkeypatch.setattr(sys, "stdin", None)  # <&- : Python sets sys.stdin to None
    code, err = run_cli(capsys, ["predict", str(world / "oldrun" / "lora"), "--input", "-"])
    assert code == 2 and "stdin is closed" in err


@pytest.mark.usefixtures("one_thread")
def test_predict_is_quiet_and_verbose_shows_the_libraries(custom_run, tmp_path):
    model = str(custom_run["run"] / "lora")
    with captured_fds() as quiet:
        assert main(["predict", model, "so happy today"]) == 0
    assert "prob_positive" in quiet["stdout"]
    for noise in LIBRARY_NOISE:
        assert noise not in quiet["stdout"] + quiet["stderr"], noise
    assert "new classification head" not in quiet["stdout"]  # a trained model's head is loaded, not new
    with captured_fds() as verbose:
        assert main(["predict", model, "so happy today", "-v"]) == 0
    assert "MISSING" in verbose["stderr"]  # transformers' own report, kept for -v
    with captured_fds() as silent:
        assert main(["-q", "run", *tiny_run_args(Path(model).parent.parent / "opt-base", tmp_path / "run-q", "head",
                                                 "--epochs", "1")[1:]]) == 0
    assert silent["stdout"] == "" and "epoch" not in silent["stderr"]


@pytest.mark.usefixtures("one_thread")
def test_the_python_api_is_listed_and_a_model_prints_in_one_line(custom_run):
    import sendit

    assert {"load", "run", "evaluate", "export", "build_report", "load_config", "__version__"} <= set(dir(sendit))
    with captured_fds() as out:
        model = sendit.load(custom_run["run"] / "lora", precision="fp32")
        model.predict(["so happy today"])
    assert "FutureWarning" not in out["warnings"] and "MISSING" not in out["stderr"]
    text = repr(model)
    assert "\n" not in text and len(text) < 200
    assert text.startswith("SenditModel(method='lora', base_model=") and "precision='fp32', device='cpu'" in text
