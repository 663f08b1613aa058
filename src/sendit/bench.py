"""`sendit bench`: the sendit engine against the Hugging Face `Trainer` + peft and `transformers.pipeline`, in one
invocation, on the same model, tweets, batch size and learning rate.

Training. Every engine draws its batches from the same pool of real tweets, big enough (200 batches) that both the
Trainer's length grouping and sendit's work as they do on a full dataset (50-batch groups): a small pool would
leave the Trainer's grouping idle (its megabatch is len(pool) // (4 * batch) batches) and flatter sendit. A pass is
`steps` consecutive steps; the first pass is warm-up and dropped, the median of the others is reported. Passes
draw different batches, so grouped engines are rated by non-padding tokens/s and quoted in tweets/s at the pool's
mean tweet length; the naive recipe pads every tweet to 128 tokens, so its time per tweet is measured directly.
Peers:
  trainer-naive  Trainer + peft, every tweet padded to 128 tokens, fp32 (the usual notebook recipe)
  trainer-tuned  Trainer + peft, dynamic padding, length-grouped sampling, bf16 where the hardware has bf16
                 matrix units (CUDA, CPUs with AMX) and fp32 elsewhere, as sendit's own `precision: auto`
  pipeline       transformers.pipeline("text-classification") on the same trained (merged) model
Inference is timed end to end, texts in and probabilities out, for each saved model, merged and unmerged.

Heavy imports (torch, transformers) happen inside the functions so that `sendit --help` stays fast.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import os
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Callable

OPT_SHAPE = "opt-125m-shape"
MAX_POOL = 12_000  # the embedded sample holds ~19.8k distinct tweets; the rest serve validation and inference
PEERS = ("naive", "tuned", "pipeline")
SUMMARY_COLUMNS = [
    "method", "phase", "sendit_tweets_per_sec", "sendit_tokens_per_sec", "sendit_memory_delta_mb",
    "trainer_tuned_tweets_per_sec", "trainer_tuned_tokens_per_sec", "trainer_tuned_memory_delta_mb",
    "trainer_naive_tweets_per_sec", "trainer_naive_tokens_per_sec", "trainer_naive_memory_delta_mb",
    "pipeline_tweets_per_sec", "ratio_vs_trainer_tuned", "ratio_vs_trainer_naive",
    "ratio_vs_pipeline", "sendit_val_accuracy", "trainer_tuned_val_accuracy",
]


def _f(default, help: str):
    if isinstance(default, list):
        return field(default_factory=lambda d=default: list(d), metadata={"help": help})
    return field(default=default, metadata={"help": help})


@dataclass
class BenchConfig:
    model: str = _f(OPT_SHAPE, f"'{OPT_SHAPE}' (OPTConfig() defaults, random weights, real OPT tokenizer), "
                               "'embedded', a hub id or a local model folder")
    tokenizer: str | None = _f(None, f"tokenizer folder for {OPT_SHAPE} (default: the hub cache's facebook/opt-125m, "
                                     "then the copy in a source checkout's tests/data/opt-tokenizer)")
    methods: list = _f(["bitfit", "lora"], "methods to benchmark (see `sendit methods`)")
    peers: list = _f(list(PEERS), "peers run in the same invocation: naive, tuned, pipeline (or 'none')")
    device: str = _f("auto", "'cpu', 'cuda' or 'auto' (cuda when available)")
    batch_size: int = _f(16, "training batch size, the same for every engine")
    lr: float | None = _f(None, "learning rate for every engine (default: the method's default)")
    steps: int = _f(2, "training steps per timed pass (the naive recipe: 1, its step time does not depend on "
                       "which tweets); raise for steadier numbers")
    pool: int | None = _f(None, f"tweets the training batches are drawn from (default: 200 batches, at most "
                                f"{MAX_POOL})")
    infer_tweets: int = _f(64, "tweets per timed inference pass")
    infer_batch_size: int = _f(256, "sendit's inference batch size")
    pipeline_batch_size: int | None = _f(None, "pipeline batch size (default: the pipeline's own, 1)")
    repeats: int = _f(3, "timed passes after one warm-up pass; the median is reported")
    compile: bool = _f(False, "torch.compile sendit's model (the compile time falls in the warm-up pass)")
    threads: int | None = _f(None, "CPU threads for torch (default: torch's choice)")
    seed: int = _f(0, "seed of the random weights, the tweet sample and training")
    out: str = _f("bench/results-{device}", "results path without suffix; writes .json and .csv")
    accuracy_check: bool = _f(False, "also train sendit and the tuned Trainer on a real model (--accuracy-model) "
                                     "with the same hyperparameters and report both validation accuracies")
    accuracy_model: str = _f("embedded", f"model of the accuracy check; '{OPT_SHAPE}' = the benchmark's own random-"
                                         "weight model, which makes the check an equal-work timing of whole epochs")
    accuracy_train: int = _f(2000, "training tweets of the accuracy check")
    accuracy_val: int = _f(500, "validation tweets of the accuracy check")
    accuracy_epochs: int = _f(1, "epochs of the accuracy check")


def add_arguments(p: argparse.ArgumentParser) -> None:
    for f in dataclasses.fields(BenchConfig):
        default = f.default_factory() if f.default is dataclasses.MISSING else f.default
        flag = f"--{f.name.replace('_', '-')}"
        if isinstance(default, bool):
            p.add_argument(flag, dest=f.name, action="store_true", help=f.metadata["help"])
        else:
            shown = ",".join(default) if isinstance(default, list) else default
            suffix = "" if default is None else f" (default: {shown})"
            p.add_argument(flag, dest=f.name, default=None, help=f.metadata["help"] + suffix)


def config_from_args(args: argparse.Namespace) -> BenchConfig:
    from sendit.config import ConfigError

    kw = {}
    for f in dataclasses.fields(BenchConfig):
        v = getattr(args, f.name, None)
        if v is None or v is False:
            continue
        t = str(f.type)
        try:
            if t.startswith("list"):
                v = [x.strip() for x in str(v).split(",") if x.strip()]
            elif t.startswith("int"):
                v = int(v)
            elif t.startswith("float"):
                v = float(v)
        except ValueError:
            raise ConfigError(f"--{f.name.replace('_', '-')} must be a number, got {v!r}") from None
        kw[f.name] = v
    return validate(BenchConfig(**kw))


def validate(cfg: BenchConfig) -> BenchConfig:
    from sendit.config import ConfigError
    from sendit.methods import get_method

    cfg.peers = [] if cfg.peers in (["none"], []) else cfg.peers
    bad = [p for p in cfg.peers if p not in PEERS]
    checks = [
        (not bad, f"--peers: unknown peer(s) {bad}; choose from {', '.join(PEERS)} or 'none'"),
        (cfg.device in ("auto", "cpu", "cuda"), f"--device must be auto, cpu or cuda (got {cfg.device})"),
        (cfg.batch_size >= 1, f"--batch-size must be at least 1 (got {cfg.batch_size})"),
        (cfg.steps >= 1, f"--steps must be at least 1 (got {cfg.steps})"),
        (cfg.pool is None or cfg.batch_size * cfg.steps <= cfg.pool <= MAX_POOL,
         f"--pool must be between --batch-size x --steps ({cfg.batch_size * cfg.steps}) and {MAX_POOL} "
         f"(got {cfg.pool})"),
        (cfg.infer_tweets >= 1, f"--infer-tweets must be at least 1 (got {cfg.infer_tweets})"),
        (cfg.repeats >= 1, f"--repeats must be at least 1 (got {cfg.repeats})"),
        (cfg.lr is None or cfg.lr > 0, f"--lr must be > 0 (got {cfg.lr})"),
        (bool(cfg.methods), "--methods is empty: name at least one method, e.g. --methods lora,bitfit"),
    ]
    for ok, msg in checks:
        if not ok:
            raise ConfigError(msg)
    for m in cfg.methods:
        get_method(m)
    return cfg


# ------------------------------------------------------------------------------------------------ setup
def resolve_device(name: str):
    import torch

    from sendit.config import ConfigError

    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda: torch sees no CUDA device here (CPU build or no GPU); use --device cpu.")
    return torch.device("cuda" if name == "cuda" or (name == "auto" and torch.cuda.is_available()) else "cpu")


def fresh_accelerator(device, mixed_precision: str):
    """Accelerate keeps one global state and the Trainer resets it, so every engine starts from a fresh one."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)
    return Accelerator(cpu=device.type == "cpu", mixed_precision=mixed_precision)


