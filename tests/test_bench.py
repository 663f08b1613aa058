"""`sendit bench` on a tiny OPT: it runs every engine and writes well-formed JSON/CSV with the ratio columns.
Speed itself is never asserted here; the benchmark prints it."""

from __future__ import annotations

import json
import math
import statistics

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import OPT_TOKENIZER

from sendit.bench import SUMMARY_COLUMNS, BenchConfig, format_table, opt_tokenizer, summarize, validate
from sendit.cli import main
from sendit.config import ConfigError
from sendit.models import ModelError


@pytest.fixture(scope="module")
def bench_out(tiny_opt, tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "results"
    args = ["bench", "--model", str(tiny_opt), "--methods", "bitfit,lora", "--batch-size", "8",
            "--pool", "64", "--steps", "2", "--infer-tweets", "16", "--repeats", "2", "--device", "cpu",
            "--out", str(out),
            "--accuracy-check", "--accuracy-model", str(tiny_opt), "--accuracy-train", "16", "--accuracy-val", "16",
            "--threads", "1"]  # one thread: on a busy 2-core machine two OpenMP threads stall each other
    threads = torch.get_num_threads()
    try:
        assert main(args) == 0
    finally:
        torch.set_num_threads(threads)
    return out


def test_json_has_every_engine_and_repetition(bench_out):
    res = json.loads(bench_out.with_suffix(".json").read_text())
    assert res["device"] == "cpu" and res["settings"]["repeats"] == 2 and res["hardware"]["cores"]
    got = {(m["method"], m["phase"], m["engine"]) for m in res["measurements"]}
    for method in ("bitfit", "lora"):
        for engine in ("sendit", "trainer-tuned", "trainer-naive"):
            assert (method, "train", engine) in got
        assert (method, "infer", "pipeline") in got
        assert (method, "accuracy", "sendit") in got and (method, "accuracy", "trainer-tuned") in got
    # merged and unmerged only where there is an adapter to merge
    assert {("lora", "infer merged", "sendit"), ("lora", "infer unmerged", "sendit"),
            ("bitfit", "infer", "sendit")} <= got
    assert ("bitfit", "infer merged", "sendit") not in got
    mean_length = res["settings"]["pool_mean_tokens"]
    assert res["settings"]["pool"] == 64 and 5 < mean_length < 60
    for m in res["measurements"]:
        rates = [(n / t, k / t) for n, k, t in zip(m["pass_tweets"], m["pass_tokens"], m["seconds"])]
        assert m["tokens_per_sec"] == pytest.approx(statistics.median(k for _, k in rates))
        if m["rated_by"] == "tokens":  # grouped training engines: tweets/s at the pool's mean length
            assert m["tweets_per_sec"] == pytest.approx(m["tokens_per_sec"] / mean_length)
        else:
            assert m["tweets_per_sec"] == pytest.approx(statistics.median(n for n, _ in rates))
        assert all(k > n > 0 for n, k in zip(m["pass_tweets"], m["pass_tokens"]))
        if m["phase"] != "accuracy":
            assert len(m["seconds"]) == 2 and all(s > 0 for s in m["seconds"])  # warm-up pass dropped
        else:
            assert 0 <= m["val_accuracy"] <= 1 and m["val_tweets"] == 16 and m["pass_tweets"] == [16]
        if m["phase"] == "train":  # 2 steps of 8 per pass; the naive recipe 1 step
            assert m["pass_tweets"] == [8 if m["engine"] == "trainer-naive" else 16] * 2
            assert m["rated_by"] == ("tweets" if m["engine"] == "trainer-naive" else "tokens")
    train = [m for m in res["measurements"] if m["phase"] == "train"]
    assert all(m["memory_delta_mb"] >= 0 and m["precision"] == "fp32" for m in train)
    lora = next(m for m in train if m["method"] == "lora" and m["engine"] == "sendit")
    assert 0 < lora["trainable_params"] < lora["total_params"]


def test_csv_ratios_are_sendit_over_peer(bench_out):
    df = pd.read_csv(bench_out.with_suffix(".csv"))
    assert list(df.columns) == SUMMARY_COLUMNS
    assert set(df["phase"]) >= {"train", "infer", "infer merged", "infer unmerged"}
    train = df[df["phase"] == "train"].set_index("method")
    for setting in ("tuned", "naive"):
        expect = train["sendit_tokens_per_sec"] / train[f"trainer_{setting}_tokens_per_sec"]
        assert (train[f"ratio_vs_trainer_{setting}"] - expect).abs().max() < 1e-9
    infer = df[df["phase"].str.startswith("infer")]
    assert len(infer) == 3
    assert ((infer["ratio_vs_pipeline"] - infer["sendit_tweets_per_sec"] / infer["pipeline_tweets_per_sec"]).abs()
            < 1e-9).all()
    acc = df[df["phase"].str.startswith("accuracy")]
    assert len(acc) == 2 and acc[["sendit_val_accuracy", "trainer_tuned_val_accuracy"]].notna().all().all()


def test_table_shows_ratio_columns():
    records = [
        {"method": "lora", "phase": "train", "engine": "sendit", "tweets_per_sec": 30.0, "tokens_per_sec": 600.0,
         "memory_delta_mb": 90.0},
        {"method": "lora", "phase": "train", "engine": "trainer-tuned", "tweets_per_sec": 20.0, "tokens_per_sec": 400.0,
         "memory_delta_mb": 100.0},
        {"method": "lora", "phase": "infer merged", "engine": "sendit", "tweets_per_sec": 90.0, "tokens_per_sec": 1.0},
        {"method": "lora", "phase": "infer", "engine": "pipeline", "tweets_per_sec": 30.0},
    ]
    rows = summarize(records)
    assert rows[0]["ratio_vs_trainer_tuned"] == pytest.approx(1.5) and rows[0]["ratio_vs_trainer_naive"] is None
    assert rows[1]["ratio_vs_pipeline"] == pytest.approx(3.0)
    table = format_table(rows)
    assert "x tuned" in table and "1.50x" in table and "3.00x" in table and "x naive" not in table
    assert not any(isinstance(v, float) and math.isnan(v) for r in rows for v in r.values())


def test_opt_tokenizer_folder_and_error(tmp_path):
    assert opt_tokenizer(str(OPT_TOKENIZER)).pad_token_id == 1
    with pytest.raises(ModelError, match="does not exist"):
        opt_tokenizer(str(tmp_path / "missing"))


@pytest.mark.parametrize("kw, message", [
    ({"peers": ["fast"]}, "unknown peer"), ({"pool": 4, "batch_size": 8}, "--pool"),
    ({"methods": ["lorra"]}, "Did you mean 'lora'"), ({"repeats": 0}, "--repeats"),
])
def test_bad_settings_are_config_errors(kw, message):
    with pytest.raises(ConfigError, match=message):
        validate(BenchConfig(**kw))


def test_cli_error_exit_code(capsys):
    assert main(["bench", "--peers", "fast"]) == 2
    assert "sendit bench: error: --peers" in capsys.readouterr().err


@pytest.mark.parametrize("batch_size, max_tokens", [(256, 2048), (4, 2048), (256, 50), (3, 10_000)])
def test_token_batches_cover_every_row_within_limits(batch_size, max_tokens):
    from sendit.engine import token_batches

    lengths = np.random.default_rng(0).integers(1, 80, size=500)
    batches = token_batches(lengths, batch_size, max_tokens)
    assert sorted(i for b in batches for i in b) == list(range(500))
    for b in batches:
        width = lengths[b].max()
        assert lengths[b[0]] == width and len(b) <= batch_size  # longest first: the first row sets the width
        assert len(b) * width <= max_tokens or len(b) == 1


def test_accuracy_check_on_the_opt_shape_uses_the_benchmark_model(tiny_opt, tmp_path):
    """`--accuracy-model opt-125m-shape` times whole epochs on the benchmark's own model (here a tiny stand-in for
    it) instead of loading a checkpoint by that name."""
    from sendit.bench import OPT_SHAPE, Bench, accuracy_check
    from sendit.models import load_tokenizer

    cfg = validate(BenchConfig(model=OPT_SHAPE, methods=["lora"], batch_size=8, device="cpu", accuracy_check=True,
                               accuracy_model=OPT_SHAPE, accuracy_train=16, accuracy_val=16))
    b = Bench(cfg, torch.device("cpu"), "no", tmp_path, str(tiny_opt), load_tokenizer(str(tiny_opt)), lambda s: None)
    accuracy_check(b)
    rows = {r["engine"]: r for r in b.records}
    assert set(rows) == {"sendit", "trainer-tuned"}
    for r in rows.values():
        assert r["phase"] == "accuracy" and r["model"] == OPT_SHAPE and 0 <= r["val_accuracy"] <= 1
        assert r["pass_tweets"] == [16] and r["seconds"][0] > 0
