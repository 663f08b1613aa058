"""`sendit bench --inference MODEL_DIR` on a tiny trained model: every engine runs, the table has the ratio and
agreement columns, torch bf16 is skipped with its reason where the host would not pick bf16 (the precision resolver
is monkeypatched, whatever this host has), and a missing ONNX Runtime skips the ONNX engines with a clear line.
No test asserts a speed."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from sendit.serve import onnx_folder
from sendit.train import device
from sendit.cli import main
from sendit.errors import ConfigError

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def model_dir(opt_run) -> Path:
    """The shared tiny OPT run's head (conftest.py; read-only: bench --inference writes only under --out)."""
    return opt_run / "run" / "head"


def host_picks(monkeypatch, precision: str) -> None:
    """What `precision: auto` resolves to on this pretend host; explicit precisions stay as asked."""
    monkeypatch.setattr(device, "resolve_precision", lambda p, d=None: precision if p == "auto" else p)


def no_onnx(monkeypatch) -> None:
    """ONNX Runtime as if it were not installed: the ONNX engines are skipped (and not exported)."""
    def missing(export: bool = False) -> None:
        raise ConfigError("exporting to ONNX needs onnxruntime, which is not installed; install the ONNX extra with "
                          f"{onnx_folder.INSTALL}")

    monkeypatch.setattr(onnx_folder, "require_onnx", missing)


def bench(model_dir: Path, out: Path, capsys, *extra: str) -> tuple[pd.DataFrame, str]:
    assert main(["bench", "--inference", str(model_dir), "--inference-tweets", "40", "--repeats", "2",
                 "--out", str(out / "results"), *extra]) == 0
    return pd.read_csv(out / "results.csv"), capsys.readouterr().out


def test_every_engine_runs_with_ratios_and_agreement(model_dir, tmp_path, monkeypatch, capsys):
    pytest.importorskip("onnxruntime")
    host_picks(monkeypatch, "bf16")
    df, printed = bench(model_dir, tmp_path, capsys)
    assert list(df["engine"]) == ["torch fp32", "torch bf16", "onnx fp32", "onnx int8", "pipeline"]
    assert list(df["precision"]) == ["fp32", "bf16", "fp32", "int8", "fp32"]
    assert (df["tweets"] == 40).all() and (df["tweets_per_sec"] > 0).all()
    assert (df["tweets_per_sec_min"] <= df["tweets_per_sec"]).all()
    assert (df["tweets_per_sec"] <= df["tweets_per_sec_max"]).all()
    assert (df["ratio_min"] <= df["ratio_vs_torch_fp32"]).all() and (df["ratio_vs_torch_fp32"] <= df["ratio_max"]).all()
    ref = df.set_index("engine").loc["torch fp32"]
    assert ref["ratio_vs_torch_fp32"] == 1 and ref["agreement_vs_torch_fp32"] == 1
    # the same fp32 model in ONNX Runtime and behind the pipeline: the labels of sendit's fp32 path
    by = df.set_index("engine")["agreement_vs_torch_fp32"]
    assert by["onnx fp32"] >= 0.95 and by["pipeline"] >= 0.95 and 0 <= by["onnx int8"] <= 1
    header = next(line for line in printed.splitlines() if line.startswith("engine"))
    assert "x torch fp32" in header and "agreement" in header and "tweets/s" in header
    assert "skipped" not in printed and "CPU:" in printed


def test_bf16_skipped_with_reason_where_the_host_would_not_pick_it(model_dir, tmp_path, monkeypatch, capsys):
    host_picks(monkeypatch, "fp32")
    no_onnx(monkeypatch)  # what this test is about is the torch engines (4 ONNX exports fewer)
    df, printed = bench(model_dir, tmp_path / "skip", capsys, "--peers", "none")
    assert "torch bf16" not in set(df["engine"])
    assert "skipped: torch bf16: this host has no bf16 units" in printed and "--bf16 on" in printed
    assert "skipped: pipeline" in printed
    df, _ = bench(model_dir, tmp_path / "forced", capsys, "--peers", "none", "--bf16", "on", "--bf16-tweets", "8")
    forced = df.set_index("engine").loc["torch bf16"]
    assert forced["tweets"] == 8 and forced["precision"] == "bf16"


def test_missing_onnxruntime_skips_the_onnx_engines(model_dir, tmp_path, monkeypatch, capsys):
    host_picks(monkeypatch, "fp32")
    no_onnx(monkeypatch)
    df, printed = bench(model_dir, tmp_path, capsys, "--peers", "none")
    assert list(df["engine"]) == ["torch fp32"]
    for engine in ("onnx fp32", "onnx int8"):
        assert f"skipped: {engine}: exporting to ONNX needs onnxruntime" in printed
    assert "pip install 'sendit[onnx]'" in printed


def test_bad_bf16_choice_is_refused(model_dir, capsys):
    assert main(["bench", "--inference", str(model_dir), "--bf16", "maybe"]) == 2
    assert "--bf16 must be auto, on or off" in capsys.readouterr().err