def opt_tokenizer(folder: str | None):
    """The OPT tokenizer for the OPT-125m shape. Not shipped in the package (1.5 MB, OPT licence): a given
    folder, else the hub cache, else a source checkout's test copy."""
    from transformers import AutoTokenizer

    from sendit.models import ModelError, load_tokenizer

    if folder:
        return load_tokenizer(folder)
    try:
        tok = AutoTokenizer.from_pretrained("facebook/opt-125m", local_files_only=True)
        tok.padding_side = "right"
        return tok
    except (OSError, ValueError):
        pass
    checkout = Path(__file__).resolve().parents[2] / "tests" / "data" / "opt-tokenizer"
    if (checkout / "vocab.json").exists():
        return load_tokenizer(str(checkout))
    raise ModelError(
        f"--model {OPT_SHAPE} needs the OPT tokenizer (vocab.json + merges.txt), which is not shipped in the "
        f"package. Pass --tokenizer DIR with a folder saved from facebook/opt-125m (once online: python -c \"from "
        f"transformers import AutoTokenizer; AutoTokenizer.from_pretrained('facebook/opt-125m')"
        f".save_pretrained('opt-tok')\"), or run from a source checkout, which has one in tests/data/opt-tokenizer."
    )


def prepare_model_source(cfg: BenchConfig, workdir: Path) -> tuple[str, object]:
    """(path or hub id, tokenizer). The OPT-125m shape is built once with random weights and saved, so every
    engine loads the very same weights the way it would load a checkpoint."""
    from transformers import OPTConfig

    from sendit.models import load_tokenizer, model_from_config

    if cfg.model != OPT_SHAPE:
        return cfg.model, load_tokenizer(cfg.model)
    tok = opt_tokenizer(cfg.tokenizer)
    folder = workdir / "base"
    model_from_config(OPTConfig(), tok, seed=cfg.seed).save_pretrained(folder)
    tok.save_pretrained(folder)
    return str(folder), tok


