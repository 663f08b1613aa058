"""The training loop does what it claims: the best epoch is what gets saved and tested, adapters train, the
schedule follows optimizer steps under gradient accumulation, prediction runs in eval mode, `--compile` runs the
real compiler, and the teacher-logit cache keys everything its logits depend on. Each test was seen to fail with
the feature it names removed."""

from __future__ import annotations

import copy
import itertools
import math
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from helpers import OPT_TOKENIZER, tiny_opt_config, tiny_run_args
from safetensors.torch import load_file
from torch.optim.optimizer import register_optimizer_step_pre_hook

from sendit.config.schema import MethodConfig, TrainConfig
from sendit.train.device import Processes
from sendit.train.batching import collate, encode, length_grouped_batches
from sendit.train.engine import fit, predict
from sendit.methods import get_method
from sendit.train.models import load_model, load_tokenizer, model_from_config

pytestmark = pytest.mark.usefixtures("one_thread")

TEXTS = ["i love this so much", "worst day ever", "meh", "so happy today!!", "sad and tired", "great game",
         "awful traffic again", "nice weather"]
LABELS = [1, 0, 0, 1, 0, 1, 0, 1]


def _data(tok, copies: int):
    return encode(tok, TEXTS * copies, np.array(LABELS * copies), 32)


def _quiet_fit(model, data, cfg: TrainConfig, lr: float = 0.05):
    return fit(model, data, data, cfg, lr=lr, accelerator=Processes(), seed=0, log=lambda s: None)


# ------------------------------------------------------------------------------------------------ best epoch
def test_the_best_epoch_not_the_last_is_saved_and_tested(tiny_opt, tmp_path, monkeypatch):
    """Epoch 1 learns a task the tiny model masters at once (the last word says good or bad); epochs 2 to 6 then
    learn the opposite labels until validation F1 is 0, so epoch 1 is the best (epochs 2 and 3 tie it at best, and
    a tie keeps the earlier epoch). The saved weights must be epoch 1's, and the test metrics the run writes must
    be those of a model that still gets the task right."""
    from sendit.run import method as workflow
    from sendit.cli import main

    rows = [(f"day number {i} was {'good' if i % 2 else 'bad'}", "positive" if i % 2 else "negative")
            for i in range(200)]
    pd.DataFrame(rows, columns=["text", "label"]).to_csv(tmp_path / "words.csv", index=False)
    real_fit, epoch1 = workflow.fit, {}

    def fit_that_unlearns(model, train, *args, **kw):
        per_epoch = math.ceil(len(train) / args[1].batch_size)  # args: val, cfg, ...
        calls, ce = itertools.count(), kw["loss_fn"]

        def loss_fn(logits, batch):
            n = next(calls)
            if n == per_epoch:  # the first batch of epoch 2: no step taken yet, the weights are epoch 1's
                epoch1.update({k: p.detach().clone() for k, p in model.named_parameters() if p.requires_grad})
            return ce(logits, {**batch, "labels": 1 - batch["labels"]} if n >= per_epoch else batch)

        return real_fit(model, train, *args, **{**kw, "loss_fn": loss_fn})

    monkeypatch.setattr(workflow, "fit", fit_that_unlearns)
    run = tmp_path / "run"
    args = tiny_run_args(tiny_opt, run, "head", "--data", str(tmp_path / "words.csv"), "--test-file", "none",
                         "--epochs", "6", "--patience", "6", "--warmup-ratio", "0", "--method-lr", "{head: 0.1}")
    assert main(args) == 0

    logs = pd.read_csv(run / "head_epoch_logs.csv")
    assert logs["epoch"].tolist() == [1, 2, 3, 4, 5, 6]
    assert logs["val_f1"].iloc[0] > 0.9 and logs["val_f1"].iloc[-1] < 0.5  # the case is built: epoch 1 is best
    assert pd.read_csv(run / "head_results.csv")["best_epoch"].tolist() == [1]
    saved = load_file(str(run / "head" / "trained_params.safetensors"))
    assert epoch1 and set(epoch1) <= set(saved)
    for name, tensor in epoch1.items():
        torch.testing.assert_close(saved[name], tensor, rtol=0, atol=0, msg=name)
    summary = pd.read_csv(run / "head_inference_metrics_summary.csv")
    assert len(summary) == 1 and summary["accuracy"].iloc[0] > 0.9  # the held-out split, the only test set


