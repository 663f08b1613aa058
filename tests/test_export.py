"""`sendit export`: exported folders load with a plain transformers pipeline (no sendit import) and predict what
the sendit model predicts; adapters are merged, BitFit/head tensors applied, full copied."""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import decided, paths_atol, run_cli, save_tiny_opt, tiny_run_args

import sendit
from sendit.cli import main
from sendit.config.schema import DataConfig
from sendit.data.dataset import normalize_tweet
from sendit.data.reading import read_source
from sendit.errors import ConfigError
from sendit.serve.export import export
from sendit.serve.hf_folder import add_tweet_normalizer, normalize_snippet
from sendit.serve.model_folder import load

ONE_THREAD = {**os.environ, "OMP_NUM_THREADS": "1"}  # the same for subprocesses
RAW = [
    "@alice I love this so much &amp; more http://t.co/x",
    "worst.   day.   ever    www.example.com",
    "&quot;meh&quot;",
    "",
    "ok",
    "@Bob_9: &lt;3 &lt;3 HTTPS://Example.com/a?b=1 &amp;lt;not twice&amp;gt; \t\n so  good @carol",
    "  &quot;@dave&quot; said &#39;no&#39; www.x.co/y   ",
]

# Runs in a fresh interpreter where `import sendit` fails: the folder must stand on its own.
PIPELINE_SCRIPT = """
import json, sys
sys.modules["sendit"] = None
from transformers import pipeline
jobs = json.load(open(sys.argv[1]))
out = {}
for name, folder in jobs["folders"].items():
    clf = pipeline("text-classification", model=folder, device="cpu")
    for bs in (1, 8):
        res = clf(jobs["texts"], top_k=None, batch_size=bs, truncation=True)
        out[f"{name}/{bs}"] = [{d["label"]: d["score"] for d in r} for r in res]
json.dump(out, open(sys.argv[2], "w"))
"""

pytestmark = pytest.mark.usefixtures("one_thread")


def export_and_pipeline(root: Path, opt_methods: list[str], bert: Path | None = None,
                        opt_run: Path | None = None) -> dict:
    """Tiny OPT runs of opt_methods (plus the LoRA of the tiny BERT run under `bert`, if given), each exported
    (merged), and the plain pipeline's probabilities for every folder, from one subprocess. With `opt_run` (a shared
    run's root, conftest.py) the OPT models are read from it instead of trained here."""
    if opt_run is None:
        opt = save_tiny_opt(root / "tiny-opt")
        assert main(tiny_run_args(opt, root / "run-opt", ",".join(opt_methods))) == 0
        run_opt = root / "run-opt"
    else:
        opt, run_opt = opt_run / "tiny-opt", opt_run / "run"
    sources = {m: run_opt / m for m in opt_methods}
    if bert is not None:
        sources["bert-lora"] = bert / "run" / "lora"
    folders = {name: export(src, root / "exported" / name) for name, src in sources.items()}
    jobs = root / "jobs.json"
    jobs.write_text(json.dumps({"texts": sample_texts(),  # raw: the exported tokenizer normalises them
                                "folders": {k: str(v) for k, v in folders.items()} | {"base": str(opt)}}))
    result = root / "pipeline.json"
    subprocess.run([sys.executable, "-c", PIPELINE_SCRIPT, str(jobs), str(result)], check=True, timeout=600,
                   env=ONE_THREAD)
    return {"sources": sources, "folders": folders, "pipeline": json.loads(result.read_text())}


@functools.cache
def embedded_texts() -> list[str]:
    return read_source("embedded", DataConfig(normalize=False)).texts


def sample_texts() -> list[str]:
    return RAW + embedded_texts()[:40]


@pytest.fixture(scope="module")
def exported(tmp_path_factory, opt_run, bert_run):
    """The shared tiny runs' (conftest.py) OPT lora, bitfit and full and BERT lora, exported under this module's
    own folder."""
    return export_and_pipeline(tmp_path_factory.mktemp("export"), ["lora", "bitfit", "full"], bert=bert_run,
                               opt_run=opt_run)