def tweets(n_train: int, n_val: int, n_test: int, seed: int):
    """Real tweets from the embedded sample, cleaned and split as a run does."""
    from sendit.config import DataConfig
    from sendit.data import load_splits

    return load_splits(DataConfig(train_size=n_train, val_size=n_val, test_size=n_test, test_file="none",
                                  split_seed=seed))


# ------------------------------------------------------------------------------------------------ engines
def sendit_train(model, train, val, cfg: BenchConfig, lr: float, acc, epochs: int, max_batches: int | None = None,
                 seed: int | None = None):
    """sendit's own loop (`engine.fit`), validating after each epoch (not timed)."""
    from sendit.config import TrainConfig
    from sendit.engine import fit

    tc = TrainConfig(epochs=epochs, batch_size=cfg.batch_size, patience=epochs + 1, compile=cfg.compile,
                     eval_batch_size=cfg.infer_batch_size)
    return fit(model, train, val, tc, lr, acc, cfg.seed if seed is None else seed, log=lambda s: None, desc="bench",
               max_batches=max_batches)


def hf_trainer(model, tok, texts: list[str], train, cfg: BenchConfig, lr: float, device, setting: str,
               workdir: Path, epochs: int = 1, steps: int | None = None) -> Callable[[int], dict]:
    """The Hugging Face Trainer on the same tweets (`train` is their `Encoded` form), built once. Each call of the
    returned function is one `trainer.train()` (seeded) of `epochs` epochs or, given `steps`, that many steps, and
    returns each step's end time, each batch's size and non-padding tokens, and the memory it added."""
    import torch
    from transformers import DataCollatorWithPadding, Trainer, TrainerCallback, TrainingArguments, default_data_collator
    from transformers.trainer_callback import PrinterCallback

    from sendit.measure import PeakMemory, bf16_supported

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

    bf16 = setting == "tuned" and bf16_supported(device)
    args = TrainingArguments(
        output_dir=str(workdir / f"trainer-{setting}"), per_device_train_batch_size=cfg.batch_size,
        learning_rate=lr, num_train_epochs=epochs, max_steps=steps or -1, weight_decay=0.01, warmup_steps=0.06,
        max_grad_norm=1.0, lr_scheduler_type="linear", bf16=bf16, use_cpu=device.type == "cpu", seed=cfg.seed,
        train_sampling_strategy="group_by_length" if setting == "tuned" else "random",
        logging_strategy="no", save_strategy="no", eval_strategy="no", report_to="none", disable_tqdm=True,
    )
    clock = StepClock()
    trainer = Trainer(model=model, args=args, train_dataset=rows, data_collator=counting_collate, callbacks=[clock])
    trainer.remove_callback(PrinterCallback)

    def run(seed: int) -> dict:
        trainer.args.seed = seed
        batches.clear()
        with PeakMemory(device) as mem:
            trainer.train()
        return {"ends": clock.ends, "batches": list(batches), "memory_delta_mb": mem.delta_mb,
                "precision": "bf16" if bf16 else "fp32"}

    return run


