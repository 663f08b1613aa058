"""The engines `sendit bench` times, and how it times them.

The default protocol is **equal work**: every engine trains whole epochs of the same tweets, cut into the same
batches in the same order (sendit's length-grouped plan for the pass's seed; the Trainer reads the tweets in that
order with a sequential sampler), passes interleaved engine by engine and repeated, so that a change in the
machine's load hits every engine alike. The ratio is the median over repeats of the paired per-pass ratios, and
its spread (min-max) is reported. Short passes of a few steps (`--protocol smoke`) remain as a labelled smoke
mode only: there each engine times the batches its own sampler hands it, so they are not equal work and their
ratios flip with the protocol (on a bf16 CPU: 0.68-0.75x in 2-step passes, 1.37x over an equal-work epoch).

Heavy imports happen inside the functions so that `sendit --help` stays fast.
"""

from __future__ import annotations

import gc
import time
from pathlib import Path
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    from sendit.bench.training import Bench, BenchConfig

OPT_SHAPE = "opt-125m-shape"


# ------------------------------------------------------------------------------------------------ setup
def opt_tokenizer(folder: str | None):
    """The OPT tokenizer for the OPT-125m shape. Not shipped in the package (1.5 MB, OPT licence): a given
    folder, else facebook/opt-125m's in the local Hugging Face cache."""
    from transformers import AutoTokenizer

    from sendit.errors import ModelError
    from sendit.train.models import load_tokenizer

    if folder:
        return load_tokenizer(folder)
    try:
        tok = AutoTokenizer.from_pretrained("facebook/opt-125m", local_files_only=True)
        tok.padding_side = "right"
        return tok
    except (OSError, ValueError):
        pass
    raise ModelError(
        f"--model {OPT_SHAPE} needs the OPT tokenizer (vocab.json + merges.txt), which is not shipped in the "
        f"package and is not in the local Hugging Face cache. Pass --tokenizer DIR with a folder saved from "
        f"facebook/opt-125m (a source checkout has one: --tokenizer tests/data/opt-tokenizer; once online: python -c "
        f"\"from transformers import AutoTokenizer; AutoTokenizer.from_pretrained('facebook/opt-125m')"
        f".save_pretrained('opt-tok')\")."
    )


def prepare_model_source(cfg: BenchConfig, workdir: Path) -> tuple[str, object]:
    """(path or hub id, tokenizer). The OPT-125m shape is built once with random weights and saved, so every
    engine loads the very same weights the way it would load a checkpoint."""
    from transformers import OPTConfig

    from sendit.train.models import load_tokenizer, model_from_config

    if cfg.model != OPT_SHAPE:
        return cfg.model, load_tokenizer(cfg.model)
    tok = opt_tokenizer(cfg.tokenizer)
    folder = workdir / "base"
    model_from_config(OPTConfig(), tok, seed=cfg.seed).save_pretrained(folder)
    tok.save_pretrained(folder)
    return str(folder), tok


def tweets(n_train: int, n_val: int, n_test: int, seed: int):
    """Real tweets from the embedded sample, cleaned and split as a run does."""
    from sendit.config.schema import DataConfig
    from sendit.data.dataset import load_splits

    return load_splits(DataConfig(train_size=n_train, val_size=n_val, test_size=n_test, test_file="none",
                                  split_seed=seed))


def tiled(texts: list[str], labels, n: int) -> tuple[list[str], object]:
    """`n` rows from the given real tweets, repeated in order when `n` is larger: a GPU epoch of 50,000
    real-length tweets from a sample of ~20,000 distinct ones."""
    import numpy as np

    idx = np.arange(n) % len(texts)
    return [texts[i] for i in idx], np.asarray(labels)[idx]


# ------------------------------------------------------------------------------------------------ engines
def sendit_train(model, train, val, cfg: BenchConfig, lr: float, procs, epochs: int, precision: str,
                 max_batches: int | None = None, seed: int | None = None):
    """sendit's own loop (`engine.fit`), validating after each epoch (not timed)."""
    from sendit.config.schema import TrainConfig
    from sendit.train.engine import fit

    tc = TrainConfig(epochs=epochs, batch_size=cfg.batch_size, patience=epochs + 1, compile=cfg.compile,
                     eval_batch_size=cfg.infer_batch_size, precision=precision)
    return fit(model, train, val, tc, lr, procs, cfg.seed if seed is None else seed, log=lambda s: None,
               desc="bench", max_batches=max_batches)


