"""`sendit export --format onnx [--quantize int8]`: an encoder (tiny BERT: head, lora) and a decoder (tiny OPT: lora,
last-token pooling) exported to ONNX predict what the sendit model predicts, in plain ONNX Runtime without sendit
too; the parity check is printed and refuses a model below --min-agreement; predict and evaluate take the folders."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers import decided
from test_export import ONE_THREAD, sample_texts

import sendit.serve.onnx_export as onnx_export
from sendit.cli import main
from sendit.serve.model_folder import load

pytest.importorskip("onnxruntime")

pytestmark = pytest.mark.usefixtures("one_thread")

# A fresh interpreter where `import sendit` fails: the tokenizer and ONNX Runtime are all a user needs. One padded
# batch of every text: a decoder must find each row's last real token behind the right padding.
PLAIN_ORT_SCRIPT = """
import json, sys
sys.modules["sendit"] = None
import numpy as np, onnxruntime as ort
from transformers import AutoTokenizer
jobs = json.load(open(sys.argv[1]))
out = {}
for name, folder in jobs["folders"].items():
    tok = AutoTokenizer.from_pretrained(folder)
    session = ort.InferenceSession(folder + "/model.onnx", providers=["CPUExecutionProvider"])
    enc = tok(jobs["texts"], padding=True, truncation=True, return_tensors="np")
    logits = session.run(["logits"], {k: enc[k] for k in ("input_ids", "attention_mask")})[0]
    e = np.exp(logits - logits.max(-1, keepdims=True))
    out[name] = (e[:, 1] / e.sum(-1)).tolist()
json.dump(out, open(sys.argv[2], "w"))
"""


@pytest.fixture(scope="module")
def exported(tmp_path_factory, one_thread, bert_run, opt_run, bert_head_onnx) -> dict:
    """The shared tiny runs (conftest.py: BERT head and lora, OPT lora), each exported to ONNX fp32 through the CLI
    (BERT head: the session's shared export, read-only), BERT lora also int8."""
    root = tmp_path_factory.mktemp("onnx")
    sources = {"bert-head": bert_run / "run" / "head", "bert-lora": bert_run / "run" / "lora",
               "opt-lora": opt_run / "run" / "lora"}
    jobs = {"bert-lora": (sources["bert-lora"], []), "opt-lora": (sources["opt-lora"], []),
            "bert-lora-int8": (sources["bert-lora"], ["--quantize", "int8"])}
    folders = {"bert-head": bert_head_onnx}
    for name, (src, extra) in jobs.items():
        folders[name] = root / "onnx" / name
        # --min-agreement 0: int8 on an untrained-looking tiny model may flip labels near 0.5; here it is reported
        assert main(["export", str(src), "--out", str(folders[name]), "--format", "onnx", "--min-agreement", "0",
                     *extra]) == 0
    return {"root": root, "sources": sources | {"bert-lora-int8": sources["bert-lora"]}, "folders": folders}


def manifest(folder: Path) -> dict:
    return json.loads((folder / "sendit_model.json").read_text())


@pytest.mark.parametrize("name", ["bert-head", "bert-lora", "opt-lora"])
def test_fp32_export_matches_the_sendit_model(exported, name):
    folder = exported["folders"][name]
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "config.json", "model.onnx", "sendit_model.json",
                                                        "tokenizer.json", "tokenizer_config.json"]
    m = manifest(folder)
    assert m["format"] == "onnx" and m["quantize"] is None and m["normalize_in_tokenizer"] and not m["normalize"]
    assert m["parity"]["rows"] == 1000
    assert m["parity"]["label_agreement"] >= 0.999 and m["parity"]["max_abs_dprob"] < 1e-5
    # and on texts of its own, through sendit.load (which picks ONNX Runtime for the folder)
    onnx_model = load(folder)
    assert type(onnx_model).__name__ == "OnnxModel" and onnx_model.precision == "fp32"
    ours = onnx_model.predict_proba(sample_texts()).probs[:, 1]
    theirs = load(exported["sources"][name], precision="fp32").predict_proba(sample_texts()).probs[:, 1]
    np.testing.assert_allclose(ours, theirs, atol=1e-5)


def test_int8_export_is_quantised_and_reports_parity(exported):
    fp32, int8 = exported["folders"]["bert-lora"], exported["folders"]["bert-lora-int8"]
    m = manifest(int8)
    assert m["quantize"] == "int8" and load(int8).precision == "int8"
    assert 0.5 < m["parity"]["label_agreement"] <= 1 and m["parity"]["max_abs_dprob"] > 1e-6
    assert (int8 / "model.onnx").stat().st_size < 0.5 * (fp32 / "model.onnx").stat().st_size
    import onnx

    ops = {node.op_type for node in onnx.load(str(int8 / "model.onnx")).graph.node}
    assert "DynamicQuantizeLinear" in ops or "MatMulInteger" in ops
    assert f"{m['parity']['label_agreement']:.2%}" in (int8 / "README.md").read_text()