def timed_passes(fn: Callable[[], object], repeats: int, device) -> list[float]:
    from sendit.measure import Timer

    fn()  # warm-up
    out = []
    for _ in range(repeats):
        with Timer(device) as t:
            fn()
        out.append(t.seconds)
    return out


def load_saved(folder: Path, base: str, tok, merge: bool, acc):
    """A saved model folder, loaded as `sendit.load` does, onto the benchmark's accelerator."""
    import json

    from sendit.methods import get_method
    from sendit.models import load_model
    from sendit.predict import MANIFEST, SenditModel

    manifest = json.loads((folder / MANIFEST).read_text())
    method = get_method(manifest["method"])
    model = method.load(folder, lambda: load_model(base, tok))
    if merge:
        model = method.merge(model)
    model.to(acc.device).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return SenditModel(model, tok, manifest, acc)


# ------------------------------------------------------------------------------------------------ the benchmark
@dataclass
class Bench:
    """What every method's measurements share: settings, device, model source, and the records."""

    cfg: BenchConfig
    device: object
    mixed: str  # accelerate's mixed precision for sendit and the tuned Trainer: "bf16" or "no"
    workdir: Path
    base: str
    tok: object
    log: Callable[[str], None]
    records: list = field(default_factory=list)

    def record(self, method: str, phase: str, engine: str, seconds: list[float], tweets: list[int],
               tokens: list[int], mean_length: float | None = None, **extra) -> None:
        """One engine's timed passes (`tweets`, `tokens`: per pass). With `mean_length`, the passes drew different
        batches: they are rated by non-padding tokens/s, quoted in tweets/s at that mean tweet length."""
        token_rate = statistics.median(k / t for k, t in zip(tokens, seconds))
        tweet_rate = (token_rate / mean_length if mean_length
                      else statistics.median(n / t for n, t in zip(tweets, seconds)))
        r = {"method": method, "phase": phase, "engine": engine, "tweets_per_sec": tweet_rate,
             "tokens_per_sec": token_rate, "seconds": seconds, "pass_tweets": tweets, "pass_tokens": tokens,
             "rated_by": "tokens" if mean_length else "tweets", **extra}
        self.records.append(r)
        self.log(f"  {method:7s} {phase:15s} {engine:14s} {tweet_rate:9.1f} tweets/s {token_rate:9.0f} tokens/s  "
                 f"(timed passes: {' '.join(f'{s:.2f}' for s in seconds)} s)")


