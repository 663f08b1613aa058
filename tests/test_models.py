"""Model folders and hub names (sendit.train.models): a folder without config.json, a close name, the hub
offline, custom model code refused without --trust-remote-code."""

from __future__ import annotations

import pytest
from helpers import save_tiny_opt, user_error

from sendit.cli import main


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """A tiny OPT classifier folder of this module's own (the typo and bad-input checks name it)."""
    return save_tiny_opt(tmp_path_factory.mktemp("opt"))


def test_model_folder_without_config_and_close_name(tmp_path, capsys, model):
    broken = tmp_path / "broken-model"
    broken.mkdir()
    (broken / "model.safetensors").write_bytes(b"")
    msg = user_error(capsys, ["run", "--model", str(broken), "--out", str(tmp_path / "r")])
    assert f"model folder '{broken}' has no config.json (it holds: model.safetensors)" in msg
    typo = str(model)[:-1]
    msg = user_error(capsys, ["run", "--model", typo, "--out", str(tmp_path / "r")])
    assert f"Did you mean '{model}'?" in msg


def test_hub_model_offline_fails_fast_and_clearly(tmp_path, capsys, monkeypatch):
    from sendit.train import models

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    models._hub_reachable.cache_clear()
    try:
        msg = user_error(capsys, ["run", "--model", "someone/no-such-model-xyz", "--out", str(tmp_path / "r")])
    finally:
        models._hub_reachable.cache_clear()
    assert "'someone/no-such-model-xyz' is not a local folder, not in the Hugging Face cache" in msg
    assert "hf download someone/no-such-model-xyz" in msg


def test_custom_model_code_is_not_run_without_the_flag(tmp_path, capsys):
    folder = save_tiny_opt(tmp_path / "custom")
    config = (folder / "config.json").read_text()
    (folder / "config.json").write_text(config.replace(
        '"model_type": "opt"',
        '"model_type": "custom_opt", "auto_map": {"AutoConfig": "custom.CustomConfig", '
        '"AutoModelForSequenceClassification": "custom.CustomModel"}'))
    sentinel = tmp_path / "code-ran"
    (folder / "custom.py").write_text(f"from pathlib import Path\nPath({str(sentinel)!r}).touch()\n")
    code = main(["run", "--model", str(folder), "--methods", "head", "--train-size", "32", "--val-size", "8",
                 "--test-size", "8", "--test-file", "none", "--out", str(tmp_path / "run"), "--no-report"])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert "sendit runs only with --trust-remote-code true" in err
    assert not sentinel.exists()
