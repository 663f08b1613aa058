"""`sendit evaluate`: saved models on any labelled file, all scored on the same rows and written as a run's
test-set CSVs, so that `sendit report` compares them like the methods of a run."""

from __future__ import annotations

import dataclasses
import json
from datetime import datetime
from pathlib import Path
from typing import Callable

from sendit.config.schema import EMBEDDED_TEST_NAME, DataConfig
from sendit.data.labels import BINARY
from sendit.data.reading import EMBEDDED, read_test_file
from sendit.errors import ConfigError
from sendit.run.folder import (
    EVALUATION_MANIFEST,
    INFERENCE_SUMMARY,
    PREDICTIONS,
    append_rows,
    atomic_write_json,
    evaluation_folder_name,
    metrics_row,
    prediction_rows,
    versions,
)
from sendit.run.lifecycle import open_run
from sendit.run.method import check_label
from sendit.serve.model_folder import MANIFEST, load
from sendit.train.metrics import classification_metrics
from sendit.verbosity import say


def evaluate_folder(model_dirs: str | Path | list[str | Path], data: str, out: str | None = None,
                    batch_size: int = 256, log: Callable[[str], None] = say, precision: str = "auto",
                    text_column: str | None = None, label_column: str | None = None,
                    test_name: str | None = None, data_config: DataConfig | None = None) -> Path:
    """Saved models on any labelled file, all on the same rows: a run's test-set CSV files, so `sendit report OUT`
    compares them (confidence intervals, pairwise tests). Nothing is written until every model has been scored.

    Args:
        model_dirs: one or several model folders (RUN_DIR/<method>, or exported folders).
        data: a labelled CSV/JSONL/Parquet file or the original Sentiment140 CSV, or 'embedded' (the packaged
            hand-labelled tweets, the test set a run names sentiment140-manual).
        out: the evaluation folder (default for one model: MODEL_DIR/eval-<test name>); it holds one data file's
            results, so another file (with the same stem, say) is refused rather than mixed in or replacing them.
        text_column, label_column: the file's columns when they are not called text/label (or a known synonym).
        test_name: the test set's name in the CSV files and the report (default: the file's stem).
        data_config: how the file is read (--bad-rows, --label-map, --encoding); texts are not normalised here.
    """
    from sendit.report.stats import bootstrap_metric_ci  # scipy: loaded when evaluating, not at import

    dirs = [Path(d) for d in ([model_dirs] if isinstance(model_dirs, (str, Path)) else model_dirs)]
    if len(dirs) > 1 and not out:
        raise ConfigError(f"{len(dirs)} model folders go into one evaluation folder: pass --out DIR (then "
                          f"sendit report DIR compares them).")
    twice = next((d for i, d in enumerate(dirs) if d.resolve() in [e.resolve() for e in dirs[:i]]), None)
    if twice is not None:
        raise ConfigError(f"model folder {twice} is given twice; pass each model folder once.")
    classes = _classes(dirs)
    cfg = dataclasses.replace(data_config or DataConfig(), normalize=False)
    table = read_test_file(data, cfg, classes, "--data", "or 'embedded' for the packaged hand-labelled tweets",
                           text_column=text_column, label_column=label_column)
    test_set = test_name or (EMBEDDED_TEST_NAME if data == EMBEDDED else Path(data).stem)
    out_dir = Path(out or dirs[0] / evaluation_folder_name(test_set))
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"--out '{out_dir}' is a file; evaluate writes a folder of CSV files. Pass another --out.")
    source = str(Path(table.source).resolve())
    _check_same_data(out_dir, source, test_set, data)
    scored = []  # (label, seed, folder, Predictions, precision): written only once every model has been scored
    for folder in dirs:
        sm = load(folder, precision=precision)
        method = sm.manifest["method"]
        if sm.manifest.get("format") == "onnx":  # beside the torch model it came from: lora and lora-onnx-int8
            method = f"{sm.manifest.get('trained_method', method)}-onnx-{sm.precision}"
        label = _evaluation_label(folder, method, [x[0] for x in scored])
        scored.append((label, int(sm.manifest.get("seed", 0)), folder, sm.predict_proba(table.texts, batch_size),
                       sm.precision))  # the precision it ran in, as resolved for this model
        del sm
    with open_run(out_dir, fresh=False):  # one writer at a time, as in a run folder
        for label, seed, folder, p, _ in scored:
            m = classification_metrics(table.labels, p.preds, len(classes))
            append_rows(out_dir, INFERENCE_SUMMARY, label, [metrics_row(
                m, p.seconds, p.tweets_per_sec, label, seed, test_set, dropped=sum(table.dropped.values()))],
                replace_seed=seed)
            append_rows(out_dir, PREDICTIONS, label, prediction_rows(
                table.texts, table.labels, p.preds, p.probs, label, seed, test_set, classes), replace_seed=seed)
            ci = bootstrap_metric_ci(table.labels, p.preds)
            log(f"{label} on {test_set} ({m['n']} tweets): accuracy {m['accuracy']:.4f} (95% CI "
                f"{ci['accuracy_lo']:.4f}-{ci['accuracy_hi']:.4f})  F1 {m['f1_macro']:.4f}  ({p.tweets_per_sec:.0f} tweets/s)")
        atomic_write_json({
            "data": str(data), "data_path": source, "test_set": test_set, "rows": len(table),
            "dropped": dict(table.dropped), "labels": list(classes),
            "models": {label: str(folder.resolve()) for label, _, folder, _, _ in scored},
            "precision": {label: used for label, _, _, _, used in scored},  # per model, as each ran
            "versions": versions(), "finished": datetime.now().isoformat(timespec="seconds"),
        }, out_dir / EVALUATION_MANIFEST)
    log(f"{dict(table.dropped) or 'no'} rows dropped from {data}; results: {out_dir}"
        + (f"  (compare them: sendit report {out_dir})" if len(scored) > 1 else ""))
    return out_dir


