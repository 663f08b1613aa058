"""`sendit bench --inference MODEL_DIR`: one trained model's inference engines, texts in and labels out, on the same
tweets, interleaved and repeated.

Engines (each against sendit's own predict path in fp32, `SenditModel.predict_proba`):
  torch fp32     sendit's predict path, fp32 (the reference of the ratios and of label agreement)
  torch bf16     the same in bf16 autocast: only where `precision: auto` picks bf16 (CUDA, CPUs with AMX, or
                 SENDIT_PRECISION=bf16) or with --bf16 on; a CPU without bf16 units emulates it (~200x slower
                 than fp32 on AVX2), so a forced run times only --bf16-tweets tweets
  onnx fp32      `sendit export --format onnx` of the model, in ONNX Runtime (exported on the fly into a temp folder)
  onnx int8      the same with --quantize int8 (ONNX Runtime's dynamic quantisation)
  pipeline       transformers.pipeline("text-classification") on the plain `sendit export` of the model, fp32
Each repeat runs every engine once, in the same order, so a change in the machine's load hits them alike; the
ratio to torch fp32 is the median over repeats of the paired per-repeat ratios, with its min and max.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np

if TYPE_CHECKING:
    from sendit.bench.training import BenchConfig

REFERENCE = "torch fp32"
COLUMNS = ["engine", "precision", "tweets", "tweets_per_sec", "tweets_per_sec_min", "tweets_per_sec_max",
           "ratio_vs_torch_fp32", "ratio_min", "ratio_max", "agreement_vs_torch_fp32"]


def bench_texts(cfg: BenchConfig) -> list[str]:
    """Raw tweets (every engine normalises them itself) from --data: the embedded sample or a file."""
    from sendit.config.schema import DataConfig
    from sendit.data.reading import read_source

    texts = read_source(cfg.data, DataConfig(data=cfg.data, normalize=False)).texts
    return [texts[i % len(texts)] for i in range(cfg.inference_tweets)]


def host_bf16() -> bool:
    """Whether sendit's `precision: auto` picks bf16 on this host's CPU (AMX, or SENDIT_PRECISION=bf16)."""
    import torch

    from sendit.train import device

    return device.resolve_precision("auto", torch.device("cpu")) == "bf16"


def bf16_decision(cfg: BenchConfig) -> str | None:
    """None when torch bf16 runs; else why it is skipped."""
    if cfg.bf16 == "off":
        return "--bf16 off"
    if cfg.bf16 == "on" or host_bf16():
        return None
    return ("this host has no bf16 units (precision auto picks fp32: no AMX, no CUDA), where bf16 matmuls are "
            "emulated at ~1/200 of fp32's speed; force it with --bf16 on (it then times --bf16-tweets tweets)")


def onnx_missing() -> str | None:
    """Why the ONNX engines cannot run here, or None."""
    from sendit.errors import ConfigError
    from sendit.serve import onnx_folder

    try:
        onnx_folder.require_onnx(export=True)
    except ConfigError as e:
        return str(e)
    return None


def engines(cfg: BenchConfig, folder: Path, tmp: Path, texts: list[str], log: Callable[[str], None]):
    """(name, precision, texts, predict -> labels) per engine that runs here, and {name: reason} for the others."""
    from sendit.serve.export import export
    from sendit.serve.model_folder import load

    bs = cfg.infer_batch_size
    torch32 = load(folder, precision="fp32")
    runs = [(REFERENCE, "fp32", texts, lambda t: torch32.predict_proba(t, bs, progress=False).preds)]
    skipped = {}
    why = bf16_decision(cfg)
    if why:
        skipped["torch bf16"] = why
    else:
        bf16 = load(folder, precision="bf16")
        subset = texts if host_bf16() else texts[: cfg.bf16_tweets]
        runs.append(("torch bf16", "bf16", subset, lambda t: bf16.predict_proba(t, bs, progress=False).preds))
    why = onnx_missing()
    for quantize in (None, "int8"):
        name = f"onnx {quantize or 'fp32'}"
        if why:
            skipped[name] = why
            continue
        out = export(folder, tmp / name.replace(" ", "-"), format="onnx", quantize=quantize, min_agreement=0,
                     force=True, log=lambda line: log(f"  export: {line}"))
        model = load(out)
        runs.append((name, quantize or "fp32", texts, lambda t, m=model: m.predict_proba(t, bs).preds))
    if "pipeline" in cfg.peers:
        runs.append(("pipeline", "fp32", texts, pipeline_engine(export(folder, tmp / "plain"), cfg)))
    else:
        skipped["pipeline"] = "--peers leaves it out"
    return runs, skipped


def pipeline_engine(plain: Path, cfg: BenchConfig) -> Callable[[list[str]], np.ndarray]:
    """transformers.pipeline on the plain export: raw tweets in (its tokenizer normalises), class ids out."""
    import torch
    from transformers import pipeline

    from sendit.verbosity import quiet_libraries

    with quiet_libraries():  # transformers' "Loading weights" bar
        clf = pipeline("text-classification", model=str(plain), device=torch.device("cpu"))
    label2id = clf.model.config.label2id
    batch_size = cfg.pipeline_batch_size or cfg.infer_batch_size

    def predict(texts: list[str]) -> np.ndarray:
        return np.array([label2id[r["label"]] for r in clf(list(texts), batch_size=batch_size, truncation=True)])

    return predict


def measure(runs: list, repeats: int, log: Callable[[str], None]) -> list[dict]:
    """One warm-up pass each, then `repeats` rounds, every engine once per round in the same order."""
    for name, _, texts, fn in runs:
        fn(texts[:64])
    seconds = {name: [] for name, *_ in runs}
    labels = {}
    for round_ in range(repeats):
        for name, _, texts, fn in runs:
            t0 = time.perf_counter()
            labels[name] = np.asarray(fn(texts))
            seconds[name].append(time.perf_counter() - t0)
        log(f"  round {round_ + 1}/{repeats}: " + "  ".join(f"{n} {len(t) / seconds[n][-1]:.0f}/s"
                                                           for n, _, t, _ in runs))
    rows = []
    ref_rates = [len(runs[0][2]) / s for s in seconds[REFERENCE]]
    for name, precision, texts, _ in runs:
        rates = [len(texts) / s for s in seconds[name]]
        ratios = [r / ref for r, ref in zip(rates, ref_rates)]
        agree = float(np.mean(labels[name] == labels[REFERENCE][: len(texts)]))
        rows.append(dict(zip(COLUMNS, [name, precision, len(texts), statistics.median(rates), min(rates),
                                       max(rates), statistics.median(ratios), min(ratios), max(ratios), agree]),
                         seconds=seconds[name]))
    return rows


def format_table(rows: list[dict], skipped: dict[str, str]) -> str:
    head = ["engine", "precision", "tweets", "tweets/s", "[min, max]", "x torch fp32", "[min, max]", "agreement"]
    table = [head] + [[r["engine"], r["precision"], str(r["tweets"]), f"{r['tweets_per_sec']:.1f}",
                       f"[{r['tweets_per_sec_min']:.1f}, {r['tweets_per_sec_max']:.1f}]",
                       f"{r['ratio_vs_torch_fp32']:.2f}x", f"[{r['ratio_min']:.2f}, {r['ratio_max']:.2f}]",
                       f"{r['agreement_vs_torch_fp32']:.2%}"] for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths)))
             for row in table]
    lines[1:1] = ["-" * len(lines[0])]
    return "\n".join(lines + [f"skipped: {name}: {why}" for name, why in skipped.items()])


def cpu_model() -> str | None:
    """/proc/cpuinfo's model name (Linux), which a timing needs beside it; None elsewhere."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return None
    return next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), None)