def hf_trainer(model, tok, texts: list[str], train, cfg: BenchConfig, lr: float, device, setting: str,
               workdir: Path, precision: str = "fp32", epochs: int = 1, steps: int | None = None,
               order: Callable[[int], list[int]] | None = None) -> Callable[[int], dict]:
    """The Hugging Face Trainer on the same tweets (`train` is their `Encoded` form). Each call of the returned
    function builds a Trainer and runs one `trainer.train()` (seeded) of `epochs` epochs or, given `steps`, that
    many steps, and returns each step's end time, each batch's size and non-padding tokens, and the memory it added.
    With `order(seed)`, the tweets are read sequentially in that order (equal work with sendit's batches);
    otherwise the setting's own sampler draws them ('tuned': length-grouped, 'naive': random)."""
    import torch
    from accelerate.state import AcceleratorState
    from transformers import DataCollatorWithPadding, Trainer, TrainerCallback, TrainingArguments, default_data_collator
    from transformers.trainer_callback import PrinterCallback

    from sendit.train.measure import PeakMemory

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    class StepClock(TrainerCallback):
        def __init__(self):
            self.ends: list[float] = []  # ends[0]: training starts; ends[i]: step i is done

        def on_train_begin(self, args, state, control, **kw):
            sync()
            self.ends = [time.perf_counter()]

        def on_step_end(self, args, state, control, **kw):
            sync()
            self.ends.append(time.perf_counter())

    labels = [int(y) for y in train.labels]
    if setting == "naive":  # tokenised once with padding to 128, as `dataset.map(tokenize)` does
        enc = tok(list(texts), padding="max_length", max_length=128, truncation=True)
        rows = [{"input_ids": i, "attention_mask": m, "labels": y}
                for i, m, y in zip(enc["input_ids"], enc["attention_mask"], labels)]
        collate = default_data_collator
    else:
        rows = [{"input_ids": ids, "attention_mask": [1] * len(ids), "labels": y}
                for ids, y in zip(train.input_ids, labels)]
        collate = DataCollatorWithPadding(tok)
    batches: list[tuple[int, int]] = []  # (tweets, non-padding tokens) of every batch, in order

    def counting_collate(features):
        batch = collate(features)
        batches.append((len(features), int(batch["attention_mask"].sum())))
        return batch

    bf16 = setting == "tuned" and precision == "bf16"
    sampling = "sequential" if order else "group_by_length" if setting == "tuned" else "random"

    def run(seed: int) -> dict:
        # accelerate holds the Trainer's mixed precision process-wide: each Trainer starts from a clean state
        # (sendit itself never reads or sets it, so its own passes are unaffected).
        AcceleratorState._reset_state()
        args = TrainingArguments(
            output_dir=str(workdir / f"trainer-{setting}"), per_device_train_batch_size=cfg.batch_size,
            learning_rate=lr, num_train_epochs=epochs, max_steps=steps or -1, weight_decay=0.01, warmup_steps=0.06,
            max_grad_norm=1.0, lr_scheduler_type="linear", bf16=bf16, use_cpu=device.type == "cpu", seed=seed,
            train_sampling_strategy=sampling, logging_strategy="no", save_strategy="no", eval_strategy="no",
            report_to="none", disable_tqdm=True,
        )
        data = [rows[i] for i in order(seed)] if order else rows
        clock = StepClock()
        trainer = Trainer(model=model, args=args, train_dataset=data, data_collator=counting_collate,
                          callbacks=[clock])
        trainer.remove_callback(PrinterCallback)
        batches.clear()
        with PeakMemory(device) as mem:
            trainer.train()
        return {"ends": clock.ends, "batches": list(batches), "memory_delta_mb": mem.delta_mb,
                "peak_memory_mb": mem.peak_mb, "precision": "bf16" if bf16 else "fp32"}

    return run


def timed_passes(fn: Callable[[], object], repeats: int, device) -> list[float]:
    from sendit.train.measure import Timer

    fn()  # warm-up
    out = []
    for _ in range(repeats):
        with Timer(device) as t:
            fn()
        out.append(t.seconds)
    return out


