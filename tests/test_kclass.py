"""k classes on every command, end to end on tiny models: a three-class decoder (OPT, last-token pooling) run of
every method with distillation, evaluate, predict (streamed too), export to a plain pipeline and the report; a
five-class encoder (BERT) run whose classes come from the data's own words; and the binary path, unchanged."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from helpers import paths_atol, save_tiny_bert, save_tiny_opt, tiny_run_args

import sendit
from sendit.cli import main
from sendit.methods import METHODS
from sendit.serve.predict import predict_csv
from sendit.run.folder import read_manifest

THREE = ["negative", "neutral", "positive"]
PROBS3 = [f"prob_{c}" for c in THREE]
EMOTIONS = ["anger", "fear", "joy", "love", "sadness"]
WORDS = {"anger": "furious mad rage", "fear": "scared afraid worried", "joy": "happy great fun",
         "love": "adore darling heart", "sadness": "sad cry lonely"}
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def three(tmp_path_factory):
    """Every method on a tiny OPT, three classes (the hand-labelled file's 0/2/4 with --labels), then a distilled
    one-layer student of the full model."""
    root = tmp_path_factory.mktemp("three")
    opt = save_tiny_opt(root / "opt")
    run = root / "run"
    args = tiny_run_args(opt, run, ",".join(sorted(METHODS)), "--data", "sentiment140-manual", "--test-file", "none",
                         "--labels", ",".join(THREE), "--threads", "1")
    assert main(args) == 0
    assert main(["distill", "--teacher", str(run / "full"), "--student-layers", "1", "--method", "full", "--epochs",
                 "1", "--threads", "1", "--no-report"]) == 0
    return run


def _predictions(run, method: str) -> pd.DataFrame:
    return pd.read_csv(run / f"{method}_inference_predictions.csv")


def test_every_method_and_the_student_train_and_test_three_classes(three):
    manifest = read_manifest(three)
    assert manifest["data"]["labels"] == THREE
    assert set(manifest["data"]["label_balance"]["train"]) == set(THREE)
    assert all(v == "done" for v in manifest["status"].values()), manifest["status"]
    for method in [*METHODS, "distill-1L-full"]:
        p = _predictions(three, method)
        assert list(p.columns[:6]) == ["text", "label", "prediction", *PROBS3], method
        assert np.allclose(p[PROBS3].sum(axis=1), 1, atol=1e-5)
        assert (p["prediction"] == p[PROBS3].to_numpy().argmax(1)).all()
        assert set(p["label"]) == {0, 1, 2}
        folder = json.loads((three / method / "sendit_model.json").read_text())
        assert folder["labels"] == THREE
    config = json.loads((three / "full" / "config.json").read_text())
    assert config["id2label"] == {"0": "negative", "1": "neutral", "2": "positive"}
    cache = next((three / ".cache").rglob("*.safetensors"))
    from safetensors.torch import load_file

    assert load_file(str(cache))["logits"].shape[1] == 3  # the teacher's k logits, cached


@pytest.mark.parametrize("method", ["lora", "ia3", "full"])
def test_reloaded_model_predicts_the_runs_probabilities_with_names(three, method):
    model = sendit.load(three / method)
    p = _predictions(three, method)
    out = model.predict(p["text"].tolist())
    assert [r["label_name"] for r in out] == [THREE[i] for i in p["prediction"]]
    ours = np.array([[r[c] for c in PROBS3] for r in out])
    assert np.abs(ours - p[PROBS3].to_numpy()).max() < paths_atol(1e-5)


def test_predict_writes_names_and_a_probability_per_class_streamed_or_not(three, tmp_path, capsys):
    assert main(["predict", str(three / "lora"), "so happy", "meh", "awful"]) == 0
    out = pd.read_csv(__import__("io").StringIO(capsys.readouterr().out))
    assert list(out.columns) == ["text", "prediction", "label_name", *PROBS3]
    assert set(out["label_name"]) <= set(THREE)
    texts = _predictions(three, "lora")["text"].tolist()
    src = tmp_path / "in.csv"
    pd.DataFrame({"text": texts}).to_csv(src, index=False)
    model = sendit.load(three / "lora")
    predict_csv(model, str(src), str(tmp_path / "chunked.csv"), chunk_size=7)
    predict_csv(model, str(src), str(tmp_path / "whole.csv"), chunk_size=10_000)
    chunked, whole = pd.read_csv(tmp_path / "chunked.csv"), pd.read_csv(tmp_path / "whole.csv")
    assert (chunked["label_name"] == whole["label_name"]).all()
    assert np.abs(chunked[PROBS3].to_numpy() - whole[PROBS3].to_numpy()).max() < paths_atol(1e-5)
    assert main(["predict", str(three / "lora"), "--input", str(src), "--output", str(tmp_path / "whole.csv")]) == 0


def test_evaluate_reads_a_file_against_the_models_classes(three, tmp_path):
    data = tmp_path / "three.csv"
    pd.DataFrame({"text": ["so happy", "meh ok", "awful day", "love it"],
                  "label": ["positive", "neutral", "negative", "4"]}).to_csv(data, index=False)
    out = tmp_path / "eval"
    assert main(["evaluate", str(three / "lora"), str(three / "full"), "--data", str(data), "--out", str(out)]) == 0
    assert json.loads((out / "evaluation.json").read_text())["labels"] == THREE
    p = pd.read_csv(out / "lora_inference_predictions.csv")
    assert p["label"].tolist() == [2, 1, 0, 2] and set(PROBS3) <= set(p.columns)
    assert main(["report", str(out)]) == 0
    assert (out / "report" / "tables" / "confusion.csv").exists()


def test_export_gives_a_plain_pipeline_the_class_names(three, tmp_path):
    folder = tmp_path / "exported"
    assert main(["export", str(three / "lora"), "--out", str(folder)]) == 0
    texts = _predictions(three, "lora")["text"].tolist()[:12]
    script = ("import json, sys\nsys.modules['sendit'] = None\nfrom transformers import pipeline\n"
              "clf = pipeline('text-classification', model=sys.argv[1], device='cpu')\n"
              "print(json.dumps(clf(json.loads(sys.argv[2]), top_k=None, truncation=True)))")
    res = subprocess.run([sys.executable, "-c", script, str(folder), json.dumps(texts)], check=True, timeout=300,
                         capture_output=True, text=True)
    theirs = np.array([[{d["label"]: d["score"] for d in r}[c] for c in THREE] for r in json.loads(res.stdout)])
    ours = _predictions(three, "lora")[PROBS3].to_numpy()[:12]
    assert np.abs(theirs - ours).max() < paths_atol(1e-5)
    assert "0 = negative, 1 = neutral, 2 = positive" in (folder / "README.md").read_text()


def test_report_shows_class_counts_per_class_metrics_and_a_k_by_k_confusion_matrix(three):
    assert main(["report", str(three)]) == 0
    tables = three / "report" / "tables"
    counts = pd.read_csv(tables / "class_counts.csv")
    assert list(counts["split"]) == ["train", "validation", "held-out split"] and set(THREE) <= set(counts.columns)
    confusion = pd.read_csv(tables / "confusion.csv")
    lora = confusion[confusion["name"] == "lora"]
    assert list(lora["true"]) == THREE and [f"predicted {c}" for c in THREE] <= list(confusion.columns)
    p = _predictions(three, "lora")
    cm = lora[[f"predicted {c}" for c in THREE]].to_numpy()
    assert cm.sum() == len(p) and np.trace(cm) == (p["label"] == p["prediction"]).sum()
    per_class = pd.read_csv(tables / "per_class.csv")
    assert sorted(per_class[per_class["name"] == "lora"]["class"]) == THREE
    assert (three / "report" / "figures" / "confusion_matrices.png").exists()
    assert "neutral" in (three / "report" / "index.html").read_text()


def test_a_teacher_of_other_classes_is_refused(three, capsys):
    assert main(["distill", "--teacher", str(three / "full"), "--labels", "negative,positive", "--student-layers",
                 "1", "--no-report"]) == 2
    assert "the teacher" in capsys.readouterr().err


@pytest.fixture(scope="module")
def five(tmp_path_factory):
    """A tiny BERT on five classes named by the data's own words, the training loss weighted by class."""
    root = tmp_path_factory.mktemp("five")
    rng = np.random.default_rng(0)
    rows = [(c, f"{' '.join(rng.permutation(WORDS[c].split()))} {i}") for c in EMOTIONS for i in range(30)]
    rows += [("joy", f"yay fun happy {i}") for i in range(40)]  # skewed
    data = root / "emotions.csv"
    pd.DataFrame(rows, columns=["label", "text"]).to_csv(data, index=False)
    run = root / "run"
    assert main(tiny_run_args(save_tiny_bert(root / "bert"), run, "head,lora,full", "--data", str(data),
                              "--test-file", "none", "--class-balance", "weight", "--threads", "1")) == 0
    return run


def test_five_classes_from_the_data_on_an_encoder(five):
    assert read_manifest(five)["data"]["labels"] == EMOTIONS
    for method in ("head", "lora", "full"):
        p = _predictions(five, method)
        assert [c for c in p.columns if c.startswith("prob_")] == [f"prob_{c}" for c in EMOTIONS]
    assert json.loads((five / "full" / "config.json").read_text())["id2label"]["4"] == "sadness"
    assert sendit.load(five / "lora").model.config.num_labels == 5


def test_binary_labels_given_explicitly_change_nothing(tiny_opt, tmp_path):
    """--labels negative,positive reads the default data as the default does: the same predictions, bit for bit;
    and a binary run writes the study's columns only."""
    assert main(tiny_run_args(tiny_opt, tmp_path / "a", "head", "--threads", "1")) == 0
    assert main(tiny_run_args(tiny_opt, tmp_path / "b", "head", "--threads", "1", "--labels", "negative,positive")) == 0
    a, b = ((tmp_path / r / "head_inference_predictions.csv").read_bytes() for r in "ab")
    assert a == b
    assert a.splitlines()[0] == b"text,label,prediction,prob_positive,method,seed,test_set,row_id"


def test_tune_tunes_and_confirms_three_classes(tiny_opt, tmp_path):
    run = tmp_path / "tuned"
    assert main(["tune", "--model", str(tiny_opt), "--methods", "head,lora", "--data", "sentiment140-manual",
                 "--test-file", "none", "--labels", ",".join(THREE), "--train-size", "96", "--val-size", "32",
                 "--test-size", "32", "--epochs", "1", "--batch-size", "16", "--threads", "1", "--trials", "1",
                 "--no-report", "--out", str(run)]) == 0
    assert read_manifest(run)["data"]["labels"] == THREE
    for method in ("head", "lora"):
        assert set(PROBS3) <= set(_predictions(run, method).columns)
        assert sendit.load(run / method).model.config.num_labels == 3


def test_an_exported_adapter_names_how_to_load_k_classes(three, tmp_path):
    assert main(["export", str(three / "lora"), "--out", str(tmp_path / "adapter"), "--no-merge"]) == 0
    readme = (tmp_path / "adapter" / "README.md").read_text()
    assert 'from_pretrained("THIS_FOLDER", num_labels=3, ignore_mismatched_sizes=True)' in readme
    assert json.loads((tmp_path / "adapter" / "sendit_model.json").read_text())["labels"] == THREE


def test_an_onnx_export_predicts_the_three_classes_of_the_sendit_model(three, tmp_path):
    pytest.importorskip("onnxruntime")
    folder = tmp_path / "onnx"
    assert main(["export", str(three / "lora"), "--out", str(folder), "--format", "onnx"]) == 0
    assert json.loads((folder / "sendit_model.json").read_text())["parity"]["label_agreement"] >= 0.999
    texts = _predictions(three, "lora")["text"].tolist()[:12]
    rows = sendit.load(folder).predict(texts)
    assert [sorted(r) for r in rows[:1]] == [sorted(["label", "label_name", *PROBS3])]
    ours = _predictions(three, "lora")[PROBS3].to_numpy()[:12]
    assert np.abs(np.array([[r[c] for c in PROBS3] for r in rows]) - ours).max() < paths_atol(1e-4)
    assert [r["label_name"] for r in rows] == [THREE[i] for i in ours.argmax(-1)]
