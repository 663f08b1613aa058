"""Readers, normalisation and splits on the real embedded data; training data that cannot make a run (one paragraph,
exit 2), split sizes that add up, test sets named after what they are."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers import _csv, save_tiny_opt, tiny_run_args, tweets, tweets_csv, user_error

from sendit.cli import main
from sendit.config.schema import DataConfig
from sendit.data.dataset import Table, dedupe, load_splits, normalize_tweet, split_sizes, stratified_split
from sendit.data.reading import read_hub, read_source, read_table, read_test_file
from sendit.errors import DataError


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """A tiny OPT classifier folder of this module's own (the typo and bad-input checks name it)."""
    return save_tiny_opt(tmp_path_factory.mktemp("opt"))


def test_hand_labelled_test_file_drops_and_counts_neutral():
    t = read_test_file("embedded", DataConfig())
    assert len(t) == 359
    assert t.dropped["neutral"] == 139
    assert (t.labels == 0).sum() == 177 and (t.labels == 1).sum() == 182


def test_embedded_sample_is_balanced_sentiment140():
    t = read_source("embedded", DataConfig())
    assert len(t) == 20_000
    assert set(np.unique(t.labels)) == {0, 1}
    assert (t.labels == 1).sum() == 10_000


def test_normalize_tweet():
    raw = "@Kenichan I dived &quot;many&quot; times http://twitpic.com/2y1zl  &amp; www.x.com ok"
    assert normalize_tweet(raw) == '@user I dived "many" times http & http ok'


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet", "sentiment140"])
def test_generic_formats(tmp_path, fmt):
    df = pd.DataFrame({"text": ["good day", "bad day", "meh", "great!"], "label": [4, 0, 2, 1]})
    path = tmp_path / f"d.{ 'csv' if fmt == 'sentiment140' else fmt}"
    if fmt == "csv":
        df.to_csv(path, index=False)
    elif fmt == "jsonl":
        df.to_json(path, orient="records", lines=True)
    elif fmt == "parquet":
        df.to_parquet(path)
    else:
        rows = [f'"{y}","{i}","Mon Apr 06 22:19:45 PDT 2009","NO_QUERY","u","{t}"' for i, (t, y) in
                enumerate(zip(df.text, df.label))]
        path.write_text("\n".join(rows) + "\n", encoding="latin-1")
    t = read_table(path, DataConfig())
    assert t.texts == ["good day", "bad day", "great!"]
    assert t.labels.tolist() == [1, 0, 1]
    assert t.dropped["neutral"] == 1


def test_word_labels_and_label_map(tmp_path):
    path = tmp_path / "d.csv"
    pd.DataFrame({"tweet": ["a", "b", "c"], "sentiment": ["positive", "negative", "happy"]}).to_csv(path, index=False)
    with pytest.raises(DataError, match="happy"):
        read_table(path, DataConfig())
    t = read_table(path, DataConfig(label_map={"happy": 4}))
    assert t.labels.tolist() == [1, 0, 1]


def test_dedupe_drops_duplicates_conflicts_and_test_overlap():
    t = Table(["a", "a", "b", "b", "c", "d"], np.array([1, 1, 0, 1, 0, 1]))
    out, dropped = dedupe(t, drop={"d"})
    assert out.texts == ["a", "c"]
    assert dropped == {"duplicate_text": 1, "conflicting_labels": 2, "overlaps_test_file": 1}


def test_stratified_split_sizes_and_balance():
    labels = np.array([0] * 300 + [1] * 700)
    parts = stratified_split(labels, [500, 100, 200], seed=3)
    assert [len(p) for p in parts] == [500, 100, 200]
    assert len(set(np.concatenate(parts))) == 800
    for p, n in zip(parts, [500, 100, 200]):
        assert abs(labels[p].mean() - 0.7) * n <= 1


def test_splits_are_deterministic_and_leak_free():
    cfg = DataConfig(train_size=3000, val_size=500, test_size=500)
    a, b = load_splits(cfg), load_splits(cfg)
    assert a.train.texts == b.train.texts and a.test.texts == b.test.texts
    sets = [set(a.train.texts), set(a.val.texts), set(a.test.texts), set(a.manual.texts)]
    for i in range(4):
        for j in range(i + 1, 4):
            assert not sets[i] & sets[j], (i, j)
    c = load_splits(DataConfig(train_size=3000, val_size=500, test_size=500, split_seed=1))
    assert c.train.texts != a.train.texts
    summary = json.loads(json.dumps(a.summary()))
    assert summary["split_sizes"] == {"train": 3000, "val": 500, "heldout": 500, "manual": 359}
    assert summary["dropped"]["data"]["duplicate_text"] > 0  # the pool has duplicates; they are counted