def run_inference_bench(cfg: BenchConfig, log: Callable[[str], None] = print) -> dict:
    """Time every inference engine of the model folder cfg.inference; write `<out>.json` and `<out>.csv`."""
    from datetime import datetime

    import pandas as pd
    import torch
    import transformers

    from sendit.run.folder import atomic_write_csv, atomic_write_json, git_commit, versions
    from sendit.train.measure import hardware

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    transformers.logging.set_verbosity_error()
    out = Path(cfg.out or f"runs/bench-inference-{datetime.now():%Y%m%d-%H%M%S}/results")
    texts, hw = bench_texts(cfg), hardware(torch.device("cpu"))
    hw["cpu_model"] = cpu_model()
    log(f"bench --inference {cfg.inference}: {len(texts)} tweets from {cfg.data} on cpu ({hw['cpu']}, "
        f"{torch.get_num_threads()} threads), batch {cfg.infer_batch_size}, {cfg.repeats} rounds after 1 warm-up, "
        f"engines interleaved")
    with tempfile.TemporaryDirectory(prefix="sendit-bench-inference-") as tmp:
        runs, skipped = engines(cfg, Path(cfg.inference), Path(tmp), texts, log)
        rows = measure(runs, cfg.repeats, log)
    results = {"model": cfg.inference, "data": cfg.data, "tweets": len(texts), "batch_size": cfg.infer_batch_size,
               "repeats": cfg.repeats, "threads": torch.get_num_threads(), "hardware": hw, "versions": versions(),
               "git_commit": git_commit(), "engines": rows, "skipped": skipped}
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(results, out.with_name(out.name + ".json"))
    atomic_write_csv(pd.DataFrame(rows, columns=COLUMNS), out.with_name(out.name + ".csv"))
    log("\n" + format_table(rows, skipped) + f"\nCPU: {hw['cpu_model'] or hw['cpu']}; agreement: the share of tweets given torch "
        f"fp32's label; ratio: median over rounds of the engine's tweets/s / torch fp32's in the same round"
        f"\nresults: {out.with_name(out.name + '.json')}")
    return results