# ------------------------------------------------------------------------------------------------ training
def bench_training(b: Bench, name: str, texts: list[str], train, val) -> Path:
    """sendit, the tuned and the naive Trainer, each run pass by pass in turn; returns sendit's model folder."""
    from accelerate.utils import set_seed

    from sendit.config.schema import MethodConfig
    from sendit.methods import get_method, learning_rate
    from sendit.run.model_folder import save_model_folder
    from sendit.train.measure import count_parameters
    from sendit.train.models import load_model

    cfg, method = b.cfg, get_method(name)
    lr = learning_rate(name, cfg.lr)

    def prepared():
        set_seed(cfg.seed)
        return method.prepare(load_model(b.base, b.tok), MethodConfig())

    model = prepared().to(b.procs.device)
    common = {"lr": lr, "batch_size": cfg.batch_size, "protocol": cfg.protocol, **count_parameters(model)}
    smoke = cfg.protocol == "smoke"
    engines = {"sendit": (_smoke_sendit if smoke else _epoch_sendit)(b, model, train, val, lr)}
    for setting in [p for p in ("tuned", "naive") if p in cfg.peers]:
        engines[f"trainer-{setting}"] = (_smoke_trainer if smoke else _epoch_trainer)(b, prepared(), texts, train,
                                                                                       lr, setting)
    passes: dict[str, list] = {e: [] for e in engines}
    for j in range(cfg.repeats + 1):  # pass 0 is the warm-up
        for engine, one_pass in engines.items():
            passes[engine].append(one_pass(cfg.seed + j))
    mean_length = float(train.lengths.mean()) if smoke else None
    for engine, done in passes.items():
        timed = done[1:]
        b.record(name, "train (smoke)" if smoke else "train", engine, [t for t, _, _ in timed],
                 [sum(n for n, _ in bs) for _, bs, _ in timed], [sum(k for _, k in bs) for _, bs, _ in timed],
                 None if engine == "trainer-naive" else mean_length,
                 memory_delta_mb=max(m[0] for _, _, m in done), peak_memory_mb=max(m[1] for _, _, m in done),
                 precision="fp32" if engine == "trainer-naive" else b.precision, **common)
    folder = b.workdir / name
    save_model_folder(b.procs.unwrap(model), b.tok, folder, name, b.base, {"max_length": 128, "normalize": True})
    engines.clear()
    gc.collect()
    return folder


def _epoch_sendit(b: Bench, model, train, val, lr: float):
    def one(seed: int) -> tuple[float, list, float]:
        res = sendit_train(model, train, val, b.cfg, lr, b.procs, 1, b.precision, seed=seed)
        return res.history[0]["epoch_time_sec"], _plan_counts(b, train, seed), _memory(res)
    return one


def _epoch_trainer(b: Bench, model, texts, train, lr: float, setting: str):
    from sendit.train.batching import length_grouped_batches

    def order(seed: int) -> list[int]:
        return [i for batch in length_grouped_batches(train.lengths, b.cfg.batch_size, seed, 1) for i in batch]

    run = hf_trainer(model, b.tok, texts, train, b.cfg, lr, b.device, setting, b.workdir, b.precision, order=order)

    def one(seed: int) -> tuple[float, list, float]:
        out = run(seed)
        if out["batches"] != _plan_counts(b, train, seed):
            raise RuntimeError("the Trainer did not see sendit's batches: the equal-work protocol is broken")
        return out["ends"][-1] - out["ends"][0], out["batches"], _memory(out)
    return one


def _memory(res) -> tuple[float, float]:
    """(memory added, peak memory) in MB of a sendit FitResult or a Trainer pass."""
    if isinstance(res, dict):
        return res["memory_delta_mb"], res["peak_memory_mb"]
    return res.memory_delta_mb, res.peak_memory_mb


def _plan_counts(b: Bench, train, seed: int) -> list[tuple[int, int]]:
    from sendit.train.batching import length_grouped_batches

    plan = length_grouped_batches(train.lengths, b.cfg.batch_size, seed, 1)
    return [(len(i), int(train.lengths[i].sum())) for i in plan]


def _smoke_sendit(b: Bench, model, train, val, lr: float):
    def one(seed: int) -> tuple[float, list, float]:
        res = sendit_train(model, train, val, b.cfg, lr, b.procs, 1, b.precision, max_batches=b.cfg.steps, seed=seed)
        return res.history[0]["epoch_time_sec"], _plan_counts(b, train, seed)[: b.cfg.steps], _memory(res)
    return one


