"""`sendit bench`: the sendit engine against the Hugging Face `Trainer` + peft and `transformers.pipeline`, in one
invocation, on the same model, tweets, batch size, learning rate and precision.

Training, by default, is timed as **equal work** (bench_engines.py says how): whole epochs of the same tweets in
the same batches for every engine, interleaved and repeated; the ratio is the median of the per-repeat ratios,
reported with its spread. `--protocol smoke` keeps short passes of `--steps` steps as a labelled smoke mode.
Peers:
  trainer-naive  Trainer + peft, every tweet padded to 128 tokens, fp32 (the usual notebook recipe)
  trainer-tuned  Trainer + peft, dynamic padding, bf16 where sendit's `precision: auto` picks it (CUDA, CPUs with
                 AMX, or SENDIT_PRECISION=bf16), length-grouped sampling in the smoke mode
  pipeline       transformers.pipeline("text-classification") on the same trained (merged) model, fp32
Inference is timed end to end, texts in and probabilities out, for each saved model, merged and unmerged.
Results go to a run folder (`runs/bench-<time>/` by default), never into the source tree.
"""

from __future__ import annotations

import dataclasses
import os
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Callable

from sendit.bench.engines import OPT_SHAPE, accuracy_check, bench_inference, bench_training, prepare_model_source
from sendit.config.fields import reuse, setting
from sendit.config.schema import MethodChoice, TrainConfig

MAX_POOL = 12_000  # the embedded sample holds ~19.8k distinct tweets; the rest serve validation and inference
PEERS = ("naive", "tuned", "pipeline")
PROTOCOLS = ("epoch", "smoke")
SUMMARY_COLUMNS = [
    "method", "phase", "protocol", "precision", "sendit_tweets_per_sec", "sendit_tokens_per_sec",
    "sendit_memory_delta_mb", "sendit_peak_memory_mb", "trainer_tuned_tweets_per_sec",
    "trainer_tuned_tokens_per_sec", "trainer_tuned_memory_delta_mb", "trainer_tuned_peak_memory_mb",
    "trainer_naive_tweets_per_sec", "trainer_naive_tokens_per_sec",
    "trainer_naive_memory_delta_mb", "pipeline_tweets_per_sec", "ratio_vs_trainer_tuned",
    "ratio_vs_trainer_tuned_min", "ratio_vs_trainer_tuned_max", "ratio_vs_trainer_naive",
    "ratio_vs_trainer_naive_min", "ratio_vs_trainer_naive_max", "ratio_vs_pipeline", "sendit_val_accuracy",
    "trainer_tuned_val_accuracy",
]


# The settings a benchmark shares with a run are the run's own fields (their flags, checks and messages), with the
# benchmark's defaults and help where they differ.
_RUN = {f.name: f for cls in (MethodChoice, TrainConfig) for f in dataclasses.fields(cls)}


