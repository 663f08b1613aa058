"""Adding a PEFT method is one file plus one registry line: a LoRA variant defined and registered here, and nowhere
else, with a setting of its own (a flag and a config key), runs, saves, reloads, exports (merged and as an adapter)
and is reported with no other change. A method from another package arrives through the `sendit.methods` entry
point: the command line trains it and `sendit predict` loads its model folders, in fresh processes."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers import tiny_run_args

import sendit
from sendit.cli import main
from sendit.config.fields import setting
from sendit.config.schema import field_index
from sendit.methods import METHODS, register
from sendit.methods.lora import Lora, LoraSettings
from sendit.serve.model_folder import load

pytestmark = pytest.mark.usefixtures("one_thread")
TEXTS = ["what a great day", "worst service ever", "so sad today", "love it!!"]


@dataclass
class EverywhereSettings(LoraSettings):
    everywhere_r: int = setting(4, "rank of the adapters on every linear layer", low=1)  # LoraSettings checks it


class LoraEverywhere(Lora):
    """LoRA on every linear layer but the head (the whole file of a new method)."""

    name = "lora-everywhere"
    default_lr = 1e-2
    display_name = "LoRA (all linear)"
    cost_rank = 3.5  # between LoRA and DoRA
    search_space = {"lr": {"low": 1e-3, "high": 3e-2, "log": True}, "everywhere_r": {"choices": [2, 4]}}
    settings = EverywhereSettings

    def peft_config(self, model, cfg):
        config = super().peft_config(model, cfg)
        config.target_modules, config.r = "all-linear", cfg.everywhere_r
        return config


@pytest.fixture
def plugin():
    method = register(LoraEverywhere())  # the one registry line
    yield method
    METHODS.pop(method.name)


def test_a_new_method_needs_one_file_and_one_registry_line(plugin, tiny_opt, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(tiny_run_args(tiny_opt, run, f"bitfit,{plugin.name}", "--everywhere-r", "2")) == 0
    results = pd.read_csv(run / f"{plugin.name}_results.csv").iloc[0]
    assert results["lr"] == plugin.default_lr and 0 < results["trainable_params"] < results["total_params"]

    # saved as a peft adapter on every linear layer (not only the attention projections of plain LoRA), with the
    # rank its own setting gave, which run.json records like any other
    adapter = json.loads((run / plugin.name / "adapter_config.json").read_text())
    leaves = {name.rsplit(".", 1)[-1] for name in adapter["target_modules"]}
    assert leaves >= {"fc1", "fc2", "q_proj", "v_proj", "k_proj", "out_proj"} and adapter["r"] == 2
    assert json.loads((run / "run.json").read_text())["config"]["method"]["everywhere_r"] == 2
    merged, unmerged = load(run / plugin.name, precision="fp32"), load(run / plugin.name, merge=False,
                                                                         precision="fp32")
    np.testing.assert_allclose(merged.predict_proba(TEXTS).probs, unmerged.predict_proba(TEXTS).probs, atol=1e-5)

    # export: merged by default; --no-merge keeps the adapter because the method says it is one
    assert main(["export", str(run / plugin.name), "--out", str(tmp_path / "merged")]) == 0
    assert (tmp_path / "merged" / "config.json").exists() and not (tmp_path / "merged" / "adapter_config.json").exists()
    assert main(["export", str(run / plugin.name), "--out", str(tmp_path / "adapter"), "--no-merge"]) == 0
    assert (tmp_path / "adapter" / "adapter_config.json").exists()
    from transformers import AutoModelForSequenceClassification

    plain = AutoModelForSequenceClassification.from_pretrained(tmp_path / "merged").eval()
    enc = merged.tokenizer(TEXTS, return_tensors="pt", padding=True)
    import torch

    with torch.no_grad():
        probs = torch.softmax(plain(**enc).logits, -1).numpy()
    np.testing.assert_allclose(probs, merged.predict_proba(TEXTS).probs, atol=1e-4)

    # the report reads it like any method
    assert main(["report", str(run)]) == 0
    table = pd.read_csv(run / "report" / "tables" / "test.csv")
    assert {"BitFit", plugin.display_name} <= set(table["method"])  # each method names itself


def test_a_new_method_checks_its_own_settings_and_takes_them_away_when_it_leaves(tiny_opt, tmp_path, capsys):
    method = register(LoraEverywhere())
    try:
        assert main(tiny_run_args(tiny_opt, tmp_path / "run", method.name, "--everywhere-r", "0")) == 2
        err = capsys.readouterr().err
        assert "--everywhere-r must be at least 1 (got 0)" in err and "Traceback" not in err
        assert not (tmp_path / "run").exists()
    finally:
        METHODS.pop(method.name)
    assert "everywhere_r" not in field_index() and "lora_r" in field_index()


def test_a_setting_that_another_setting_already_names_is_refused():
    """One flag per name: a plugin's setting may not shadow a run setting, nor redeclare a shared one otherwise."""
    from sendit.config.schema import method_config

    @dataclass
    class Shadows:
        epochs: int = setting(3, "would hide --epochs")

    @dataclass
    class Redeclares:
        target_modules: list | None = setting(["q_proj"], "LoRA's, with another default")

    for settings in (Shadows, Redeclares):
        method = type("Bad", (LoraEverywhere,), {"name": "bad", "settings": settings})()
        register(method)
        try:
            with pytest.raises(TypeError, match="epochs|target_modules"):
                method_config()
        finally:
            METHODS.pop(method.name)
    assert "target_modules" in field_index()



