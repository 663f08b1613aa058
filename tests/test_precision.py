"""Precision belongs to a model or a call, never to the process: bf16 and fp32 models, runs and accelerate users
mix in one process in any order, and each forward pass runs in its own model's precision."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from helpers import tiny_run_args

from sendit.cli import main
from sendit.train.device import ENV, PrecisionError, resolve_precision
from sendit.serve.model_folder import load

pytestmark = pytest.mark.usefixtures("one_thread")
TEXTS = ["what a great day", "worst service ever", "meh, it's ok I guess", "love it!!", "so sad today"]


def autocast_seen(model) -> list[bool]:
    """Records, for every forward pass of `model`, whether CPU bf16 autocast was on."""
    seen: list[bool] = []
    model.register_forward_pre_hook(lambda m, a: seen.append(torch.is_autocast_enabled("cpu")))
    return seen


@pytest.fixture(scope="module")
def trained(tiny_opt, tmp_path_factory):
    out = tmp_path_factory.mktemp("precision") / "run"
    assert main(tiny_run_args(tiny_opt, out, "lora", "--precision", "fp32")) == 0
    return out


@pytest.mark.parametrize("order", [("auto", "fp32", "bf16"), ("bf16", "fp32", "auto")])
def test_notebook_loads_the_same_model_in_several_precisions(trained, order):
    """`sendit.load(run/"lora")` then `sendit.load(run/"lora", precision="fp32")` (either order) used to raise
    accelerate's 'AcceleratorState has already been initialized'."""
    models = {p: load(trained / "lora", precision=p) for p in order}
    for p, m in models.items():
        assert m.precision == resolve_precision(p)
        seen = autocast_seen(m.model)
        m.predict(TEXTS)
        assert seen and all(s == (m.precision == "bf16") for s in seen), (p, seen)
    fp32 = load(trained / "lora", precision="fp32").predict_proba(TEXTS).probs
    np.testing.assert_array_equal(models["fp32"].predict_proba(TEXTS).probs, fp32)
    np.testing.assert_allclose(models["bf16"].predict_proba(TEXTS).probs, fp32, atol=0.05)


def test_training_in_fp32_after_bf16_in_one_process(tiny_opt, tmp_path, monkeypatch):
    import sendit.train.engine as engine

    calls: list[str] = []
    real_autocast = engine.autocast

    def spy(device, precision):
        calls.append(precision)
        return real_autocast(device, precision)

    monkeypatch.setattr(engine, "autocast", spy)
    for i, precision in enumerate(("bf16", "fp32", "bf16")):
        calls.clear()
        out = tmp_path / f"{i}-{precision}"
        assert main(tiny_run_args(tiny_opt, out, "bitfit", "--precision", precision)) == 0
        assert set(calls) == {precision}, "every forward (train, validate, test) in the run's precision"
        run = json.loads((out / "run.json").read_text())
        assert run["hardware"]["precision"] == precision


def test_a_trainer_style_bf16_accelerator_does_not_leak_into_sendit(trained):
    """accelerate's process-wide state set to bf16 by someone else (a Trainer) neither breaks sendit nor changes
    the precision of a sendit model's forward pass."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state()
    try:
        Accelerator(mixed_precision="bf16", cpu=True)
        m = load(trained / "lora", precision="fp32")
        seen = autocast_seen(m.model)
        m.predict(TEXTS)
        assert seen and not any(seen)
        Accelerator(mixed_precision="bf16", cpu=True)  # and sendit did not change that state either
    finally:
        AcceleratorState._reset_state()


def test_sendit_precision_forces_auto_only(monkeypatch):
    monkeypatch.setenv(ENV, "bf16")
    assert resolve_precision("auto") == "bf16" and resolve_precision("fp32") == "fp32"
    monkeypatch.setenv(ENV, "fp32")
    assert resolve_precision("auto") == "fp32" and resolve_precision("bf16") == "bf16"
    monkeypatch.setenv(ENV, "fp16")
    with pytest.raises(PrecisionError, match="SENDIT_PRECISION='fp16' is not a precision; set it to bf16 or fp32"):
        resolve_precision("auto")
    monkeypatch.delenv(ENV)
    assert resolve_precision("auto", torch.device("cpu")) in ("bf16", "fp32")  # the host decides; never asserted