def run_bench(cfg: BenchConfig, log: Callable[[str], None] = print) -> dict:
    """Measure every method with sendit and its peers; write `<out>.json` and `<out>.csv`; return the results.

    Args:
        cfg: the benchmark settings (see `BenchConfig`, also the `sendit bench` flags).
        log: where progress lines go.
    """
    import torch
    import transformers

    from sendit.engine import encode
    from sendit.measure import bf16_supported, hardware
    from sendit.outputs import git_commit, versions

    t_start, started = time.perf_counter(), datetime.now().isoformat(timespec="seconds")
    load_start = os.getloadavg()  # other processes on the machine distort timings: recorded with the results
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = resolve_device(cfg.device)
    mixed = "bf16" if bf16_supported(device) else "no"
    transformers.logging.set_verbosity_error()
    pool = cfg.pool or min(200 * cfg.batch_size, MAX_POOL)
    with tempfile.TemporaryDirectory(prefix="sendit-bench-") as tmp:
        b = Bench(cfg, device, mixed, Path(tmp), *prepare_model_source(cfg, Path(tmp)), log)
        splits = tweets(pool, 16, cfg.infer_tweets, cfg.seed)
        train = encode(b.tok, splits.train.texts, splits.train.labels, 128)
        val = encode(b.tok, splits.val.texts, splits.val.labels, 128)
        hw = hardware(device)
        log(f"bench: {cfg.model} on {device.type} ({hw.get('gpu') or hw['cpu']}, {torch.get_num_threads()} threads), "
            f"batch {cfg.batch_size}, passes of {cfg.steps} steps from {len(train)} tweets (mean "
            f"{train.lengths.mean():.1f} tokens), {cfg.repeats} timed passes after 1 warm-up")
        for name in cfg.methods:
            folder = bench_training(b, name, splits.train.texts, train, val)
            bench_inference(b, name, folder, splits.test.texts)
        if cfg.accuracy_check:
            accuracy_check(b)
    precision = "bf16" if mixed == "bf16" else "fp32"
    notes = [f"precision: sendit and trainer-tuned {precision} ("
             + ("bf16 matrix units present" if mixed == "bf16" else "no fast bf16 on this device (no AMX): fp32")
             + "); trainer-naive and pipeline fp32",
             "training: sendit and trainer-tuned rated by non-padding tokens/s, quoted in tweets/s at the pool's mean "
             "length; trainer-naive by tweets/s (every tweet padded to 128); ratios = sendit / peer",
             "memory: what training added above the memory in use when it started (all engines' models stay "
             "loaded), " + ("CUDA allocated" if device.type == "cuda" else "process RSS")]
    summary = summarize(b.records)
    results = {
        "settings": {**dataclasses.asdict(cfg), "pool": len(train), "pool_mean_tokens": float(train.lengths.mean())},
        "device": device.type, "hardware": hw, "versions": versions(), "git_commit": git_commit(),
        "started": started, "wall_time_sec": time.perf_counter() - t_start,
        "load_average": {"start": load_start, "end": os.getloadavg()}, "notes": notes, "summary": summary,
        "measurements": b.records,
    }
    write_results(results, cfg.out.format(device=device.type))
    log("\n" + format_table(summary) + "".join(f"\nnote: {n}" for n in notes))
    return results


