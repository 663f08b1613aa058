"""The exported README.md is a hub model card: YAML front matter with library_name, base_model, pipeline_tag, tags,
datasets, metrics and a model-index whose numbers are the run's own test results (recomputed here from the
predictions CSV); plain, adapter and ONNX exports; a folder exported away from its run says what is unknown."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from sendit.cli import main
from sendit.report.stats import bootstrap_metric_ci

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def run(opt_run) -> Path:
    """The shared tiny OPT run (conftest.py; its base model is run.parent / "tiny-opt"); read-only: exports go under
    tmp_path, and the test that edits a model folder copies it first."""
    return opt_run / "run"


def front_matter(folder: Path) -> tuple[dict, str]:
    text = (folder / "README.md").read_text()
    assert text.startswith("---\n")
    _, meta, body = text.split("---\n", 2)
    return yaml.safe_load(meta), body


def export(src: Path, out: Path, *extra: str) -> Path:
    assert main(["export", str(src), "--out", str(out), *extra]) == 0
    return out


def check_results(meta: dict, run: Path, method: str) -> None:
    """Every model-index result equals accuracy and macro F1 with CIs recomputed from the predictions CSV."""
    df = pd.read_csv(run / f"{method}_inference_predictions.csv", keep_default_na=False)
    (entry,) = meta["model-index"]
    results = {r["dataset"]["name"]: r for r in entry["results"]}
    assert set(results) == set(df["test_set"]) and len(results) == 2
    for test_set, g in df.groupby("test_set"):
        want = bootstrap_metric_ci(g["label"].to_numpy(int), g["prediction"].to_numpy(int))
        got = {m["type"]: m for m in results[test_set]["metrics"]}
        assert results[test_set]["task"]["type"] == "text-classification"
        for kind, key in (("accuracy", "accuracy"), ("f1", "f1_macro")):
            assert got[kind]["value"] == pytest.approx(want[key], abs=1e-4)
            assert got[kind]["args"]["ci_low"] == pytest.approx(want[f"{key}_lo"], abs=1e-4)
            assert got[kind]["args"]["ci_high"] == pytest.approx(want[f"{key}_hi"], abs=1e-4)
            assert got[kind]["args"]["ci_low"] <= got[kind]["value"] <= got[kind]["args"]["ci_high"]
        assert got["f1"]["args"]["average"] == "macro"


@pytest.mark.parametrize("method, extra, library", [("head", [], "transformers"), ("lora", [], "transformers"),
                                                    ("lora", ["--no-merge"], "peft")])
def test_card_front_matter_and_metrics(run, tmp_path, method, extra, library):
    out = export(run / method, tmp_path / "out", *extra)
    meta, body = front_matter(out)
    assert meta["library_name"] == library
    assert meta["base_model"] == str(run.parent / "tiny-opt")
    assert meta["pipeline_tag"] == "text-classification"
    assert {"sendit", method} <= set(meta["tags"]) and "onnx" not in meta["tags"]
    assert meta["datasets"] == ["stanfordnlp/sentiment140"]  # --data embedded: the packaged Sentiment140 sample
    assert meta["metrics"] == ["accuracy", "f1"]
    check_results(meta, run, method)
    assert "precision in training: fp32" in body and "0 = negative, 1 = positive" in body
    assert f"method: `{method}`" in body and "96 training tweets" in body
    acc = meta["model-index"][0]["results"][0]["metrics"][0]
    assert f"{acc['value']:.4f} [{acc['args']['ci_low']:.4f}, {acc['args']['ci_high']:.4f}]" in body


def test_onnx_card_tags(run, tmp_path):
    pytest.importorskip("onnxruntime")
    out = export(run / "head", tmp_path / "onnx", "--format", "onnx", "--quantize", "int8", "--min-agreement", "0")
    meta, _ = front_matter(out)
    assert {"sendit", "head", "onnx", "int8"} <= set(meta["tags"])
    check_results(meta, run, "head")


def test_card_without_its_run_says_unknown(run, tmp_path):
    alone = tmp_path / "alone" / "head"
    shutil.copytree(run / "head", alone)
    meta, body = front_matter(export(alone, tmp_path / "out"))
    assert meta["library_name"] == "transformers" and meta["pipeline_tag"] == "text-classification"
    assert "model-index" not in meta and "datasets" not in meta
    assert "training data: unknown" in body and "Test metrics: unknown" in body


def test_card_loads_with_huggingface_hub(run, tmp_path):
    hub = pytest.importorskip("huggingface_hub")
    out = export(run / "lora", tmp_path / "out")
    card = hub.ModelCard.load(out / "README.md")
    data = card.data.to_dict()
    assert data["library_name"] == "transformers" and data["pipeline_tag"] == "text-classification"
    results = card.data.eval_results
    assert len(results) == 4 and {r.metric_type for r in results} == {"accuracy", "f1"}
    assert all(np.isfinite(r.metric_value) for r in results)