@dataclass
class BenchConfig:
    model: str = setting(OPT_SHAPE, f"'{OPT_SHAPE}' (OPTConfig() defaults, random weights, real OPT tokenizer), "
                                    "'embedded', a hub id or a local model folder")
    tokenizer: str | None = setting(None, f"tokenizer folder for {OPT_SHAPE} (default: facebook/opt-125m's in the "
                                          "local hub cache; a source checkout has one in tests/data/opt-tokenizer)")
    methods: list = reuse(_RUN["methods"], ["bitfit", "lora"], "methods to benchmark (see `sendit methods`)")
    peers: list = setting(list(PEERS), "peers run in the same invocation: naive, tuned, pipeline (or 'none')")
    device: str = setting("auto", "'cpu', 'cuda' or 'auto' (cuda when available)", choices=("auto", "cpu", "cuda"))
    precision: str = reuse(_RUN["precision"], help="'auto' (bf16 where the hardware has it, or SENDIT_PRECISION), "
                           "'bf16' or 'fp32', for sendit and the tuned Trainer alike")
    protocol: str = setting("epoch", "'epoch': whole epochs of the same tweets in the same batches for every engine "
                            "(equal work, the default); 'smoke': short passes of --steps steps (not equal work)",
                            choices=PROTOCOLS)
    epoch_tweets: int = setting(512, "tweets per equal-work epoch (rounded down to whole batches; real tweets, "
                                "repeated when more are asked for than the embedded sample holds)", low=1)
    batch_size: int = reuse(_RUN["batch_size"], 16, "training batch size, the same for every engine")
    lr: float | None = reuse(_RUN["lr"], help="learning rate for every engine (default: the method's default, as in "
                             "a run)")
    steps: int = setting(2, "smoke protocol: training steps per timed pass", low=1)
    pool: int | None = setting(None, f"smoke protocol: tweets the batches are drawn from (default: 200 batches, at "
                                     f"most {MAX_POOL})", high=MAX_POOL)
    infer_tweets: int = setting(64, "tweets per timed inference pass", low=1)
    infer_batch_size: int = setting(256, "sendit's inference batch size", low=1)
    pipeline_batch_size: int | None = setting(None, "pipeline batch size (default: the pipeline's own, 1)", low=1)
    repeats: int = setting(3, "timed passes after one warm-up pass, engines interleaved; median and spread reported",
                           low=1)
    compile: bool = reuse(_RUN["compile"], help="torch.compile sendit's model (the compile time falls in the warm-up "
                          "pass)")
    threads: int | None = reuse(_RUN["threads"])
    seed: int = reuse(_RUN["seed"], help="seed of the random weights, the tweet sample and training")
    out: str | None = setting(None, "results path without suffix; writes .json and .csv (default: "
                                    "runs/bench-<time>/results)")
    accuracy_check: bool = setting(False, "also train sendit and the tuned Trainer on a real model "
                                          "(--accuracy-model) with the same hyperparameters and report both "
                                          "validation accuracies")
    accuracy_model: str = setting("embedded", f"model of the accuracy check ('{OPT_SHAPE}' = the benchmark's own "
                                              "model)")
    accuracy_train: int = setting(2000, "training tweets of the accuracy check", low=1)
    accuracy_val: int = setting(500, "validation tweets of the accuracy check", low=1)
    accuracy_epochs: int = setting(1, "epochs of the accuracy check", low=1)
    inference: str | None = setting(None, "a model folder (RUN_DIR/<method>): time its inference engines instead "
                                          "(torch fp32 and bf16, ONNX Runtime fp32 and int8, pipeline; "
                                          "bench/inference.py)")
    data: str = setting("embedded", "--inference: the tweets, 'embedded' or a file as in `sendit run --data`")
    inference_tweets: int = setting(2000, "--inference: tweets per timed pass (repeated when the data holds fewer)",
                                    low=1)
    bf16: str = setting("auto", "--inference: torch bf16 'auto' (where precision auto picks bf16), 'on' or 'off'",
                        choices=("auto", "on", "off"))
    bf16_tweets: int = setting(64, "--inference --bf16 on, on a host without bf16 units: the tweets it times", low=1)


def validate(cfg: BenchConfig) -> BenchConfig:
    """Every bench option's range: each field's own constraint (the run's, for the settings a run has too: the same
    checks and messages as `sendit run`), then the checks across fields."""
    from sendit.config.fields import at_least, problem
    from sendit.errors import ConfigError
    from sendit.methods import get_method

    cfg.peers = [] if cfg.peers in (["none"], []) else cfg.peers
    bad = [p for p in cfg.peers if p not in PEERS]
    message = (f"--peers: unknown peer(s) {bad}; choose from {', '.join(PEERS)} or 'none'" if bad else problem(cfg)
               or at_least("--epoch-tweets", cfg.epoch_tweets, cfg.batch_size)
               or (cfg.pool is not None and at_least("--pool", cfg.pool, cfg.batch_size * cfg.steps)))
    if message:
        raise ConfigError(message)
    for m in cfg.methods:
        get_method(m)
    return cfg


def resolve_device(name: str):
    import torch

    from sendit.errors import ConfigError

    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda: torch sees no CUDA device here (CPU build or no GPU); use --device cpu.")
    return torch.device("cuda" if name == "cuda" or (name == "auto" and torch.cuda.is_available()) else "cpu")