# ------------------------------------------------------------------------------------------------ adapters
@pytest.mark.parametrize("method", ["lora", "dora", "ia3"])
def test_peft_adapters_train(tiny_opt, opt_tokenizer, method):
    """Every adapter tensor (LoRA's A and B, DoRA's magnitudes, IA3's scales) moves in training; a method whose
    adapters stayed frozen would train only the head and pass every other test."""
    model = get_method(method).prepare(load_model(str(tiny_opt), opt_tokenizer),
                                       MethodConfig(lora_r=4, lora_alpha=8, lora_dropout=0.0))
    adapter = {n: p for n, p in model.named_parameters() if "lora_" in n or "ia3_" in n}
    assert adapter and all(p.requires_grad for p in adapter.values())
    before = {n: p.detach().clone() for n, p in adapter.items()}
    _quiet_fit(model, _data(opt_tokenizer, 8), TrainConfig(epochs=1, batch_size=16, warmup_ratio=0.0,
                                                           weight_decay=0.0))
    unchanged = [n for n, p in adapter.items() if torch.equal(p.detach(), before[n])]
    assert not unchanged, f"{len(unchanged)} of {len(adapter)} adapter tensors did not train, e.g. {unchanged[0]}"


# ------------------------------------------------------------------------------------------------ schedule
def test_warmup_and_decay_count_optimizer_steps_under_gradient_accumulation(tiny_opt, opt_tokenizer):
    """104 rows in batches of 16 are 7 batches an epoch; with --grad-accum 2 that is 4 optimizer steps an epoch
    (the last after a single batch), 8 in 2 epochs. --warmup-ratio 0.25 warms up over 2 steps, then the rate
    decays linearly to 0 at step 8; each step must use exactly that rate. The first step's gradient is the mean
    of the first two batches' (not of the first alone, the `step % accum == 0` slip)."""
    lrs, grads = [], []

    def record(opt, args, kwargs):
        lrs.append(opt.param_groups[0]["lr"])
        grads.append([p.grad.clone() for g in opt.param_groups for p in g["params"]])

    model = get_method("head").prepare(load_model(str(tiny_opt), opt_tokenizer), MethodConfig())
    start = copy.deepcopy(model)
    data = _data(opt_tokenizer, 13)
    cfg = TrainConfig(epochs=2, batch_size=16, grad_accum=2, warmup_ratio=0.25, weight_decay=0.0, max_grad_norm=0,
                      precision="fp32")
    handle = register_optimizer_step_pre_hook(record)
    try:
        _quiet_fit(model, data, cfg, lr=0.01)
    finally:
        handle.remove()
    total, warmup = 8, 2
    expected = [0.01 * (k / warmup if k < warmup else (total - k) / (total - warmup)) for k in range(total)]
    assert len(lrs) == total
    np.testing.assert_allclose(lrs, expected, rtol=1e-12, atol=1e-15)

    for idx in length_grouped_batches(data.lengths, 16, seed=0, epoch=1)[:2]:
        b = collate(data, idx, torch.device("cpu"))
        logits = start(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits
        (F.cross_entropy(logits, b["labels"]) / 2).backward()
    want = [p.grad for p in start.parameters() if p.requires_grad]
    assert len(grads[0]) == len(want) == 1  # the head's one weight matrix
    torch.testing.assert_close(grads[0][0], want[0], rtol=1e-5, atol=1e-7)


# ------------------------------------------------------------------------------------------------ eval mode
def test_predict_runs_the_model_in_eval_mode(opt_tokenizer):
    """With dropout 0.5 a model left in training mode predicts noise; predict must switch it to eval mode, so its
    probabilities are those of an eval-mode forward pass, whatever mode the model was in."""
    model = model_from_config(tiny_opt_config(dropout=0.5, attention_dropout=0.5), opt_tokenizer, seed=0)
    data = _data(opt_tokenizer, 1)
    batch = collate(data, list(range(len(data))), torch.device("cpu"))
    with torch.no_grad():
        model.train()
        noisy = [model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits for _ in range(2)]
        assert not torch.equal(*noisy)  # dropout is active in training mode: the case can fail
        model.eval()
        expected = torch.softmax(model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits,
                                 -1).numpy()
    for _ in range(2):
        model.train()
        np.testing.assert_allclose(predict(model, data, Processes()).probs, expected, atol=1e-6)


# ------------------------------------------------------------------------------------------------ compile
@pytest.mark.slow
def test_compile_flag_runs_the_inductor_compiler(tiny_opt, opt_tokenizer):
    """`--compile` trains through torch.compile's default backend, inductor, which generates and builds C++ (or
    Triton) kernels: minutes on a small CPU even for a tiny model, hence `slow`. The quick test in test_methods.py
    is a smoke test with the eager backend. Inductor's counters show that it compiled graphs."""
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    model = get_method("bitfit").prepare(load_model(str(tiny_opt), opt_tokenizer), MethodConfig())
    before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    cfg = TrainConfig(epochs=1, batch_size=16, warmup_ratio=0.0, weight_decay=0.0, compile=True)
    result = _quiet_fit(model, _data(opt_tokenizer, 4), cfg)
    assert np.isfinite(result.history[0]["train_loss"])
    compiled = sum(counters["inductor"].values())
    assert counters["stats"]["unique_graphs"] >= 1 and compiled > 0, dict(counters)
    assert any(not torch.equal(p.detach(), before[n]) for n, p in model.named_parameters() if p.requires_grad)


# ------------------------------------------------------------------------------------------------ teacher cache
def test_teacher_cache_key_names_the_precision_and_the_hub_revision(tmp_path, monkeypatch):
    """bf16 logits differ from fp32 ones, and a hub base model changes under its id: either gives another cache
    file. A hub base is named by the commit of its cached snapshot."""
    from huggingface_hub import constants

    from sendit.recipes.distill import students as S
    from sendit.run.model_folder import save_model_folder

    tok = load_tokenizer(str(OPT_TOKENIZER))
    teacher = tmp_path / "teacher"
    model = get_method("lora").prepare(model_from_config(tiny_opt_config(), tok), MethodConfig(lora_r=2))
    save_model_folder(model, tok, teacher, "lora", "example/tiny-opt", {"max_length": 32})
    train = _data(tok, 1)
    hub = tmp_path / "hub"
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(hub))

    def key(precision: str) -> str:
        return S.cache_key(teacher, train, 32, precision)

    assert S.hub_revision("example/tiny-opt") == "unknown"
    unknown = key("fp32")
    assert key("bf16") != unknown and key("fp32") == unknown
    repo = hub / "models--example--tiny-opt"
    for commit in ("a" * 40, "b" * 40):
        (repo / "snapshots" / commit).mkdir(parents=True)
        (repo / "snapshots" / commit / "config.json").write_text("{}")
    (repo / "refs").mkdir()
    keys = {}
    for commit in ("a" * 40, "b" * 40):
        (repo / "refs" / "main").write_text(commit)
        assert S.hub_revision("example/tiny-opt") == commit
        keys[commit] = key("fp32")
        assert key("bf16") != keys[commit]
    assert len({unknown, *keys.values()}) == 3

    # The cache file follows the key: a teacher in bf16 gets its own logits, not the fp32 ones.
    loads = []

    def teacher_in(precision: str):
        def loader():
            loads.append(precision)
            return SimpleNamespace(model=model, precision=precision)
        return loader

    files = [S.cached_teacher_logits(teacher_in(p), teacher, train, 32, tmp_path / "cache", Processes(), 4,
                                     log=lambda s: None, precision=p)[1] for p in ("fp32", "bf16", "fp32")]
    assert loads == ["fp32", "bf16"] and files[0] != files[1] and files[2] == files[0]