def pipeline_probs(exported, name: str, batch_size: int) -> np.ndarray:
    return np.array([r["positive"] for r in exported["pipeline"][f"{name}/{batch_size}"]])


def check_pipeline_matches(exported: dict, name: str) -> None:
    folder = exported["folders"][name]
    assert (folder / "model.safetensors").exists() and not list(folder.glob("*.bin"))
    assert not (folder / "adapter_config.json").exists()
    config = json.loads((folder / "config.json").read_text())
    assert config["id2label"] == {"0": "negative", "1": "positive"}
    assert config["label2id"] == {"negative": 0, "positive": 1}
    tokenizer_config = json.loads((folder / "tokenizer_config.json").read_text())
    assert config["pad_token_id"] is not None
    assert tokenizer_config.get("padding_side", "right") == "right"

    # Both got raw tweets: sendit normalises them in Python, the exported folder in its tokenizer.
    ours = load(exported["sources"][name], precision="fp32").predict_proba(sample_texts()).probs[:, 1]
    for bs in (1, 8):  # batch 8 pads: a decoder model (OPT) needs the right pad_token_id to pool the last token
        theirs = pipeline_probs(exported, name, bs)
        np.testing.assert_allclose(theirs, ours, atol=1e-5)
        clear = np.abs(ours - 0.5) > 1e-4
        assert ((theirs >= 0.5) == (ours >= 0.5))[clear].all()
    if name != "bert-lora":  # the export carries what training changed, not the base model
        assert np.abs(pipeline_probs(exported, "base", 1) - ours).max() > 1e-4


@pytest.mark.parametrize("name", ["lora", "bitfit", "full", "bert-lora"])
def test_plain_pipeline_predicts_like_sendit(exported, name):
    check_pipeline_matches(exported, name)


@pytest.mark.slow
def test_plain_pipeline_predicts_like_sendit_other_methods(tmp_path):
    exported = export_and_pipeline(tmp_path, ["dora", "ia3", "head"])
    for name in ("dora", "ia3", "head"):
        check_pipeline_matches(exported, name)


def test_export_keeps_sendit_usable_and_normalises_in_the_tokenizer(exported):
    folder = exported["folders"]["lora"]
    manifest = json.loads((folder / "sendit_model.json").read_text())
    assert manifest["method"] == "full" and manifest["trained_method"] == "lora" and manifest["merged"] is True
    assert manifest["normalize_in_tokenizer"] is True and manifest["normalize"] is False  # not twice
    a = load(folder, precision="fp32").predict_proba(RAW).probs
    b = load(exported["sources"]["lora"], precision="fp32").predict_proba(RAW).probs
    np.testing.assert_allclose(a, b, atol=1e-5)
    readme = (folder / "README.md").read_text()
    assert "Pass raw tweets" in readme and "def normalize_tweet" not in readme


def test_python_api_reproduces_the_runs_predictions(exported):
    """sendit.load(RUN_DIR/<method>).predict gives what the run itself wrote to its predictions CSV."""
    import pandas as pd

    src = exported["sources"]["lora"]
    rows = pd.read_csv(src.parent / "lora_inference_predictions.csv", keep_default_na=False)
    got = sendit.load(src).predict(rows["text"].tolist())  # the run's precision, other batches than the run's
    atol = paths_atol(1e-5)
    np.testing.assert_allclose([d["prob_positive"] for d in got], rows["prob_positive"], atol=atol)
    sure = decided(rows["prob_positive"], atol)
    assert [d["label"] for d, s in zip(got, sure) if s] == rows["prediction"][sure].tolist()


def edge_texts() -> list[str]:
    """Real tweets, plus random strings of the characters where Python's and Oniguruma's regexes could differ."""
    import random

    rng = random.Random(0)
    pieces = list(" \t\n\x1c\x1f\x85\xa0\u3000&;#39:/.@_aZ9wWhHtTpPsSé日ſ\u0301") + [
        "&quot;", "&amp;", "&lt;", "&gt;", "&apos;", "http://", "WWW.", "@bob", "&amp;quot;", "https://t.co/x"]
    noise = ["".join(rng.choice(pieces) for _ in range(rng.randint(0, 25))) for _ in range(3000)]
    return RAW + embedded_texts()[:2000] + noise


