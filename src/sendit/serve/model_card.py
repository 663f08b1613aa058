"""The README.md of an exported folder: a Hugging Face model card, front matter first.

The YAML front matter is the hub's model-card metadata (library_name, base_model, pipeline_tag, tags, datasets,
metrics, model-index), so the hub indexes the folder and `huggingface_hub.ModelCard.load` reads it. The test
results are recomputed from the run's own predictions file (the model folder's parent is its run folder), with the
report's percentile-bootstrap 95 % intervals (sendit.report.stats.bootstrap_metric_ci), for the model's seed and
every test set. A folder exported away from its run gets a card that says what is unknown instead.
"""

from __future__ import annotations

import json
from pathlib import Path

SENTIMENT140 = "stanfordnlp/sentiment140"
EMBEDDED_BASE = "sentence-transformers/all-MiniLM-L6-v2"  # sendit's embedded model, a copy of this hub model
UNKNOWN = "unknown (the folder was exported without its run folder)"


def run_facts(src: Path, manifest: dict) -> dict:
    """What the model's run folder says: data, precision and the test metrics with CIs; {} when there is none."""
    import pandas as pd

    from sendit.report.stats import bootstrap_metric_ci
    from sendit.run.folder import PREDICTIONS, RUN_MANIFEST

    run_dir = Path(src).parent
    try:
        run = json.loads((run_dir / RUN_MANIFEST).read_text())
    except (OSError, ValueError):
        return {}
    config = run.get("config") or {}
    facts = {"data": (config.get("data") or {}).get("data"),
             "precision": (run.get("hardware") or {}).get("precision") or (config.get("train") or {}).get("precision"),
             "train_rows": ((run.get("data") or {}).get("split_sizes") or {}).get("train"), "results": []}
    method = manifest.get("trained_method", manifest.get("method"))
    predictions = run_dir / PREDICTIONS.format(method=method)
    if not predictions.is_file():
        return facts
    df = pd.read_csv(predictions, usecols=["label", "prediction", "seed", "test_set"], keep_default_na=False)
    seed = manifest.get("seed")
    if seed is not None and (df["seed"] == seed).any():
        df = df[df["seed"] == seed]
    for test_set, g in df.groupby("test_set", sort=False):
        ci = bootstrap_metric_ci(g["label"].to_numpy(int), g["prediction"].to_numpy(int))
        facts["results"].append({"test_set": str(test_set), **ci})
    return facts


def datasets_of(data: str | None) -> list[str]:
    """The hub's `datasets` entry: Sentiment140 for its hub copy and the packaged sample of it, else the name given."""
    if not data:
        return []
    return [SENTIMENT140] if data in ("embedded", "hub", "sentiment140-manual") else [Path(str(data)).name]


def front_matter(manifest: dict, facts: dict) -> dict:
    """The card's metadata as the hub reads it."""
    method = manifest.get("trained_method", manifest.get("method"))
    base = EMBEDDED_BASE if manifest.get("base_model") == "embedded" else str(manifest.get("base_model"))
    adapter = manifest.get("merged") is False
    tags = ["sendit", "tweet-sentiment", str(method)]
    if manifest.get("format") == "onnx":
        tags += ["onnx"] + ([str(manifest["quantize"])] if manifest.get("quantize") else [])
    meta = {"library_name": "peft" if adapter else "transformers", "base_model": base,
            "pipeline_tag": "text-classification", "tags": tags, "metrics": ["accuracy", "f1"]}
    datasets = datasets_of(facts.get("data"))
    if datasets:
        meta["datasets"] = datasets
    results = [{"task": {"type": "text-classification", "name": "Text Classification"},
                "dataset": {"name": r["test_set"], "type": datasets[0] if datasets else r["test_set"],
                            "split": "test"},
                "metrics": [_metric("accuracy", "Accuracy", r["accuracy"], r["accuracy_lo"], r["accuracy_hi"], {}),
                            _metric("f1", "Macro F1", r["f1_macro"], r["f1_macro_lo"], r["f1_macro_hi"],
                                    {"average": "macro"})]}
               for r in facts.get("results", [])]
    if results:
        meta["model-index"] = [{"name": f"sendit-{method}", "results": results}]
    return meta


def _metric(kind: str, name: str, value: float, lo: float, hi: float, args: dict) -> dict:
    # The hub's metric entry has no interval field; `args` keeps the 95 % bootstrap interval with the value.
    return {"type": kind, "name": name, "value": round(float(value), 4),
            "args": {**args, "ci_level": 0.95, "ci_low": round(float(lo), 4), "ci_high": round(float(hi), 4)}}


def facts_prose(manifest: dict, facts: dict, classes: list[str]) -> list[str]:
    """The card's paragraph on training and test results, saying which facts are unknown."""
    method = manifest.get("trained_method", manifest.get("method"))
    base = front_matter(manifest, {})["base_model"]
    data = facts.get("data")
    data = (f"`{data}`" + (f" ({SENTIMENT140})" if datasets_of(data) == [SENTIMENT140] else "")
            + (f", {facts['train_rows']} training tweets" if facts.get("train_rows") else "")) if data else UNKNOWN
    lines = ["## Training", "",
             f"- base model: `{base}`", f"- method: `{method}`", f"- training data: {data}",
             f"- precision in training: {facts.get('precision') or UNKNOWN}",
             f"- labels: {', '.join(f'{i} = {c}' for i, c in enumerate(classes))}", "", "## Test results", ""]
    if not facts.get("results"):
        return lines + [f"Test metrics: {UNKNOWN if not facts else 'unknown (no predictions file in the run folder)'}."]
    lines += ["| test set | tweets | accuracy [95 % CI] | macro F1 [95 % CI] |", "|---|---|---|---|"]
    lines += [f"| {r['test_set']} | {r['n']} | {r['accuracy']:.4f} [{r['accuracy_lo']:.4f}, {r['accuracy_hi']:.4f}] "
              f"| {r['f1_macro']:.4f} [{r['f1_macro_lo']:.4f}, {r['f1_macro_hi']:.4f}] |" for r in facts["results"]]
    return lines + ["", "Intervals: percentile bootstrap over the test tweets (2000 resamples, seed 0), as in "
                        "`sendit report`; the model's seed " f"{manifest.get('seed', '?')}."]


def card_header(manifest: dict, facts: dict) -> str:
    import yaml

    meta = yaml.safe_dump(front_matter(manifest, facts), sort_keys=False, allow_unicode=True)
    return f"---\n{meta}---\n\n"