def bench_training(b: Bench, name: str, texts: list[str], train, val) -> Path:
    """sendit, the tuned and the naive Trainer, each built once and then run pass by pass in turn (so that a change
    in the machine's load hits every engine alike); returns sendit's saved model folder."""
    from accelerate.utils import set_seed

    from sendit.config import MethodConfig
    from sendit.engine import length_grouped_batches
    from sendit.measure import count_parameters
    from sendit.methods import get_method
    from sendit.models import load_model
    from sendit.predict import save_model_folder

    cfg, method = b.cfg, get_method(name)
    lr, mean_length = cfg.lr or method.default_lr, float(train.lengths.mean())

    def prepared():
        set_seed(cfg.seed)
        return method.prepare(load_model(b.base, b.tok), MethodConfig())

    acc = fresh_accelerator(b.device, b.mixed)
    model = prepared().to(acc.device)
    common = {"lr": lr, "batch_size": cfg.batch_size, **count_parameters(model)}

    def sendit_pass(seed: int) -> tuple[float, list, float]:
        res = sendit_train(model, train, val, cfg, lr, acc, 1, max_batches=cfg.steps, seed=seed)
        # fit trained the first `steps` batches of this plan
        plan = length_grouped_batches(train.lengths, cfg.batch_size, seed, 1)[: cfg.steps]
        counts = [(len(i), int(train.lengths[i].sum())) for i in plan]
        return res.history[0]["epoch_time_sec"], counts, res.memory_delta_mb

    def trainer_pass(run: Callable[[int], dict], k: int) -> Callable[[int], tuple[float, list, float]]:
        # Steps 2..k+1 of a train() call: its first step carries the call's own start-up, and the length-grouped
        # sampler puts the epoch's longest batch first (to fail early on memory), which a full epoch meets once.
        def one(seed: int):
            out = run(seed)
            return out["ends"][k + 1] - out["ends"][1], out["batches"][1 : k + 1], out["memory_delta_mb"]
        return one

    engines = {"sendit": sendit_pass}
    for setting in [p for p in ("tuned", "naive") if p in cfg.peers]:
        k = 1 if setting == "naive" else cfg.steps  # naive: every step costs the same (all padded to 128)
        run = hf_trainer(prepared(), b.tok, texts, train, cfg, lr, b.device, setting, b.workdir, steps=k + 1)
        engines[f"trainer-{setting}"] = trainer_pass(run, k)
    passes: dict[str, list] = {e: [] for e in engines}
    for j in range(cfg.repeats + 1):  # pass 0 is the warm-up
        for engine, one_pass in engines.items():
            passes[engine].append(one_pass(cfg.seed + j))
    for engine, done in passes.items():
        timed = done[1:]
        b.record(name, "train", engine, [t for t, _, _ in timed], [sum(n for n, _ in bs) for _, bs, _ in timed],
                 [sum(k for _, k in bs) for _, bs, _ in timed], None if engine == "trainer-naive" else mean_length,
                 memory_delta_mb=max(m for _, _, m in done),
                 precision="fp32" if engine == "trainer-naive" or b.mixed == "no" else "bf16", **common)
    folder = b.workdir / name
    save_model_folder(acc.unwrap_model(model), b.tok, folder, name, b.base, {"max_length": 128, "normalize": True})
    engines.clear()
    gc.collect()
    return folder


def bench_inference(b: Bench, name: str, folder: Path, texts: list[str]) -> None:
    """The saved model, unmerged and merged where it has an adapter, then the pipeline on the plain model."""
    from transformers import pipeline

    from sendit.engine import encode

    acc = fresh_accelerator(b.device, b.mixed)
    cfg, tokens = b.cfg, int(encode(b.tok, texts, None, 128).lengths.sum())
    adapter = hasattr(load_saved(folder, b.base, b.tok, False, acc).model, "merge_and_unload")
    for merge in (True, False) if adapter else (True,):
        sm = load_saved(folder, b.base, b.tok, merge, acc)
        seconds = timed_passes(lambda: sm.predict_proba(texts, cfg.infer_batch_size), cfg.repeats, b.device)
        phase = "infer" if not adapter else "infer merged" if merge else "infer unmerged"
        b.record(name, phase, "sendit", seconds, [len(texts)] * len(seconds), [tokens] * len(seconds),
                 batch_size=cfg.infer_batch_size)
    if "pipeline" in cfg.peers:
        clf = pipeline("text-classification", model=load_saved(folder, b.base, b.tok, True, acc).model,
                       tokenizer=b.tok, device=acc.device)
        kw = {"batch_size": cfg.pipeline_batch_size} if cfg.pipeline_batch_size else {}
        seconds = timed_passes(lambda: clf(list(texts), **kw), cfg.repeats, b.device)
        b.record(name, "infer", "pipeline", seconds, [len(texts)] * len(seconds), [tokens] * len(seconds),
                 batch_size=cfg.pipeline_batch_size or 1)
    gc.collect()