def test_normalize_snippet_matches_sendit():
    scope: dict = {}
    exec(normalize_snippet(), scope)
    texts = edge_texts()
    assert [scope["normalize_tweet"](t) for t in texts] == [normalize_tweet(t) for t in texts]


def test_tokenizer_normalizer_is_normalize_tweet(opt_tokenizer):
    """The rules built into an exported tokenizer turn raw text into exactly what sendit trains on."""
    import copy

    tok = copy.deepcopy(opt_tokenizer)
    assert add_tweet_normalizer(tok)
    normalizer = tok.backend_tokenizer.normalizer
    texts = edge_texts()
    assert [normalizer.normalize_str(t) for t in texts] == [normalize_tweet(t) for t in texts]
    assert tok(texts)["input_ids"] == opt_tokenizer([normalize_tweet(t) for t in texts])["input_ids"]


def test_no_merge_writes_a_peft_adapter_folder(exported, tmp_path):
    from peft import AutoPeftModelForSequenceClassification

    out = export(exported["sources"]["lora"], tmp_path / "adapter", merge=False)
    assert (out / "adapter_model.safetensors").exists() and not (out / "model.safetensors").exists()
    base = json.loads((out / "adapter_config.json").read_text())["base_model_name_or_path"]
    assert Path(base).is_absolute() and (Path(base) / "config.json").exists()
    texts = [normalize_tweet(t) for t in RAW]
    ours = load(exported["sources"]["lora"], precision="fp32")
    enc = ours.tokenizer(texts, padding=True, return_tensors="pt")
    model = AutoPeftModelForSequenceClassification.from_pretrained(out).eval()
    import torch

    with torch.no_grad():
        theirs = torch.softmax(model(**enc).logits, -1)[:, 1].numpy()
    np.testing.assert_allclose(theirs, ours.predict_proba(RAW).probs[:, 1], atol=1e-5)
    assert json.loads((out / "sendit_model.json").read_text())["merged"] is False
    np.testing.assert_allclose(load(out, precision="fp32").predict_proba(RAW).probs, ours.predict_proba(RAW).probs,
                               atol=1e-6)


def test_export_cli_overwrite_and_errors(exported, tmp_path, capsys):
    src = exported["sources"]["bitfit"]
    out = tmp_path / "bitfit-hf"
    assert main(["export", str(src), "--out", str(out)]) == 0
    umask = os.umask(0)
    os.umask(umask)
    assert {f.stat().st_mode & 0o777 for f in out.iterdir()} == {0o666 & ~umask}  # not 0600 like a temp file
    assert main(["export", str(src), "--out", str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    (out / "stale.txt").write_text("from before")
    assert main(["export", str(src), "--out", str(out), "--overwrite"]) == 0
    assert not (out / "stale.txt").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folder left behind
    run_dir = src.parent
    assert main(["export", str(run_dir), "--out", str(tmp_path / "x")]) == 2
    assert "pass one of its model folders" in capsys.readouterr().err
    with pytest.raises(ConfigError):
        export(src, src, overwrite=True)


@pytest.mark.usefixtures("one_thread")
def test_an_export_overwrite_replaces_only_an_export(world, capsys, monkeypatch):
    from sendit.serve import export as export_module

    seen = {}

    def fake_load(src, **kwargs):
        seen["loaded"] = src
        raise KeyboardInterrupt  # stop after the checks: what matters is that they let it through

    monkeypatch.setattr("sendit.serve.model_folder.load", fake_load)
    code, err = run_cli(capsys, ["export", str(world / "oldrun" / "lora"), "--out", str(world / "oldexport"),
                                 "--overwrite"])
    assert code == 130 and seen["loaded"] == world / "oldrun" / "lora"
    assert (world / "oldexport" / "sendit_model.json").exists()  # interrupted before the swap: left as it was
    assert export_module._is_export(world / "oldexport") and not export_module._is_export(world / "oldrun" / "lora")
