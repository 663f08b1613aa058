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
from helpers import OPT_TOKENIZER

from sendit.bench.training import SUMMARY_COLUMNS, BenchConfig, format_table, summarize, validate
from sendit.bench.engines import opt_tokenizer
from sendit.cli import main
from sendit.errors import ConfigError, ModelError


EPOCH = 64  # tweets per equal-work epoch: 8 batches of 8


def _bench(out, *extra) -> None:
    args = ["bench", "--methods", "bitfit,lora", "--batch-size", "8", "--infer-tweets", "16", "--repeats", "2",
            "--device", "cpu", "--out", str(out), "--threads", "1", *extra]  # one thread: a busy 2-core machine
    threads = torch.get_num_threads()
    try:
        assert main(args) == 0
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def bench_out(tiny_opt, tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "results"
    _bench(out, "--model", str(tiny_opt), "--epoch-tweets", str(EPOCH), "--accuracy-check", "--accuracy-model",
           str(tiny_opt), "--accuracy-train", "16", "--accuracy-val", "16")
    return out


def test_default_protocol_is_equal_work_for_every_engine(bench_out):
    """Whole epochs of the same tweets in the same batches: every engine's every pass saw the same 64 tweets and
    the same non-padding tokens (the Trainer reads them in sendit's batch order)."""
    res = json.loads(bench_out.with_suffix(".json").read_text())
    assert res["device"] == "cpu" and res["settings"]["repeats"] == 2 and res["hardware"]["cores"]
    assert res["settings"]["protocol"] == "epoch" and res["settings"]["pool"] == EPOCH
    train = [m for m in res["measurements"] if m["phase"] == "train"]
    assert {(m["method"], m["engine"]) for m in train} == {
        (method, engine) for method in ("bitfit", "lora") for engine in ("sendit", "trainer-tuned", "trainer-naive")}
    for method in ("bitfit", "lora"):
        passes = {m["engine"]: m for m in train if m["method"] == method}
        tokens = passes["sendit"]["pass_tokens"]
        assert len(tokens) == 2 and tokens[0] > EPOCH  # 2 timed passes (the warm-up dropped), real tokens
        for m in passes.values():
            assert m["pass_tweets"] == [EPOCH, EPOCH] and m["pass_tokens"] == tokens, m["engine"]
            assert m["rated_by"] == "tweets" and m["protocol"] == "epoch" and m["memory_delta_mb"] >= 0
            assert m["tweets_per_sec"] == pytest.approx(statistics.median(EPOCH / t for t in m["seconds"]))


def test_precision_is_sendits_own_and_recorded(bench_out):
    """sendit and the tuned Trainer run in what `precision: auto` picks here (bf16 or fp32, whichever this host
    or SENDIT_PRECISION gives); the naive recipe and the pipeline stay fp32."""
    from sendit.train.device import resolve_precision

    res = json.loads(bench_out.with_suffix(".json").read_text())
    expected = resolve_precision("auto", torch.device("cpu"))
    assert res["precision"] == expected
    for m in res["measurements"]:
        fp32_engine = m["engine"] in ("trainer-naive", "pipeline")
        assert m["precision"] == ("fp32" if fp32_engine else expected), (m["engine"], m["phase"])


def test_json_has_inference_and_accuracy(bench_out):
    res = json.loads(bench_out.with_suffix(".json").read_text())
    got = {(m["method"], m["phase"], m["engine"]) for m in res["measurements"]}
    for method in ("bitfit", "lora"):
        assert (method, "infer", "pipeline") in got
        assert (method, "accuracy", "sendit") in got and (method, "accuracy", "trainer-tuned") in got
    # merged and unmerged only where there is an adapter to merge
    assert {("lora", "infer merged", "sendit"), ("lora", "infer unmerged", "sendit"),
            ("bitfit", "infer", "sendit")} <= got
    assert ("bitfit", "infer merged", "sendit") not in got
    for m in res["measurements"]:
        if m["phase"] == "accuracy":
            assert 0 <= m["val_accuracy"] <= 1 and m["val_tweets"] == 16 and m["pass_tweets"] == [16]
        elif m["phase"].startswith("infer"):
            assert len(m["seconds"]) == 2 and all(s > 0 for s in m["seconds"])
    lora = next(m for m in res["measurements"] if m["method"] == "lora" and m["engine"] == "sendit")
    assert 0 < lora["trainable_params"] < lora["total_params"]


def test_csv_ratios_are_paired_medians_with_spread(bench_out):
    res = json.loads(bench_out.with_suffix(".json").read_text())
    df = pd.read_csv(bench_out.with_suffix(".csv"))
    assert list(df.columns) == SUMMARY_COLUMNS
    assert set(df["phase"]) >= {"train", "infer", "infer merged", "infer unmerged"}
    train = df[df["phase"] == "train"].set_index("method")
    for method in ("bitfit", "lora"):
        passes = {m["engine"]: m for m in res["measurements"] if m["method"] == method and m["phase"] == "train"}
        for setting in ("tuned", "naive"):
            paired = [t / s for s, t in zip(passes["sendit"]["seconds"], passes[f"trainer-{setting}"]["seconds"])]
            row = train.loc[method]
            assert row[f"ratio_vs_trainer_{setting}"] == pytest.approx(statistics.median(paired))
            assert row[f"ratio_vs_trainer_{setting}_min"] == pytest.approx(min(paired))
            assert row[f"ratio_vs_trainer_{setting}_max"] == pytest.approx(max(paired))
    infer = df[df["phase"].str.startswith("infer")]
    assert len(infer) == 3 and infer["ratio_vs_pipeline"].notna().all()
    acc = df[df["phase"].str.startswith("accuracy")]
    assert len(acc) == 2 and acc[["sendit_val_accuracy", "trainer_tuned_val_accuracy"]].notna().all().all()


def test_smoke_protocol_is_labelled(tiny_opt, tmp_path):
    out = tmp_path / "smoke"
    _bench(out, "--model", str(tiny_opt), "--methods", "lora", "--protocol", "smoke", "--pool", "64", "--steps", "2",
           "--peers", "tuned")
    res = json.loads(out.with_suffix(".json").read_text())
    train = [m for m in res["measurements"] if m["phase"].startswith("train")]
    assert {m["phase"] for m in train} == {"train (smoke)"} and {m["protocol"] for m in train} == {"smoke"}
    assert all(m["pass_tweets"] == [16, 16] and m["rated_by"] == "tokens" for m in train)
    assert any("SMOKE" in n for n in res["notes"])


def test_bench_writes_a_run_folder_not_the_source_tree(tiny_opt, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _bench_args = ["--model", str(tiny_opt), "--methods", "bitfit", "--peers", "none", "--epoch-tweets", "16"]
    args = ["bench", "--batch-size", "8", "--infer-tweets", "8", "--repeats", "1", "--device", "cpu", "--threads",
            "1", *_bench_args]
    threads = torch.get_num_threads()
    try:
        assert main(args) == 0
    finally:
        torch.set_num_threads(threads)
    written = list((tmp_path / "runs").glob("bench-*/results.json"))
    assert len(written) == 1 and written[0].with_suffix(".csv").exists()


def test_table_shows_ratio_columns_and_spread():
    def rec(phase, engine, seconds, tweets=64):
        return {"method": "lora", "phase": phase, "engine": engine, "tweets_per_sec": tweets / seconds[0],
                "tokens_per_sec": 1.0, "memory_delta_mb": 90.0, "seconds": seconds, "pass_tweets": [tweets] * 2,
                "pass_tokens": [tweets * 20] * 2, "rated_by": "tweets"}

    records = [rec("train", "sendit", [2.0, 4.0]), rec("train", "trainer-tuned", [3.0, 4.0]),
               rec("infer merged", "sendit", [1.0, 1.0]), rec("infer", "pipeline", [3.0, 3.0])]
    rows = summarize(records)
    # paired per pass: 3/2 = 1.5 and 4/4 = 1.0 -> median 1.25, spread [1.0, 1.5]
    assert rows[0]["ratio_vs_trainer_tuned"] == pytest.approx(1.25) and rows[0]["ratio_vs_trainer_naive"] is None
    assert (rows[0]["ratio_vs_trainer_tuned_min"], rows[0]["ratio_vs_trainer_tuned_max"]) == (1.0, 1.5)
    assert rows[1]["ratio_vs_pipeline"] == pytest.approx(3.0)
    table = format_table(rows)
    assert "x tuned" in table and "1.25x" in table and "[1.00, 1.50]" in table and "3.00x" in table
    assert "x naive" not in table
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
    from sendit.train.batching import token_batches

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
    from sendit.bench.training import OPT_SHAPE, Bench, accuracy_check
    from sendit.train.models import load_tokenizer

    cfg = validate(BenchConfig(model=OPT_SHAPE, methods=["lora"], batch_size=8, device="cpu", accuracy_check=True,
                               accuracy_model=OPT_SHAPE, accuracy_train=16, accuracy_val=16))
    from sendit.train.device import resolve_precision

    b = Bench(cfg, torch.device("cpu"), resolve_precision("auto"), tmp_path, str(tiny_opt), load_tokenizer(str(tiny_opt)), lambda s: None)
    accuracy_check(b)
    rows = {r["engine"]: r for r in b.records}
    assert set(rows) == {"sendit", "trainer-tuned"}
    for r in rows.values():
        assert r["phase"] == "accuracy" and r["model"] == OPT_SHAPE and 0 <= r["val_accuracy"] <= 1
        assert r["pass_tweets"] == [16] and r["seconds"][0] > 0