# A package's whole method file: LoRA on the feed-forward layers only, on the shared peft adapter base.
PLUGIN = '''"""LoRA on the feed-forward layers only (a method from another package)."""
from sendit.methods import register
from sendit.methods.adapter import PeftAdapter


class FeedForwardLora(PeftAdapter):
    name = "ffn-lora"
    default_lr = 1e-2
    display_name = "LoRA (feed-forward)"
    cost_rank = 3.5
    search_space = {"lr": {"low": 1e-3, "high": 3e-2, "log": True}}

    def peft_config(self, model, cfg):
        from peft import LoraConfig, TaskType

        return LoraConfig(task_type=TaskType.SEQ_CLS, r=2, lora_alpha=4, target_modules=["fc1", "fc2"])


register(FeedForwardLora())
'''
SRC = Path(sendit.__file__).parents[1]


def installed_plugin(folder: Path, source: str, dist: str = "sendit-toy") -> Path:
    """What `pip install` of a package with `[project.entry-points."sendit.methods"] ffn-lora = "sendit_toy"` leaves
    on sys.path: the module and a dist-info folder, which importlib.metadata reads like any installed package."""
    folder.mkdir()
    (folder / "sendit_toy.py").write_text(source)
    info = folder / f"{dist.replace('-', '_')}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[sendit.methods]\nffn-lora = sendit_toy\n")
    return folder


def sendit_cli(*args: str, path: list[Path]) -> subprocess.CompletedProcess:
    """`python -m sendit.cli ARGS` (or `python -c CODE`) in a fresh process that sees only `path` (and sendit)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "SENDIT_PRECISION": "fp32",
           "PYTHONPATH": os.pathsep.join(str(p) for p in [*path, SRC])}
    command = list(args) if args[0] == "-c" else ["-m", "sendit.cli", *args]
    return subprocess.run([sys.executable, *command], env=env, capture_output=True, text=True, timeout=300)


def test_a_method_from_an_installed_package_trains_and_its_model_folder_loads_in_predict(tiny_opt, tmp_path):
    plugin, run = installed_plugin(tmp_path / "site", PLUGIN), tmp_path / "run"
    # imported on the registry's first read, not by importing sendit.methods (nor a method file)
    lazy = sendit_cli("-c", "import sys; from sendit.methods import METHODS, lora; before = 'sendit_toy' in sys.modules; "
                            "print(before, 'ffn-lora' in METHODS, 'sendit_toy' in sys.modules)", path=[plugin])
    assert lazy.stdout.split() == ["False", "True", "True"], lazy.stderr
    listed = sendit_cli("methods", path=[plugin])
    assert listed.returncode == 0 and "ffn-lora" in listed.stdout and "feed-forward layers only" in listed.stdout

    trained = sendit_cli(*tiny_run_args(tiny_opt, run, "ffn-lora"), path=[plugin])
    assert trained.returncode == 0, trained.stderr
    adapter = json.loads((run / "ffn-lora" / "adapter_config.json").read_text())  # the plugin's own peft config
    assert {m.rsplit(".", 1)[-1] for m in adapter["target_modules"]} == {"fc1", "fc2"} and adapter["r"] == 2
    manifest = json.loads((run / "ffn-lora" / "sendit_model.json").read_text())
    assert manifest["method_package"] == {"name": "sendit-toy", "version": "0.1"}

    # a fresh process finds the method through the entry point and predicts what the run predicted
    expected = pd.read_csv(run / "ffn-lora_inference_predictions.csv").head(3)
    predicted = sendit_cli("predict", str(run / "ffn-lora"), *expected["text"], path=[plugin])
    assert predicted.returncode == 0, predicted.stderr
    got = pd.read_csv(io.StringIO(predicted.stdout))
    assert list(got["text"]) == list(expected["text"])
    np.testing.assert_allclose(got["prob_positive"], expected["prob_positive"], atol=2e-6)
    assert got["prob_positive"].nunique() > 1  # a model that learned something, not a constant

    # without the package: what to install, in one paragraph
    missing = sendit_cli("predict", str(run / "ffn-lora"), "so happy", path=[])
    assert missing.returncode == 2 and "Traceback" not in missing.stderr
    assert "method 'ffn-lora', which is not installed" in missing.stderr
    assert "pip install 'sendit-toy==0.1'" in missing.stderr and "sendit.methods" in missing.stderr


def test_a_plugin_that_fails_to_import_fails_only_its_own_method(tiny_opt, tmp_path):
    plugin = installed_plugin(tmp_path / "site", "import fancy_peft_that_is_not_installed\n", dist="sendit-broken")
    listed = sendit_cli("methods", path=[plugin])  # other commands and methods still work, with a warning
    assert listed.returncode == 0 and "lora" in listed.stdout and "ffn-lora" not in listed.stdout
    assert "warning: the method plugin 'ffn-lora' of the package 'sendit-broken'" in listed.stderr
    assert "ModuleNotFoundError" in listed.stderr and "Traceback" not in listed.stderr

    asked = sendit_cli(*tiny_run_args(tiny_opt, tmp_path / "run", "ffn-lora"), path=[plugin])
    assert asked.returncode == 2 and "Traceback" not in asked.stderr
    assert "error: the method plugin 'ffn-lora' of the package 'sendit-broken'" in asked.stderr
    assert "fancy_peft_that_is_not_installed" in asked.stderr and not (tmp_path / "run").exists()