def accuracy_check(b: Bench) -> None:
    """sendit and the tuned Trainer trained alike on a real model, both validated by the same code: speed is only
    worth having at equal accuracy."""
    from accelerate.utils import set_seed

    from sendit.config import MethodConfig
    from sendit.engine import encode, predict
    from sendit.methods import get_method
    from sendit.metrics import classification_metrics
    from sendit.models import load_model, load_tokenizer

    cfg = b.cfg
    if cfg.accuracy_model == OPT_SHAPE:  # random weights: the accuracies only show both engines learn alike
        source, tok = ((b.base, b.tok) if cfg.model == OPT_SHAPE
                       else prepare_model_source(dataclasses.replace(cfg, model=OPT_SHAPE), b.workdir / "accuracy"))
    else:
        source, tok = cfg.accuracy_model, load_tokenizer(cfg.accuracy_model)
    splits = tweets(cfg.accuracy_train, cfg.accuracy_val, 1, cfg.seed)
    train = encode(tok, splits.train.texts, splits.train.labels, 128)
    val = encode(tok, splits.val.texts, splits.val.labels, 128)
    n, tokens = len(train) * cfg.accuracy_epochs, int(train.lengths.sum()) * cfg.accuracy_epochs
    for name in cfg.methods:
        method = get_method(name)
        lr = cfg.lr or method.default_lr
        for engine in ("sendit", "trainer-tuned"):
            set_seed(cfg.seed)
            model = method.prepare(load_model(source, tok), MethodConfig())
            acc = fresh_accelerator(b.device, b.mixed)
            if engine == "sendit":
                res = sendit_train(model.to(acc.device), train, val, cfg, lr, acc, cfg.accuracy_epochs)
                seconds = sum(h["epoch_time_sec"] for h in res.history)
            else:
                ends = hf_trainer(model, tok, splits.train.texts, train, cfg, lr, b.device, "tuned", b.workdir,
                                  epochs=cfg.accuracy_epochs)(cfg.seed)["ends"]
                seconds = ends[-1] - ends[0]
                acc = fresh_accelerator(b.device, b.mixed)
                model.to(acc.device)
            accuracy = classification_metrics(val.labels, predict(model, val, acc, cfg.infer_batch_size).preds)
            b.record(name, "accuracy", engine, [seconds], [n], [tokens], model=cfg.accuracy_model, lr=lr,
                     val_accuracy=accuracy["accuracy"], val_tweets=len(val), epochs=cfg.accuracy_epochs)
            b.log(f"  {name:7s} accuracy check  {engine:14s} val accuracy {accuracy['accuracy']:.4f}")
            del model
            gc.collect()