def _smoke_trainer(b: Bench, model, texts, train, lr: float, setting: str):
    # Steps 2..k+1 of a train() call: its first step carries the call's own start-up, and the length-grouped
    # sampler puts the epoch's longest batch first (to fail early on memory), which a full epoch meets once.
    k = 1 if setting == "naive" else b.cfg.steps  # naive: every step costs the same (all padded to 128)
    run = hf_trainer(model, b.tok, texts, train, b.cfg, lr, b.device, setting, b.workdir, b.precision, steps=k + 1)

    def one(seed: int) -> tuple[float, list, float]:
        out = run(seed)
        return out["ends"][k + 1] - out["ends"][1], out["batches"][1 : k + 1], _memory(out)
    return one


# ------------------------------------------------------------------------------------------------ inference
def bench_inference(b: Bench, name: str, folder: Path, texts: list[str]) -> None:
    """The saved model, unmerged and merged where it has an adapter, then the pipeline on the plain model."""
    from transformers import pipeline

    from sendit.methods import get_method
    from sendit.serve.model_folder import load
    from sendit.train.batching import encode

    cfg, tokens = b.cfg, int(encode(b.tok, texts, None, 128).lengths.sum())
    adapter = get_method(name).is_adapter
    for merge in (True, False) if adapter else (True,):
        sm = load(folder, merge=merge, precision=b.precision)
        seconds = timed_passes(lambda: sm.predict_proba(texts, cfg.infer_batch_size), cfg.repeats, b.device)
        phase = "infer" if not adapter else "infer merged" if merge else "infer unmerged"
        b.record(name, phase, "sendit", seconds, [len(texts)] * len(seconds), [tokens] * len(seconds),
                 batch_size=cfg.infer_batch_size, precision=b.precision)
    if "pipeline" in cfg.peers:
        clf = pipeline("text-classification", model=load(folder, merge=True, precision="fp32").model,
                       tokenizer=b.tok, device=b.device)
        kw = {"batch_size": cfg.pipeline_batch_size} if cfg.pipeline_batch_size else {}
        seconds = timed_passes(lambda: clf(list(texts), **kw), cfg.repeats, b.device)
        b.record(name, "infer", "pipeline", seconds, [len(texts)] * len(seconds), [tokens] * len(seconds),
                 batch_size=cfg.pipeline_batch_size or 1, precision="fp32")
    gc.collect()


def accuracy_check(b: Bench) -> None:
    """sendit and the tuned Trainer trained alike on a real model, both validated by the same code: speed is only
    worth having at equal accuracy."""
    from accelerate.utils import set_seed

    from sendit.config.schema import MethodConfig
    from sendit.methods import get_method, learning_rate
    from sendit.train.batching import encode
    from sendit.train.engine import predict
    from sendit.train.metrics import classification_metrics
    from sendit.train.models import load_model, load_tokenizer

    cfg = b.cfg
    source, tok = (b.base, b.tok) if cfg.accuracy_model == OPT_SHAPE else (cfg.accuracy_model,
                                                                           load_tokenizer(cfg.accuracy_model))
    splits = tweets(cfg.accuracy_train, cfg.accuracy_val, 1, cfg.seed)
    train = encode(tok, splits.train.texts, splits.train.labels, 128)
    val = encode(tok, splits.val.texts, splits.val.labels, 128)
    n, tokens = len(train) * cfg.accuracy_epochs, int(train.lengths.sum()) * cfg.accuracy_epochs
    for name in cfg.methods:
        method = get_method(name)
        lr = learning_rate(name, cfg.lr)
        for engine in ("sendit", "trainer-tuned"):
            set_seed(cfg.seed)
            model = method.prepare(load_model(source, tok), MethodConfig()).to(b.device)
            if engine == "sendit":
                res = sendit_train(model, train, val, cfg, lr, b.procs, cfg.accuracy_epochs, b.precision)
                seconds = sum(h["epoch_time_sec"] for h in res.history)
            else:
                ends = hf_trainer(model, tok, splits.train.texts, train, cfg, lr, b.device, "tuned", b.workdir,
                                  b.precision, epochs=cfg.accuracy_epochs)(cfg.seed)["ends"]
                seconds = ends[-1] - ends[0]
                model.to(b.device)
            preds = predict(model, val, b.procs, cfg.infer_batch_size, precision=b.precision).preds
            accuracy = classification_metrics(val.labels, preds)["accuracy"]
            b.record(name, "accuracy", engine, [seconds], [n], [tokens], model=cfg.accuracy_model, lr=lr,
                     val_accuracy=accuracy, val_tweets=len(val), epochs=cfg.accuracy_epochs, precision=b.precision)
            b.log(f"  {name:7s} accuracy check  {engine:14s} val accuracy {accuracy:.4f}")
            del model
            gc.collect()