# ------------------------------------------------------------------------------------------------ the benchmark
@dataclass
class Bench:
    """What every method's measurements share: settings, device, precision, model source, and the records."""

    cfg: BenchConfig
    device: object
    precision: str  # 'bf16' or 'fp32': sendit's and the tuned Trainer's
    workdir: Path
    base: str
    tok: object
    log: Callable[[str], None]
    records: list = field(default_factory=list)
    procs: object = None  # sendit.train.device.Processes

    def __post_init__(self):
        if self.procs is None:
            from sendit.train.device import Processes

            self.procs = Processes()

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
    if cfg.inference:
        from sendit.bench.inference import run_inference_bench

        return run_inference_bench(cfg, log)
    import torch
    import transformers

    from sendit.bench.engines import tiled, tweets
    from sendit.run.folder import git_commit, versions
    from sendit.train.batching import encode
    from sendit.train.device import resolve_precision
    from sendit.train.measure import hardware

    t_start, started = time.perf_counter(), datetime.now().isoformat(timespec="seconds")
    out = cfg.out or f"runs/bench-{datetime.now():%Y%m%d-%H%M%S}/results"
    load_start = os.getloadavg()  # other processes on the machine distort timings: recorded with the results
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = resolve_device(cfg.device)
    precision = resolve_precision(cfg.precision, device)
    transformers.logging.set_verbosity_error()
    if cfg.protocol == "epoch":
        n = cfg.epoch_tweets // cfg.batch_size * cfg.batch_size  # whole batches: the same ones for every engine
        pool = min(n, MAX_POOL)
    else:
        pool = cfg.pool or min(200 * cfg.batch_size, MAX_POOL)
    with tempfile.TemporaryDirectory(prefix="sendit-bench-") as tmp:
        b = Bench(cfg, device, precision, Path(tmp), *prepare_model_source(cfg, Path(tmp)), log)
        splits = tweets(pool, 16, cfg.infer_tweets, cfg.seed)
        texts, labels = splits.train.texts, splits.train.labels
        if cfg.protocol == "epoch":
            texts, labels = tiled(texts, labels, n)
        train = encode(b.tok, texts, labels, 128)
        val = encode(b.tok, splits.val.texts, splits.val.labels, 128)
        hw = hardware(device)
        what = (f"whole epochs of {len(train)} tweets in the same batches for every engine" if cfg.protocol == "epoch"
                else f"SMOKE passes of {cfg.steps} steps from {len(train)} tweets (not equal work)")
        log(f"bench: {cfg.model} on {device.type} ({hw.get('gpu') or hw['cpu']}, {torch.get_num_threads()} threads), "
            f"{precision}, batch {cfg.batch_size}, {what} (mean {train.lengths.mean():.1f} tokens), "
            f"{cfg.repeats} timed passes after 1 warm-up, engines interleaved")
        for name in cfg.methods:
            folder = bench_training(b, name, texts, train, val)
            bench_inference(b, name, folder, splits.test.texts)
        if cfg.accuracy_check:
            accuracy_check(b)
    notes = [f"precision: sendit and trainer-tuned {precision}; trainer-naive and pipeline fp32; CPU: {hw['cpu']}",
             ("training: equal work (whole epochs, the same tweets in the same batches for every engine); ratio = "
              "median over repeats of sendit's speed / the peer's in the same repeat, [min, max] beside it")
             if cfg.protocol == "epoch" else
             ("training: SMOKE protocol (short passes, each engine's own batches: not equal work); sendit and "
              "trainer-tuned rated by non-padding tokens/s; use the default epoch protocol for ratios that hold"),
             "memory: what training added above the memory in use when it started (all engines' models stay "
             "loaded), " + ("CUDA allocated" if device.type == "cuda" else "process RSS")]
    summary = summarize(b.records)
    results = {
        "settings": {**dataclasses.asdict(cfg), "out": out, "pool": len(train),
                     "pool_mean_tokens": float(train.lengths.mean())},
        "device": device.type, "precision": precision, "hardware": hw, "versions": versions(),
        "git_commit": git_commit(), "started": started, "wall_time_sec": time.perf_counter() - t_start,
        "load_average": {"start": load_start, "end": os.getloadavg()}, "notes": notes, "summary": summary,
        "measurements": b.records,
    }
    json_path, _ = write_results(results, out)
    log("\n" + format_table(summary) + "".join(f"\nnote: {n}" for n in notes) + f"\nresults: {json_path}")
    return results