def test_plain_onnx_runtime_without_sendit_gives_the_same_labels(exported, tmp_path):
    texts = sample_texts()  # raw tweets: the saved tokenizer normalises them
    jobs = tmp_path / "jobs.json"
    jobs.write_text(json.dumps({"texts": texts, "folders": {k: str(v) for k, v in exported["folders"].items()}}))
    result = tmp_path / "plain.json"
    subprocess.run([sys.executable, "-c", PLAIN_ORT_SCRIPT, str(jobs), str(result)], check=True, timeout=600,
                   env=ONE_THREAD)
    plain = json.loads(result.read_text())
    for name, folder in exported["folders"].items():
        ours = load(folder).predict_proba(texts).probs[:, 1]  # sendit's ONNX path: batched by length
        # int8 quantises activations with each batch's own range, so another batching moves probabilities a little
        atol = 5e-3 if "int8" in name else 1e-5
        np.testing.assert_allclose(plain[name], ours, atol=atol)
        sure = decided(ours, atol)
        assert ((np.array(plain[name]) >= 0.5) == (ours >= 0.5))[sure].all()
        if "int8" not in name:
            torch_probs = load(exported["sources"][name], precision="fp32").predict_proba(texts).probs[:, 1]
            np.testing.assert_allclose(plain[name], torch_probs, atol=1e-5)
            assert ((np.array(plain[name]) >= 0.5) == (torch_probs >= 0.5))[decided(torch_probs, 1e-5)].all()


def test_predict_and_evaluate_take_an_onnx_folder(exported, tmp_path):
    src, folder = exported["sources"]["opt-lora"], exported["folders"]["opt-lora"]
    data = tmp_path / "tweets.csv"
    rows = pd.read_csv(src.parent / "lora_inference_predictions.csv", keep_default_na=False)
    rows[["text", "label"]].to_csv(data, index=False)
    for name, model_dir in (("torch", src), ("onnx", folder)):
        assert main(["predict", str(model_dir), "--input", str(data), "--output", str(tmp_path / f"{name}.csv"),
                     "--precision", "fp32" if name == "torch" else "auto"]) == 0
    torch_out, onnx_out = pd.read_csv(tmp_path / "torch.csv"), pd.read_csv(tmp_path / "onnx.csv")
    assert list(onnx_out.columns) == list(torch_out.columns) == ["text", "label", "prediction", "prob_positive"]
    assert (onnx_out["prediction"] == torch_out["prediction"]).all()
    np.testing.assert_allclose(onnx_out["prob_positive"], torch_out["prob_positive"], atol=2e-6)  # %.6f in the CSV

    out = tmp_path / "eval"
    assert main(["evaluate", str(folder), "--data", str(data), "--out", str(out), "--precision", "bf16"]) == 2
    assert main(["evaluate", str(src), str(folder), "--data", str(data), "--out", str(out)]) == 0
    a = pd.read_csv(out / "lora_inference_predictions.csv")
    b = pd.read_csv(out / "lora-onnx-fp32_inference_predictions.csv")
    assert list(a.columns) == list(b.columns) and (a["prediction"] == b["prediction"]).all()
    summary = pd.read_csv(out / "lora-onnx-fp32_inference_metrics_summary.csv").iloc[0]
    assert summary["accuracy"] == pytest.approx(pd.read_csv(out / "lora_inference_metrics_summary.csv").iloc[0]
                                                ["accuracy"])


def test_parity_below_min_agreement_refuses_to_write(exported, tmp_path, monkeypatch, capsys):
    """A graph whose labels are swapped (what a broken export would give) is refused, an earlier export kept."""
    import torch

    class Swapped(torch.nn.Module):
        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, input_ids, attention_mask):
            out = self.model(input_ids=input_ids, attention_mask=attention_mask)
            out.logits = out.logits.flip(-1)
            return out

    real = onnx_export._torch_export
    monkeypatch.setattr(onnx_export, "_torch_export", lambda model, tok, path: real(Swapped(model), tok, path))
    src, out = exported["sources"]["bert-head"], tmp_path / "out"
    args = ["export", str(src), "--out", str(out), "--format", "onnx"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "parity of the ONNX fp32 model" in err and "below --min-agreement 0.99; nothing was written" in err
    assert not out.exists() and list(tmp_path.iterdir()) == []  # its temporary folder went too

    earlier = tmp_path / "earlier"  # a copy: the shared export is read by other workers' tests meanwhile
    shutil.copytree(exported["folders"]["bert-head"], earlier)
    before = (earlier / "model.onnx").read_bytes()
    assert main(args[:3] + [str(earlier), "--format", "onnx", "--overwrite"]) == 2
    assert (earlier / "model.onnx").read_bytes() == before

    assert main(args + ["--force"]) == 0
    assert manifest(out)["parity"]["label_agreement"] < 0.5


def test_onnx_flags_are_checked_and_a_missing_onnxruntime_named(exported, tmp_path, monkeypatch, capsys):
    src = str(exported["sources"]["bert-lora"])
    out = str(tmp_path / "out")
    assert main(["export", src, "--out", out, "--quantize", "int8"]) == 2
    assert "add --format onnx" in capsys.readouterr().err
    assert main(["export", src, "--out", out, "--format", "onnx", "--no-merge"]) == 2
    assert "drop --no-merge" in capsys.readouterr().err
    assert main(["export", str(exported["folders"]["bert-lora"]), "--out", out, "--format", "onnx"]) == 2
    assert "is an ONNX export already" in capsys.readouterr().err
    assert main(["export", src, "--out", out, "--format", "onnx", "--min-agreement", "99"]) == 2
    assert "between 0 and 1" in capsys.readouterr().err

    import importlib.util

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "onnxruntime" else
                        find_spec(name, *a))
    assert main(["export", src, "--out", out, "--format", "onnx"]) == 2
    assert "pip install 'sendit[onnx]'" in capsys.readouterr().err
    assert main(["predict", str(exported["folders"]["bert-lora"]), "so happy"]) == 2
    assert "pip install 'sendit[onnx]'" in capsys.readouterr().err
    assert not Path(out).exists()
