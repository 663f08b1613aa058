"""Adding a PEFT method is one file plus one registry line: a LoRA variant defined and registered here, and nowhere
else, with a setting of its own (a flag and a config key), runs, saves, reloads, exports (merged and as an adapter)
and is reported with no other change."""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pytest
from helpers import tiny_run_args

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