def summarize(records: list[dict]) -> list[dict]:
    """One row per (method, phase) with sendit's numbers, the peers' numbers and the ratios sendit / peer: the
    median of the paired per-pass ratios (pass i of every engine ran back to back) and their min and max."""
    rows: dict[tuple, dict] = {}

    def get(method, engine, phase):
        return next((r for r in records if r["method"] == method and r["engine"] == engine and r["phase"] == phase),
                    None)

    def ratios(ours: dict, peer: dict) -> tuple:
        rate = "pass_tokens" if ours.get("rated_by") == "tokens" or peer.get("rated_by") == "tokens" else "pass_tweets"
        paired = [(a / s) / (b / t) for a, s, b, t in zip(ours[rate], ours["seconds"], peer[rate], peer["seconds"])
                  if s and t and b]
        return (statistics.median(paired), min(paired), max(paired)) if paired else (None, None, None)

    for r in records:
        key = (r["method"], r["phase"])
        if key in rows or r["engine"] != "sendit" and r["phase"] != "accuracy":
            continue
        row = dict.fromkeys(SUMMARY_COLUMNS)
        row.update(method=r["method"], phase=r["phase"], protocol=r.get("protocol"), precision=r.get("precision"))
        if r["phase"].startswith("train"):
            row.update(sendit_tweets_per_sec=r["tweets_per_sec"], sendit_tokens_per_sec=r["tokens_per_sec"],
                       sendit_memory_delta_mb=r["memory_delta_mb"], sendit_peak_memory_mb=r.get("peak_memory_mb"))
            for setting in ("tuned", "naive"):
                peer = get(r["method"], f"trainer-{setting}", r["phase"])
                if peer:
                    row[f"trainer_{setting}_tweets_per_sec"] = peer["tweets_per_sec"]
                    row[f"trainer_{setting}_tokens_per_sec"] = peer["tokens_per_sec"]
                    row[f"trainer_{setting}_memory_delta_mb"] = peer["memory_delta_mb"]
                    if setting == "tuned":
                        row["trainer_tuned_peak_memory_mb"] = peer.get("peak_memory_mb")
                    (row[f"ratio_vs_trainer_{setting}"], row[f"ratio_vs_trainer_{setting}_min"],
                     row[f"ratio_vs_trainer_{setting}_max"]) = ratios(r, peer)
        elif r["phase"].startswith("infer"):
            row["sendit_tweets_per_sec"], row["sendit_tokens_per_sec"] = r["tweets_per_sec"], r["tokens_per_sec"]
            peer = get(r["method"], "pipeline", "infer")
            if peer:
                row["pipeline_tweets_per_sec"] = peer["tweets_per_sec"]
                row["ratio_vs_pipeline"] = ratios(r, peer)[0]
        else:
            ours, peer = get(r["method"], "sendit", "accuracy"), get(r["method"], "trainer-tuned", "accuracy")
            row["phase"] = f"accuracy ({r['model']})"
            if ours:
                row.update(sendit_tweets_per_sec=ours["tweets_per_sec"], sendit_val_accuracy=ours["val_accuracy"])
            if peer:
                row.update(trainer_tuned_tweets_per_sec=peer["tweets_per_sec"],
                           trainer_tuned_val_accuracy=peer["val_accuracy"])
            if ours and peer:
                row["ratio_vs_trainer_tuned"] = ours["tweets_per_sec"] / peer["tweets_per_sec"]
        rows[key] = row
    return list(rows.values())


def format_table(summary: list[dict]) -> str:
    cols = [("method", "method"), ("phase", "phase"), ("sendit_tweets_per_sec", "sendit/s"),
            ("trainer_tuned_tweets_per_sec", "tuned/s"), ("trainer_naive_tweets_per_sec", "naive/s"),
            ("pipeline_tweets_per_sec", "pipe/s"), ("ratio_vs_trainer_tuned", "x tuned"),
            ("spread_tuned", "[min, max]"), ("ratio_vs_trainer_naive", "x naive"), ("spread_naive", "[min, max]"),
            ("ratio_vs_pipeline", "x pipe"),
            ("sendit_peak_memory_mb", "sendit peak MB"), ("trainer_tuned_peak_memory_mb", "tuned peak MB"),
            ("sendit_memory_delta_mb", "sendit +MB"), ("trainer_tuned_memory_delta_mb", "tuned +MB"),
            ("trainer_naive_memory_delta_mb", "naive +MB"),
            ("sendit_val_accuracy", "acc sendit"), ("trainer_tuned_val_accuracy", "acc tuned")]
    summary = [{**r, **{f"spread_{s}": f"[{r[f'ratio_vs_trainer_{s}_min']:.2f}, {r[f'ratio_vs_trainer_{s}_max']:.2f}]"
                        for s in ("tuned", "naive") if r.get(f"ratio_vs_trainer_{s}_min") is not None}}
               for r in summary]
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

    from sendit.run.folder import atomic_write_csv, atomic_write_json

    stem = Path(out)
    stem.parent.mkdir(parents=True, exist_ok=True)
    json_path, csv_path = stem.with_name(stem.name + ".json"), stem.with_name(stem.name + ".csv")
    atomic_write_json(results, json_path)
    atomic_write_csv(pd.DataFrame(results["summary"], columns=SUMMARY_COLUMNS), csv_path)
    return json_path, csv_path
