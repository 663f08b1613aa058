"""Inference speed of distilled students against their teacher: same tweets, same batch size, same process, median
of several repetitions (models interleaved, so a noisy neighbour slows all of them alike).

    # OPT-125m shape (OPTConfig() defaults, random weights, real OPT tokenizer): 12 layers vs a 6-layer student
    flock /tmp/sendit-cpu.lock python scripts/bench_distill_speed.py --shape opt-125m --students 6
    # the embedded all-MiniLM-L6-v2 (real weights): 6 layers vs 3
    flock /tmp/sendit-cpu.lock python scripts/bench_distill_speed.py --shape embedded --students 3
    # trained model folders of a run (e.g. after `sendit distill --config distill-embedded`)
    flock /tmp/sendit-cpu.lock python scripts/bench_distill_speed.py --folders runs/x/full runs/x/distill-3L-full

Tweets are the hand-labelled test set (359 real tweets), tokenised as the toolkit does; timing is `engine.predict`
(length-sorted batches, fp32), the same code that measures tweets/s in every run.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import torch

from sendit.config.schema import DataConfig
from sendit.data.dataset import load_splits
from sendit.recipes.distill import default_layers, student_from_teacher
from sendit.serve.model_folder import load
from sendit.train.batching import encode
from sendit.train.device import Processes
from sendit.train.engine import predict
from sendit.train.models import load_model, load_tokenizer, model_from_config, num_layers

OPT_TOKENIZER = Path(__file__).resolve().parents[1] / "tests" / "data" / "opt-tokenizer"


def models_to_compare(args: argparse.Namespace) -> tuple[dict, object]:
    if args.folders:
        loaded = {Path(f).name: load(f, precision="fp32") for f in args.folders}
        return {k: v.model for k, v in loaded.items()}, next(iter(loaded.values())).tokenizer
    if args.shape == "opt-125m":
        from transformers import OPTConfig

        tok = load_tokenizer(str(OPT_TOKENIZER))
        teacher = model_from_config(OPTConfig(), tok, seed=0)
    else:
        tok = load_tokenizer("embedded")
        teacher = load_model("embedded", tok)
    depth = num_layers(teacher.config)
    models = {f"teacher ({depth} layers)": teacher}
    for n in args.students:
        layers = default_layers(depth, n)
        models[f"student ({n} layers: {','.join(map(str, layers))})"] = student_from_teacher(teacher, layers)
    return models, tok


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", choices=["opt-125m", "embedded"], default="opt-125m", help="teacher to build")
    ap.add_argument("--students", type=int, nargs="+", default=[6], help="student layer counts")
    ap.add_argument("--folders", nargs="+", help="compare saved model folders instead (the first is the reference)")
    ap.add_argument("--batch-size", type=int, default=64, help="inference batch size (the same for every model)")
    ap.add_argument("--reps", type=int, default=7, help="timed repetitions per model (after one warm-up)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    models, tok = models_to_compare(args)
    manual = load_splits(DataConfig(train_size=10, val_size=10, test_size=10)).manual
    data = encode(tok, manual.texts, manual.labels, 128)
    acc = Processes()
    for m in models.values():
        m.eval()
        predict(m, data, acc, args.batch_size)  # warm-up
    times: dict[str, list[float]] = {k: [] for k in models}
    for _ in range(args.reps):
        for name, m in models.items():
            times[name].append(predict(m, data, acc, args.batch_size).seconds)

    print(f"{len(data)} tweets (hand-labelled test set, mean {data.lengths.mean():.1f} tokens), batch size "
          f"{args.batch_size}, {torch.get_num_threads()} threads, median of {args.reps}")
    # The median is the typical speed on this shared machine; the best repetition is the least disturbed one.
    ref = next(iter(times.values()))
    print(f"{'model':40s} {'params':>12s} {'tweets/s':>9s} {'min..max':>13s} {'speed-up':>8s} {'(best)':>7s}")
    for name, m in models.items():
        med, best = statistics.median(times[name]), min(times[name])
        rates = sorted(len(data) / t for t in times[name])
        params = sum(p.numel() for p in m.parameters())
        print(f"{name:40s} {params:12,d} {len(data) / med:9.1f} {rates[0]:6.1f}..{rates[-1]:<6.1f} "
              f"{statistics.median(ref) / med:7.2f}x {min(ref) / best:6.2f}x")


if __name__ == "__main__":
    main()
