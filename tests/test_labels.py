"""Any label set: how label values become classes (labels.py, rows.py), the k-class metrics, class balance, and
the messages for label sets sendit cannot read. No models: milliseconds each."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch
from helpers import tweets_csv, user_error

from sendit.cli import main
from sendit.config.schema import DataConfig, load_config
from sendit.data.dataset import load_splits, stratified_split
from sendit.data.reading import read_source, read_table, read_test_file
from sendit.errors import ConfigError, DataError
from sendit.train.engine import class_weights, cross_entropy, training_loss
from sendit.train.metrics import classification_metrics, confusion_matrix

THREE = ["negative", "neutral", "positive"]


def _table(tmp_path, rows: str, **cfg):
    path = tmp_path / "t.csv"
    path.write_text("label,text\n" + rows)
    return read_table(path, DataConfig(normalize=False, **cfg))


def test_sentiment140_keeps_its_neutral_class_with_labels():
    binary = read_test_file("embedded", DataConfig())
    assert binary.classes == ("negative", "positive") and len(binary) == 359 and binary.dropped["neutral"] == 139
    three = read_test_file("embedded", DataConfig(labels=THREE))
    assert three.classes == tuple(THREE) and len(three) == 498 and not three.dropped
    assert np.bincount(three.labels).tolist() == [177, 139, 182]
    assert read_source("sentiment140-manual", DataConfig(labels=THREE)).labels.tolist() == three.labels.tolist()


@pytest.mark.parametrize("rows, cfg, classes, ids, dropped", [
    # Word labels that are no sentiment labels are the classes, sorted, in the data's own spelling.
    ("joy,a\nanger,b\nFear,c\njoy,d\n", {}, ("anger", "Fear", "joy"), [2, 0, 1, 2], {}),
    # --labels fixes order and ids: names in any case, integers 0..k-1 as ids, Sentiment140's 0/2/4 by meaning.
    ("Positive,a\nneutral,b\nNEGATIVE,c\n", {"labels": THREE}, tuple(THREE), [2, 1, 0], {}),
    ("0,a\n1,b\n2,c\n", {"labels": THREE}, tuple(THREE), [0, 1, 2], {}),
    ("0,a\n2,b\n4,c\n", {"labels": THREE}, tuple(THREE), [0, 1, 2], {}),
    ("0,a\n2,b\n4,c\n", {"labels": ["neg", "pos"]}, ("neg", "pos"), [0, 1], {"neutral": 1}),
    ("0,a\n1,b\n2,c\n3,d\n4,e\n", {"labels": list("abcde")}, tuple("abcde"), [0, 1, 2, 3, 4], {}),
    # --label-map maps onto a name of --labels.
    ("meh,a\n0,b\n4,c\n", {"labels": THREE, "label_map": {"meh": "neutral"}}, tuple(THREE), [1, 0, 2], {}),
    # The default is unchanged: sentiment labels are binary, neutral dropped and counted.
    ("negative,a\nneutral,b\npositive,c\n", {}, ("negative", "positive"), [0, 1], {"neutral": 1}),
])
def test_label_values_become_class_ids(tmp_path, rows, cfg, classes, ids, dropped):
    t = _table(tmp_path, rows, **cfg)
    assert t.classes == classes and t.labels.tolist() == ids and dict(t.dropped) == dropped


@pytest.mark.parametrize("rows, cfg, expected", [
    ("0,a\n1,b\n2,c\n", {}, ["have no single reading", "--label-map", "--labels negative,neutral,positive"]),
    ("1,a\n2,b\n3,c\n4,d\n5,e\n", {}, ["--labels 1,2,3,4,5"]),
    ("negative,a\npositive,b\nmixed,c\n", {}, ["'mixed': 1 rows (first on line 4)",
                                               "--labels mixed,negative,positive", "--bad-rows skip"]),
    ("negative,a\nneutral,b\nmixed,c\n", {"labels": THREE}, ["labels outside the classes negative, neutral, positive",
                                                            "'mixed': 1 rows", "add them to --labels"]),
])
def test_label_sets_that_cannot_be_read_name_the_fix(tmp_path, rows, cfg, expected):
    with pytest.raises(DataError) as e:
        _table(tmp_path, rows, **cfg)
    assert all(x in str(e.value) for x in expected), str(e.value)


@pytest.mark.parametrize("flags, expected", [
    (["--labels", "negative"], "--labels negative: a classifier needs at least two classes"),
    (["--labels", "pos,Pos,neg"], "'pos' is given twice"),
    (["--labels", "a,b", "--label-map", "{x: c}"], "or a name of --labels (a, b)"),
])
def test_bad_label_flags_are_one_paragraph(capsys, tmp_path, flags, expected):
    assert expected in user_error(capsys, ["data", "embedded", *flags])
    assert expected in user_error(capsys, ["run", *flags, "--out", str(tmp_path / "never")])
    assert "--class-balance must be none, weight or sample" in user_error(
        capsys, ["run", "--class-balance", "oversample", "--out", str(tmp_path / "never")])


def test_labels_from_a_config_file_are_names(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("data:\n  labels: [0, 2, 4]\n")
    assert load_config(path).data.labels == ["0", "2", "4"]
    with pytest.raises(ConfigError):
        load_config(None, {"labels": "a,a"})


def test_splits_record_classes_and_counts_per_split(tmp_path):
    s = load_splits(DataConfig(data="sentiment140-manual", test_file="none", labels=THREE, train_size=0.6,
                               val_size=0.1, test_size=0.3))
    summary = s.summary()
    assert summary["labels"] == THREE and s.classes == tuple(THREE)
    assert {k: sum(v.values()) for k, v in summary["label_balance"].items()} == {
        k: summary["split_sizes"][k] for k in ("train", "val", "heldout")}
    binary = load_splits(DataConfig(train_size=200, val_size=50, test_size=50))
    assert binary.summary()["label_balance"]["test_file"] == {"negative": 177, "positive": 182}


def test_a_class_missing_from_training_is_refused(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("label,text\n" + "".join(f"{c},tweet {c} {i}\n" for c, n in (("a", 40), ("b", 40), ("c", 1))
                                             for i in range(n)))
    with pytest.raises(DataError, match="training split has no tweets of the class"):
        load_splits(DataConfig(data=str(path), test_file="none", train_size=20, val_size=5, test_size=5))


def test_balanced_sample_takes_equal_rows_per_class_and_leaves_the_default_draw_alone():
    labels = np.array([0] * 300 + [1] * 100 + [2] * 50)
    train, val, test = stratified_split(labels, [90, 30, 30], seed=1, balanced_first=True)
    assert np.bincount(labels[train]).tolist() == [30, 30, 30]
    assert len(set(train) | set(val) | set(test)) == 150
    plain = stratified_split(labels, [90, 30, 30], seed=1)
    assert np.bincount(labels[plain[0]]).tolist() == [60, 20, 10]
    assert [p.tolist() for p in plain] == [p.tolist() for p in stratified_split(labels, [90, 30, 30], seed=1)]


def test_class_weights_and_the_weighted_loss():
    labels = np.array([0] * 6 + [1] * 3 + [2] * 3)
    w = class_weights(labels, 3)
    assert torch.allclose(w, torch.tensor([12 / 18, 12 / 9, 12 / 9]))
    assert training_loss("none", labels, 3) is cross_entropy  # the default loss is the plain one, untouched
    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 0.0, 3.0]])
    batch = {"labels": torch.tensor([0, 1])}
    weighted, _ = training_loss("weight", labels, 3)(logits, batch)
    plain, _ = cross_entropy(logits, batch)
    per_row = torch.nn.functional.cross_entropy(logits, batch["labels"], reduction="none")
    assert torch.isclose(weighted, (per_row * w[[0, 1]]).sum() / w[[0, 1]].sum()) and not torch.isclose(weighted, plain)


def test_k_class_metrics():
    labels = np.array([0, 0, 1, 1, 2, 2, 2])
    preds = np.array([0, 1, 1, 1, 2, 0, 2])
    m = classification_metrics(labels, preds, 3)
    assert m["accuracy"] == pytest.approx(5 / 7)
    assert m["per_class"]["precision"] == pytest.approx([1 / 2, 2 / 3, 1.0])
    assert m["per_class"]["recall"] == pytest.approx([1 / 2, 1.0, 2 / 3])
    f1 = [0.5, 0.8, 0.8]
    assert m["f1_macro"] == pytest.approx(np.mean(f1)) and m["f1_weighted"] == pytest.approx(np.dot([2, 2, 3], f1) / 7)
    assert confusion_matrix(labels, preds, 3).tolist() == [[1, 1, 0], [0, 2, 0], [1, 0, 2]]
    five = classification_metrics(np.arange(5), np.arange(5), 5)
    assert len(five["per_class"]["f1"]) == 5 and five["f1_macro"] == 1.0
    # Two classes: what the binary metrics always gave (both classes count, an absent one too).
    assert classification_metrics(np.array([1, 1]), np.array([1, 1]))["f1_macro"] == 0.5


def test_sentiment_default_reading_is_unchanged(tmp_path):
    t = _table(tmp_path, "0,a\n4,b\n2,c\nneg,d\npos,e\n1,f\n")
    assert t.classes == ("negative", "positive") and t.labels.tolist() == [0, 1, 0, 1, 1]
    assert t.dropped == Counter({"neutral": 1})


@pytest.mark.usefixtures("one_thread")
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
