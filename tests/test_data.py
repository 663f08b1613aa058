"""Readers, normalisation and splits on the real embedded data."""

from __future__ import annotations

import json
import sys
import types

import numpy as np
import pandas as pd
import pytest

from sendit.config.schema import DataConfig
from sendit.errors import DataError
from sendit.data.dataset import Table, dedupe, load_splits, normalize_tweet, stratified_split
from sendit.data.reading import read_hub, read_source, read_table, read_test_file


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