def _classes(dirs: list[Path]) -> tuple[str, ...]:
    """The class names the models were trained on (sendit_model.json's labels; older folders: negative/positive):
    the file is read against them, so all models must share them."""
    found = {}
    for folder in dirs:
        try:
            manifest = json.loads((folder / MANIFEST).read_text())
        except (OSError, ValueError):
            continue  # not a model folder: load() says so, with a hint
        found[folder] = tuple(manifest.get("labels") or BINARY) if isinstance(manifest, dict) else BINARY
    if len(set(found.values())) > 1:
        raise ConfigError("the model folders were trained on different classes (" + "; ".join(
            f"{f}: {', '.join(c)}" for f, c in found.items()) + "), so no one file scores them all. Evaluate them "
            "separately, each with its own --out.")
    return next(iter(found.values()), BINARY)


def _evaluation_label(folder: Path, method: str, taken: list[str]) -> str:
    """The method's name, or, when two models share it (lora from two runs), the run folder's name before it."""
    run = folder.resolve().parent.name
    for label in (method, f"{run}-{method}", *(f"{run}-{method}-{n}" for n in range(2, len(taken) + 2))):
        if label not in taken:
            return check_label(label)
    raise AssertionError("unreachable: one of len(taken) + 1 labels is free")


def _check_same_data(out_dir: Path, source: str, test_set: str, data: str) -> None:
    """An evaluation folder holds the results of one data file: evaluating another one there (two files with the
    same stem share a default folder and a test-set name) would replace or mix its results, so it is refused."""
    path = out_dir / EVALUATION_MANIFEST
    if not path.is_file():
        return
    try:
        before = json.loads(path.read_text(encoding="utf-8"))
        old_source = before.get("data_path") or str(Path(before["data"]).resolve())
        old_name = before.get("test_set")
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return  # not one we can read: the results are rewritten as before
    if old_source == source and old_name == test_set:
        return
    raise ConfigError(
        f"'{out_dir}' already holds the results on {before['data']} (test set '{old_name}'), and {data} "
        f"(test set '{test_set}') is another file, so its results would replace or mix with them. Pass "
        f"--test-name NAME (with one model the results go to MODEL_DIR/eval-NAME) or another --out DIR.")
