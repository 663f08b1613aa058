"""The real pretrained model (all-MiniLM-L6-v2, offline from PyPI) learns sentiment from real tweets."""

from __future__ import annotations

import pandas as pd
import pytest

from sendit.cli import main
from sendit.config.schema import EMBEDDED_TEST_NAME


@pytest.mark.slow  # 1,500 real tweets through MiniLM: 340 s of a 35-min default suite (2 cores, load ~5); -m slow
def test_minilm_learns_from_real_tweets(tmp_path):
    out = tmp_path / "real"
    args = ["run", "--model", "embedded", "--methods", "lora", "--train-size", "1500", "--val-size", "300",
            "--test-size", "300", "--epochs", "1", "--method-lr", "{lora: 0.002}", "--out", str(out), "--no-report"]
    assert main(args) == 0
    results = pd.read_csv(out / "lora_results.csv").iloc[0]
    summary = pd.read_csv(out / "lora_inference_metrics_summary.csv").set_index("test_set")
    # Chance is 0.5 (balanced classes); on 300 validation tweets its standard deviation is ~0.03.
    assert results.val_accuracy >= 0.65, results.val_accuracy
    assert summary.loc[EMBEDDED_TEST_NAME, "accuracy"] >= 0.65, summary.loc[EMBEDDED_TEST_NAME, "accuracy"]
    assert results.trainable_params < 0.02 * results.total_params
