"""Learning-rate scan per method on the embedded default: each (method, learning rate) pair is trained once on the
same split and rated by validation accuracy / macro-F1 only (the test sets play no part in the choice).

    python scripts/lr_scan.py --grid "{head: [5e-3, 2e-2, 5e-2], lora: [1e-3, 2e-3, 5e-3]}" --out runs/lr-scan

Writes OUT/lr_scan.csv (one row per pair) and prints the best rate of each method. The defaults the methods ship
with (`sendit methods`) were chosen with this script; docs/learning-rates.md has the measured table.
"""

from __future__ import annotations

import argparse
import time

import pandas as pd
import yaml

from sendit.config.schema import load_config, resolve_config_path
from sendit.run.context import Context
from sendit.run.folder import atomic_write_csv
from sendit.run.lifecycle import prepare_run_dir
from sendit.run.method import train_method

DEFAULT_GRID = {
    "head": [5e-3, 2e-2, 5e-2],
    "bitfit": [1e-3, 2e-3, 5e-3, 1e-2],
    "lora": [5e-4, 1e-3, 2e-3, 5e-3],
    "full": [3e-5, 1e-4, 2e-4],
}
COLUMNS = ["method", "lr", "best_val_f1", "val_accuracy", "best_epoch", "runtime_sec", "train_size", "epochs", "seed"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--grid", default=None, help="YAML mapping method -> list of learning rates")
    p.add_argument("--config", default="quick", help="base config (default: quick, the embedded default)")
    p.add_argument("--train-size", type=int, default=None, help="default: the config's")
    p.add_argument("--val-size", type=int, default=None, help="default: the config's")
    p.add_argument("--test-size", type=int, default=None, help="default: the config's (it shapes the split)")
    p.add_argument("--epochs", type=int, default=None, help="default: the config's")
    p.add_argument("--seed", type=int, default=None, help="default: the config's")
    p.add_argument("--out", default="runs/lr-scan")
    a = p.parse_args()
    grid = {k: [float(v) for v in vs] for k, vs in yaml.safe_load(a.grid).items()} if a.grid else DEFAULT_GRID

    cfg = load_config(resolve_config_path(a.config), dict(train_size=a.train_size, val_size=a.val_size,
                                                          test_size=a.test_size, epochs=a.epochs, seed=a.seed))
    seed = cfg.seed_list()[0]
    run_dir = prepare_run_dir(a.out, overwrite=True)  # a scratch folder: one model folder per pair
    ctx = Context.build(cfg, run_dir, log=lambda s: None)
    rows = []
    for name, lrs in grid.items():
        for lr in lrs:
            cfg.method.method_lr = {name: lr}
            t = time.perf_counter()
            r = train_method(ctx, name, seed, label=f"{name}-lr{lr:g}")
            rows.append({"method": name, "lr": lr, "best_val_f1": r["best_val_f1"], "val_accuracy": r["val_accuracy"],
                         "best_epoch": r["best_epoch"], "runtime_sec": round(time.perf_counter() - t, 1),
                         "train_size": cfg.data.train_size, "epochs": cfg.train.epochs, "seed": seed})
            print(f"{name:7s} lr={lr:<8g} val_acc={r['val_accuracy']:.4f} val_f1={r['best_val_f1']:.4f} "
                  f"({rows[-1]['runtime_sec']:.0f} s)", flush=True)
            atomic_write_csv(pd.DataFrame(rows, columns=COLUMNS), run_dir / "lr_scan.csv")  # after each pair
    for name in grid:
        best = max((r for r in rows if r["method"] == name), key=lambda r: r["best_val_f1"])
        print(f"best {name}: lr {best['lr']:g} (val F1 {best['best_val_f1']:.4f}, accuracy {best['val_accuracy']:.4f})")


if __name__ == "__main__":
    main()