# ------------------------------------------------------------------------------------------------ reporting
def summarize(records: list[dict]) -> list[dict]:
    """One row per (method, phase) with sendit's numbers, the peers' numbers and the ratios sendit / peer."""
    rows: dict[tuple, dict] = {}

    def get(method, engine, phase):
        return next((r for r in records if r["method"] == method and r["engine"] == engine and r["phase"] == phase),
                    None)

    def ratio(a, b):
        return a / b if a and b else None

    for r in records:
        key = (r["method"], r["phase"])
        if key in rows or r["engine"] != "sendit" and r["phase"] != "accuracy":
            continue
        row = dict.fromkeys(SUMMARY_COLUMNS)
        row.update(method=r["method"], phase=r["phase"])
        if r["phase"] == "train":
            row.update(sendit_tweets_per_sec=r["tweets_per_sec"], sendit_tokens_per_sec=r["tokens_per_sec"],
                       sendit_memory_delta_mb=r["memory_delta_mb"])
            for setting in ("tuned", "naive"):
                peer = get(r["method"], f"trainer-{setting}", "train")
                if peer:
                    row[f"trainer_{setting}_tweets_per_sec"] = peer["tweets_per_sec"]
                    row[f"trainer_{setting}_tokens_per_sec"] = peer["tokens_per_sec"]
                    row[f"trainer_{setting}_memory_delta_mb"] = peer["memory_delta_mb"]
                    row[f"ratio_vs_trainer_{setting}"] = ratio(r["tokens_per_sec"], peer["tokens_per_sec"])
        elif r["phase"].startswith("infer"):
            row["sendit_tweets_per_sec"], row["sendit_tokens_per_sec"] = r["tweets_per_sec"], r["tokens_per_sec"]
            peer = get(r["method"], "pipeline", "infer")
            if peer:
                row["pipeline_tweets_per_sec"] = peer["tweets_per_sec"]
                row["ratio_vs_pipeline"] = ratio(r["tweets_per_sec"], peer["tweets_per_sec"])
        else:
            ours, peer = get(r["method"], "sendit", "accuracy"), get(r["method"], "trainer-tuned", "accuracy")
            row["phase"] = f"accuracy ({r['model']})"
            if ours:
                row.update(sendit_tweets_per_sec=ours["tweets_per_sec"], sendit_val_accuracy=ours["val_accuracy"])
            if peer:
                row.update(trainer_tuned_tweets_per_sec=peer["tweets_per_sec"],
                           trainer_tuned_val_accuracy=peer["val_accuracy"])
            if ours and peer:
                row["ratio_vs_trainer_tuned"] = ratio(ours["tweets_per_sec"], peer["tweets_per_sec"])
        rows[key] = row
    return list(rows.values())


def format_table(summary: list[dict]) -> str:
    cols = [("method", "method"), ("phase", "phase"), ("sendit_tweets_per_sec", "sendit/s"),
            ("trainer_tuned_tweets_per_sec", "tuned/s"), ("trainer_naive_tweets_per_sec", "naive/s"),
            ("pipeline_tweets_per_sec", "pipe/s"), ("ratio_vs_trainer_tuned", "x tuned"),
            ("ratio_vs_trainer_naive", "x naive"), ("ratio_vs_pipeline", "x pipe"),
            ("sendit_memory_delta_mb", "sendit +MB"), ("trainer_tuned_memory_delta_mb", "tuned +MB"),
            ("trainer_naive_memory_delta_mb", "naive +MB"),
            ("sendit_val_accuracy", "acc sendit"), ("trainer_tuned_val_accuracy", "acc tuned")]
    cols = [(k, h) for k, h in cols if any(r.get(k) is not None for r in summary)]

    def cell(v, key):
        if v is None:
            return "-"
        if isinstance(v, str):
            return v
        return f"{v:.2f}x" if key.startswith("ratio") else f"{v:.4f}" if "accuracy" in key else f"{v:.1f}"

    table = [[h for _, h in cols]] + [[cell(r.get(k), k) for k, _ in cols] for r in summary]
    widths = [max(len(row[i]) for row in table) for i in range(len(cols))]
    lines = ["  ".join(c.rjust(w) if i > 1 else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths)))
             for row in table]
    return "\n".join([lines[0], "-" * len(lines[0]), *lines[1:]])


def write_results(results: dict, out: str) -> tuple[Path, Path]:
    import pandas as pd

    from sendit.outputs import atomic_write_csv, atomic_write_json

    stem = Path(out)
    json_path, csv_path = stem.with_name(stem.name + ".json"), stem.with_name(stem.name + ".csv")
    atomic_write_json(results, json_path)
    atomic_write_csv(pd.DataFrame(results["summary"], columns=SUMMARY_COLUMNS), csv_path)
    return json_path, csv_path


def cmd_bench(args: argparse.Namespace) -> int:
    run_bench(config_from_args(args))
    return 0
