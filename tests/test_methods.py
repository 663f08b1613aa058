"""Each method trains exactly what it should, and a saved model reloads to identical predictions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import OPT_TOKENIZER, tiny_opt_config

from sendit.config.schema import MethodConfig, TrainConfig
from sendit.methods import METHODS, get_method
from sendit.methods.bitfit import bias_names
from sendit.run.model_folder import save_model_folder
from sendit.serve.model_folder import load
from sendit.train.batching import encode
from sendit.train.device import Processes
from sendit.train.engine import fit, predict
from sendit.train.models import head_parameter_names, load_model, model_from_config

TEXTS = ["i love this so much", "worst day ever", "meh", "so happy today!!", "sad and tired", "great game",
         "awful traffic again", "nice weather"] * 8
LABELS = np.array([1, 0, 0, 1, 0, 1, 0, 1] * 8)
pytestmark = pytest.mark.usefixtures("one_thread")


def _train(model, tok, method_name: str, epochs: int = 1):
    method = get_method(method_name)
    model = method.prepare(model, MethodConfig(lora_r=4, lora_alpha=8, lora_dropout=0.0))
    data = encode(tok, TEXTS, LABELS, 32)
    cfg = TrainConfig(epochs=epochs, batch_size=16, warmup_ratio=0.0, weight_decay=0.0, log_every=1000)
    result = fit(model, data, data, cfg, lr=0.05, accelerator=Processes(), seed=0, log=lambda s: None)
    return model, result


def _base_state(model) -> dict[str, torch.Tensor]:
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return {n: p.detach().clone() for n, p in base.named_parameters()}


@pytest.mark.parametrize("method", sorted(METHODS))
def test_method_trains_only_what_it_should(tiny_opt, opt_tokenizer, method):
    model = load_model(str(tiny_opt), opt_tokenizer)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    head = set(head_parameter_names(model))
    biases = bias_names(model)
    trained, _ = _train(model, opt_tokenizer, method)
    base = trained.get_base_model() if hasattr(trained, "get_base_model") else trained
    after = {}
    for n, p in base.named_parameters():
        # peft keeps the original head under modules_to_save and wraps targets as base_layer.
        key = n.replace(".base_layer", "").replace(".modules_to_save.default", "")
        if "original_module" in n or "lora_" in n or "ia3_" in n:
            continue
        after[key] = p.detach()
    changed = {n for n in before if not torch.equal(before[n], after[n])}
    assert changed, "nothing trained"
    if method == "head":
        assert changed == head
    elif method == "bitfit":
        assert changed <= biases | head and head <= changed
        assert len(changed & biases) >= len(biases) // 2
    elif method == "full":
        used = {n for n in before if "embed_tokens" not in n}  # unused vocabulary rows may keep their values
        assert used <= changed
    else:  # peft methods: base weights bit-identical, only the head (modules_to_save) moves
        assert changed == head


def test_bitfit_on_opt_125m_shape_trains_exactly_its_biases_and_head(opt_tokenizer):
    from transformers import OPTConfig

    with torch.device("meta"):
        model = model_from_config(OPTConfig(), opt_tokenizer)
    model = get_method("bitfit").prepare(model, MethodConfig())
    trainable = {n: p.numel() for n, p in model.named_parameters() if p.requires_grad}
    assert sum(v for n, v in trainable.items() if n.endswith(".bias")) == 102_144
    assert {n for n in trainable if not n.endswith(".bias")} == {"score.weight"}
    assert trainable["score.weight"] == 768 * 2


@pytest.mark.parametrize("method", sorted(METHODS))
def test_saved_model_reloads_to_identical_predictions(tiny_opt, opt_tokenizer, tmp_path, method):
    model = load_model(str(tiny_opt), opt_tokenizer)
    trained, _ = _train(model, opt_tokenizer, method)
    acc = Processes()
    data = encode(opt_tokenizer, TEXTS, LABELS, 32)
    expected = predict(trained, data, acc).probs
    save_model_folder(trained, opt_tokenizer, tmp_path / method, method, str(tiny_opt),
                      {"max_length": 32, "normalize": False})
    for merge in (False, True):
        again = load(tmp_path / method, merge=merge, precision="fp32")
        got = again.predict_proba(TEXTS).probs
        if merge:
            np.testing.assert_allclose(got, expected, atol=1e-5)
        else:
            np.testing.assert_array_equal(got, expected)


def _headless_checkpoint(arch: str, folder: Path) -> Path:
    """A tiny pretrained-style checkpoint without the classifier's parts, as on the hub: loading it as a classifier
    leaves some parameters random (DistilBERT's pre_classifier; BERT's pooler, absent from a masked-LM
    checkpoint; OPT's score)."""
    from transformers import BertConfig, BertForMaskedLM, DistilBertConfig, DistilBertModel, OPTForCausalLM

    from sendit.train.models import load_tokenizer

    torch.manual_seed(0)
    tok = load_tokenizer(str(OPT_TOKENIZER) if arch == "opt" else "embedded")
    model = {
        "distilbert": lambda: DistilBertModel(DistilBertConfig(
            vocab_size=tok.vocab_size, dim=16, n_layers=2, n_heads=2, hidden_dim=32, max_position_embeddings=64)),
        "bert": lambda: BertForMaskedLM(BertConfig(
            vocab_size=tok.vocab_size, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
            intermediate_size=32, max_position_embeddings=64)),
        "opt": lambda: OPTForCausalLM(tiny_opt_config()),
    }[arch]()
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


@pytest.mark.parametrize("method", ["head", "bitfit"])
@pytest.mark.parametrize("arch", ["distilbert", "bert", "opt"])
def test_partial_methods_reload_exactly_when_the_checkpoint_lacks_head_parts(tmp_path, arch, method):
    """head/BitFit train a subset; the parameters the checkpoint did not hold start random and frozen, so they
    are saved too: two fresh loads (the random draws differ) predict exactly what the trained model did."""
    from sendit.train.models import NEW_PARAMETERS, load_tokenizer

    base = _headless_checkpoint(arch, tmp_path / "base")
    tok = load_tokenizer(str(base))
    model = load_model(str(base), tok)
    frozen_new = {n for n, p in model.named_parameters() if n in getattr(model, NEW_PARAMETERS)
                  and n not in head_parameter_names(model)}
    assert bool(frozen_new) == (arch != "opt")  # the case under test: random parameters that do not train
    trained, _ = _train(model, tok, method)
    expected = predict(trained, encode(tok, TEXTS, LABELS, 32), Processes()).probs
    save_model_folder(trained, tok, tmp_path / method, method, str(base), {"max_length": 32, "normalize": False})
    for seed in (1, 2):
        torch.manual_seed(seed)
        again = load(tmp_path / method, merge=False, precision="fp32")
        np.testing.assert_array_equal(again.predict_proba(TEXTS).probs, expected)
    reloaded = get_method(method).load(tmp_path / method, lambda: load_model(str(base), tok))
    assert ({n for n, p in reloaded.named_parameters() if p.requires_grad}
            == {n for n, p in trained.named_parameters() if p.requires_grad})  # the saved random parts stay frozen


def test_fit_keeps_the_best_epoch_and_logs_every_epoch(tiny_opt, opt_tokenizer):
    model = load_model(str(tiny_opt), opt_tokenizer)
    trained, result = _train(model, opt_tokenizer, "full", epochs=3)
    assert [h["epoch"] for h in result.history][:1] == [1]
    best = max(result.history, key=lambda h: h["val_f1"])
    assert result.best_epoch == best["epoch"] and result.best_val_f1 == best["val_f1"]
    acc = Processes()
    from sendit.train.engine import evaluate_loss

    again = evaluate_loss(trained, encode(opt_tokenizer, TEXTS, LABELS, 32), acc, 64)
    assert again["f1"] == pytest.approx(result.best_val_f1)


def test_opt_pooling_is_padding_invariant(tiny_opt, opt_tokenizer):
    """OPT classifies from the last non-pad token: padding (either side) must not change a text's logits."""
    model = load_model(str(tiny_opt), opt_tokenizer).eval()
    texts = ["short", "a much longer tweet that needs many more tokens than the other one"]
    with torch.no_grad():
        alone = model(**opt_tokenizer(texts[:1], return_tensors="pt")).logits
        for side in ("right", "left"):
            opt_tokenizer.padding_side = side
            batch = opt_tokenizer(texts, return_tensors="pt", padding=True)
            assert (batch["input_ids"][0] == opt_tokenizer.pad_token_id).any()
            padded = model(**batch).logits[:1]
            torch.testing.assert_close(padded, alone, atol=1e-5, rtol=1e-5)
    opt_tokenizer.padding_side = "right"


def test_length_grouped_batches_cover_every_row_once_and_depend_on_seed_and_epoch():
    from sendit.train.batching import length_grouped_batches

    lengths = np.random.default_rng(0).integers(1, 60, size=1000)
    b = length_grouped_batches(lengths, 32, seed=1, epoch=1)
    flat = [i for batch in b for i in batch]
    assert sorted(flat) == list(range(1000))
    assert b == length_grouped_batches(lengths, 32, seed=1, epoch=1)
    assert b != length_grouped_batches(lengths, 32, seed=1, epoch=2)
    padded = sum(len(x) * lengths[x].max() for x in b)
    shuffled = [list(range(i, min(i + 32, 1000))) for i in range(0, 1000, 32)]
    assert padded < 0.75 * sum(len(x) * lengths[x].max() for x in shuffled)


def test_compile_flag_smoke_with_the_eager_backend(tiny_opt, opt_tokenizer, monkeypatch):
    """A smoke test: `--compile` hands the model to torch.compile (traced here by dynamo with the eager backend,
    which generates no kernels: seconds, not minutes) and the compiled model trains to the same weights as the
    plain one, since the optimizer holds the same tensors. The real compiler, inductor, runs in the slow test
    test_training_checks.py::test_compile_flag_runs_the_inductor_compiler."""
    calls = []
    real_compile = torch.compile

    def recording_compile(model, **kw):
        calls.append(kw)
        return real_compile(model, backend="eager", **kw)

    def train(compile_: bool):
        torch.manual_seed(0)  # LoRA's A matrices start random
        model = get_method("lora").prepare(load_model(str(tiny_opt), opt_tokenizer),
                                           MethodConfig(lora_r=4, lora_alpha=8, lora_dropout=0.0))
        data = encode(opt_tokenizer, TEXTS, LABELS, 32)
        cfg = TrainConfig(epochs=1, batch_size=16, warmup_ratio=0.0, weight_decay=0.0, compile=compile_)
        res = fit(model, data, data, cfg, lr=0.05, accelerator=Processes(), seed=0, log=lambda s: None)
        return model, res

    monkeypatch.setattr(torch, "compile", recording_compile)
    plain, _ = train(False)
    assert calls == []
    compiled, compiled_res = train(True)
    assert calls == [{"dynamic": True}]
    assert np.isfinite(compiled_res.history[0]["train_loss"])
    for (n, a), (_, b) in zip(plain.named_parameters(), compiled.named_parameters()):
        if a.requires_grad:
            torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4, msg=n)