def test_fraction_sizes_and_too_large_sizes():
    s = load_splits(DataConfig(train_size=0.5, val_size=0.1, test_size=0.1))
    assert abs(len(s.train) - 5 * len(s.val)) <= 5 and len(s.val) == len(s.test) and len(s.train) > 9000
    with pytest.raises(DataError, match="Lower --train-size"):
        load_splits(DataConfig(train_size=30_000))


def test_hub_code_path_with_a_stand_in_datasets_module(monkeypatch):
    calls = {}

    def load_dataset(name, split):
        calls["args"] = (name, split)

        class DS:
            column_names = ["text", "date", "user", "sentiment", "query"]

            def __getitem__(self, col):
                return {"text": ["love it", "hate it", "whatever"], "sentiment": [4, 0, 2]}[col]

        return DS()

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))
    t = read_hub("stanfordnlp/sentiment140", DataConfig())
    assert calls["args"] == ("stanfordnlp/sentiment140", "train")
    assert t.texts == ["love it", "hate it"] and t.labels.tolist() == [1, 0] and t.dropped["neutral"] == 1


SMALL = ["--val-size", "4", "--test-size", "4", "--test-file", "none", "--no-report"]


@pytest.mark.parametrize("rows, flags, expected", [
    (tweets(60, 0, "rain") + tweets(2, 1, "sun"), ["--train-size", "10"],
     "the 10-row training split holds only negative tweets (the source has 60 negative and 2 positive"),
    (tweets(30, 1), ["--train-size", "10"], "only positive tweets (30 rows); a sentiment classifier needs both"),
    (tweets(10, 0, "rain") + tweets(10, 1, "sun"), ["--train-size", "30"],
     "need 38 rows but only 20 remain after dropping nothing"),
    (tweets(20, 0, "rain") + tweets(20, 1, "sun"), ["--train-size", "8", "--batch-size", "16"],
     "--batch-size 16 is larger than the 8 training rows"),
    (tweets(20, 0, "rain") + "happy,yay\n", ["--train-size", "8", "--label-map", "{happy: 7}"],
     "--label-map maps 'happy' to 7, which is not a label"),
])
def test_bad_training_data(tmp_path, capsys, model, rows, flags, expected):
    path = _csv(tmp_path, rows)
    msg = user_error(capsys, ["run", "--model", str(model), "--data", str(path), "--out", str(tmp_path / "r"),
                              *SMALL, *flags])
    assert expected in msg


@pytest.mark.usefixtures("one_thread")
def test_fraction_sizes_always_add_up():
    over = 0
    for n in range(1, 5001):
        sizes = split_sizes([0.98, 0.01, 0.01], n)
        assert sum(sizes) == n  # 0.98 + 0.01 + 0.01 = 1: every row, never one more
        over += sum(int(round(f * n)) for f in (0.98, 0.01, 0.01)) > n
    assert over > 1000  # rounding each on its own overshoots for about a quarter of row counts
    assert split_sizes([4000, 0.5, 0.25], 10000) == [4000, 5000, 2500]


@pytest.mark.usefixtures("one_thread")
def test_paper_config_splits_its_rows(tmp_path):
    from sendit.config.schema import load_config
    from sendit.data.dataset import load_splits

    path = tweets_csv(tmp_path / "t.csv", n=403)  # 0.98/0.01/0.01 of 403 rounds to 395 + 4 + 4 = 403 rows
    cfg = load_config(Path(__file__).parents[1] / "configs" / "paper.yaml", {"data": str(path), "test_file": "none"})
    splits = load_splits(cfg.data)
    assert len(splits.train) + len(splits.val) + len(splits.test) == 403


@pytest.mark.usefixtures("one_thread")
def test_a_custom_test_file_is_named_after_the_file(custom_run):
    assert custom_run["rc"] == 0, custom_run["stderr"]
    summary = pd.read_csv(custom_run["run"] / "lora_inference_metrics_summary.csv")
    assert summary.test_set.tolist() == ["my_tweets", "held-out split"]
    preds = pd.read_csv(custom_run["run"] / "lora_inference_predictions.csv")
    assert set(preds.test_set) == {"my_tweets", "held-out split"}
    assert "lora (seed 0) on my_tweets (359 tweets): accuracy" in custom_run["stdout"]
    assert "manual" not in custom_run["stdout"] and "heldout" not in custom_run["stdout"]


@pytest.mark.usefixtures("one_thread")
def test_test_name_flag_names_the_test_set(tiny_opt, tmp_path):
    args = tiny_run_args(tiny_opt, tmp_path / "r", "head", "--test-name", "Go et al. 2009", "--epochs", "1")
    assert main(args) == 0
    summary = pd.read_csv(tmp_path / "r" / "head_inference_metrics_summary.csv")
    assert summary.test_set.tolist() == ["Go et al. 2009", "held-out split"]
    assert main(tiny_run_args(tiny_opt, tmp_path / "r2", "head", "--test-name", "held-out split")) == 2
