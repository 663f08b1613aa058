"""Tweet normalisation, deduplication and leak-free stratified splits of what `sendit.data.reading` read.

`load_splits` is the whole path from --data/--test-file to train/val/held-out tables; every row it leaves out is
counted by reason, so that a run can say exactly what it dropped.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from dataclasses import dataclass

import numpy as np

from sendit.config.schema import DataConfig
from sendit.data.labels import counts, is_binary
from sendit.data.reading import read_source, read_table, read_test_file
from sendit.data.rows import Table
from sendit.errors import DataError

# --------------------------------------------------------------------------------------------- normalisation
# The rules as (pattern, replacement) pairs applied in order, written once for two regex engines: Python's `re`
# here, and Oniguruma in the `tokenizers` library, where `sendit export` builds them into the exported tokenizer so
# that a plain transformers pipeline sees the text sendit trained on. Only constructs both engines read the same
# way: ASCII classes for handles (Twitter handles are ASCII letters, digits and '_'; the engines' \w differ on
# 12,901 code points), \x1c-\x1f spelled out next to \s (Python counts them as whitespace, Oniguruma does not),
# and the HTML entities of the corpus by name (html.unescape's other rules have no regex form), &amp; last so
# that "&amp;quot;" becomes "&quot;" as in one pass of html.unescape.
_HTML_ENTITIES = {"&quot;": '"', "&lt;": "<", "&gt;": ">", "&#39;": "'", "&apos;": "'", "&amp;": "&"}
_SPACE = r"\s\x1c-\x1f"
TWEET_RULES: tuple[tuple[str, str], ...] = (
    *((re.escape(entity), char) for entity, char in _HTML_ENTITIES.items()),
    (rf"(?:[Hh][Tt][Tt][Pp][Ss]?://|[Ww][Ww][Ww]\.)[^{_SPACE}]+", "http"),
    (r"@[A-Za-z0-9_]+", "@user"),
    (rf"[{_SPACE}]+", " "),
    (r"^ | $", ""),  # strip: after the rule above, the only whitespace left is single spaces
)
_RULES = [(re.compile(pattern), replacement) for pattern, replacement in TWEET_RULES]


def normalize_tweet(text: str) -> str:
    """Unescape HTML entities (the corpus stores `"` as `&quot;`), map URLs to 'http' and @mentions to '@user'
    (the same convention as the TweetEval/Twitter-RoBERTa models), and collapse whitespace."""
    for pattern, replacement in _RULES:
        text = pattern.sub(replacement, text)
    return text


# --------------------------------------------------------------------------------------------- splits
@dataclass
class Splits:
    train: Table
    val: Table
    test: Table  # held-out split of the training source
    manual: Table | None  # the hand-labelled test file, if any
    dropped: dict[str, Counter]
    rows_read: dict[str, int]

    def summary(self) -> dict:
        return {
            "rows_read": self.rows_read,
            "dropped": {k: dict(v) for k, v in self.dropped.items()},
            "split_sizes": {
                "train": len(self.train), "val": len(self.val), "heldout": len(self.test),
                "manual": len(self.manual) if self.manual is not None else 0,
            },
            "labels": list(self.classes),
            "label_balance": {
                name: counts(t.labels, self.classes)
                for name, t in (("train", self.train), ("val", self.val), ("heldout", self.test),
                                *((("test_file", self.manual),) if self.manual is not None else ()))
            },
        }

    @property
    def classes(self) -> tuple[str, ...]:
        return self.train.classes


def dedupe(table: Table, drop: set[str] = frozenset()) -> tuple[Table, Counter]:
    """Keep one copy of each text; drop texts seen with both labels and texts in `drop` (another split)."""
    labels_of: dict[str, set] = {}
    for t, y in zip(table.texts, table.labels):
        labels_of.setdefault(t, set()).add(int(y))
    seen, keep, dropped = set(), [], Counter()
    for i, t in enumerate(table.texts):
        if t in drop:
            dropped["overlaps_test_file"] += 1
        elif len(labels_of[t]) > 1:
            dropped["conflicting_labels"] += 1
        elif t in seen:
            dropped["duplicate_text"] += 1
        else:
            seen.add(t)
            keep.append(i)
    return table.subset(np.asarray(keep, dtype=np.int64)), dropped


def split_sizes(values: list[float], n: int) -> list[int]:
    """Row counts for train/val/test sizes given as counts or fractions of n. Fractions are rounded together by
    largest remainder, so fractions that add up to at most 1 never ask for more than n rows (rounded one by one,
    0.98/0.01/0.01 asked for one row more than there is for about a quarter of all row counts)."""
    sizes = [int(v) if v >= 1 else 0 for v in values]
    exact = {i: v * n for i, v in enumerate(values) if v < 1}
    for i, x in exact.items():
        sizes[i] = math.floor(x)
    left = round(sum(exact.values())) - sum(sizes[i] for i in exact)
    for i in sorted(exact, key=lambda i: exact[i] - math.floor(exact[i]), reverse=True)[:max(left, 0)]:
        sizes[i] += 1
    return sizes


def stratified_split(labels: np.ndarray, sizes: list[int], seed: int, balanced_first: bool = False) -> list[np.ndarray]:
    """Disjoint index sets of the requested sizes with the source's class balance, deterministic in seed; with
    `balanced_first` the first set (the training split) takes equal rows of every class instead, as far as each
    class has rows (--class-balance sample), and the others the source's balance."""
    rng = np.random.default_rng(seed)
    by_class = {c: rng.permutation(np.flatnonzero(labels == c)) for c in np.unique(labels)}
    frac = {c: len(ix) / len(labels) for c, ix in by_class.items()}
    pos = dict.fromkeys(by_class, 0)
    out = []
    for i, size in enumerate(sizes):
        quotas = {c: int(round(size * f)) for c, f in frac.items()}
        quotas[max(frac, key=frac.get)] += size - sum(quotas.values())  # rounding remainder
        if balanced_first and i == 0:
            quotas = {c: min(size // len(frac) + (j < size % len(frac)), len(by_class[c]))
                      for j, c in enumerate(frac)}
        # When the splits take (nearly) every row, rounding can ask a class for rows it no longer has.
        quotas = _within(quotas, {c: len(by_class[c]) - pos[c] for c in by_class})
        part = []
        for c, q in quotas.items():
            part.append(by_class[c][pos[c] : pos[c] + q])
            pos[c] += q
        out.append(rng.permutation(np.concatenate(part)))
    return out


def _within(quotas: dict, room: dict) -> dict:
    """Quotas moved from classes short of rows to classes that still have some."""
    for c in quotas:
        short = quotas[c] - room[c]
        if short > 0:
            quotas[c] -= short
            for other in quotas:
                take = min(short, room[other] - quotas[other])
                if take > 0:
                    quotas[other] += take
                    short -= take
    return quotas


def load_splits(cfg: DataConfig) -> Splits:
    """Read, normalise, deduplicate and split. The split depends on `split_seed` only."""
    source = read_source(cfg.data, cfg)
    classes = source.classes
    manual = read_test_file(cfg.test_file, cfg, classes) if cfg.test_file not in (None, "none", "") else None
    dropped = {"data": Counter(source.dropped)}
    rows_read = {"data": len(source) + sum(source.dropped.values())}
    if manual is not None:
        dropped["test_file"] = Counter(manual.dropped)
        rows_read["test_file"] = len(manual) + sum(manual.dropped.values())
    source = _normalised(source, cfg, dropped["data"])
    if manual is not None:
        manual = _normalised(manual, cfg, dropped["test_file"])
    source, d = dedupe(source, drop=set(manual.texts) if manual is not None else set())
    dropped["data"].update(d)

    n = len(source)
    sizes = split_sizes([cfg.train_size, cfg.val_size, cfg.test_size], n)
    for flag, value, size in zip(("--train-size", "--val-size", "--test-size"), (cfg.train_size, cfg.val_size,
                                                                                  cfg.test_size), sizes):
        if size == 0:
            raise DataError(f"{source.source}: {flag} {value:g} of the {n} rows left after cleaning is 0 rows. Raise "
                            f"{flag}, or give it as a row count.")
    if sum(sizes) > n:
        raise DataError(
            f"{source.source}: train/val/test sizes {sizes} need {sum(sizes)} rows but only {n} remain after "
            f"dropping {({k: v for k, v in dropped['data'].items() if v}) or 'nothing'}. Lower --train-size/--val-size/"
            f"--test-size or use fractions."
        )
    if len(np.unique(source.labels)) < 2:
        raise DataError(_one_class(source, n))
    tr, va, te = stratified_split(source.labels, sizes, cfg.split_seed, cfg.class_balance == "sample")
    if len(np.unique(source.labels[tr])) < 2 and is_binary(classes):
        neg, pos = int((source.labels == 0).sum()), int((source.labels == 1).sum())
        raise DataError(
            f"{source.source}: the {len(tr)}-row training split holds only "
            f"{'negative' if source.labels[tr[0]] == 0 else 'positive'} tweets (the source has {neg} negative and "
            f"{pos} positive after cleaning); a classifier needs both. Raise --train-size or add tweets of the "
            f"other class."
        )
    train = source.subset(tr, "train")
    val, test = source.subset(va, "val"), source.subset(te, "heldout")
    if cfg.extra_train_file:
        extra = read_table(cfg.extra_train_file, cfg, flag="--extra-train-file", classes=classes)
        dropped["extra_train_file"] = Counter(extra.dropped)
        extra = _normalised(extra, cfg, dropped["extra_train_file"])
        held = set(val.texts) | set(test.texts) | set(train.texts) | (set(manual.texts) if manual else set())
        extra, d = dedupe(extra, drop=held)
        dropped["extra_train_file"].update(d)
        train = Table(train.texts + extra.texts, np.concatenate([train.labels, extra.labels]), "train",
                      classes=classes)
    missing = [c for i, c in enumerate(classes) if not (train.labels == i).any()]
    if missing:
        raise DataError(f"{source.source}: the {len(train)}-row training split has no tweets of the class(es) "
                        f"{', '.join(missing)} (the source has {counts(source.labels, classes)} after cleaning); a "
                        f"classifier cannot learn a class it never sees. Raise --train-size, add tweets of those "
                        f"classes, or leave them out of --labels.")
    return Splits(train, val, test, manual, dropped, rows_read)


def _one_class(source: Table, n: int) -> str:
    name = source.classes[source.labels[0]]
    if is_binary(source.classes):
        return (f"{source.source}: only {name} tweets ({n} rows); a sentiment classifier needs both negative and "
                f"positive tweets. Check the label column (and --label-map).")
    return (f"{source.source}: only {name} tweets ({n} rows) of the classes {', '.join(source.classes)}; a "
            f"classifier needs at least two. Check the label column (and --labels, --label-map).")


def _normalised(table: Table, cfg: DataConfig, dropped: Counter) -> Table:
    if not cfg.normalize:
        return table
    texts = [normalize_tweet(t) for t in table.texts]
    keep = np.asarray([i for i, t in enumerate(texts) if t], dtype=np.int64)
    dropped["empty_after_normalisation"] += len(texts) - len(keep)
    return Table([texts[i] for i in keep], table.labels[keep], table.source, classes=table.classes)


def token_lengths(tokenizer, texts: list[str]) -> np.ndarray:
    return np.asarray([len(ids) for ids in tokenizer(texts, truncation=False)["input_ids"]])


def describe(table: Table, tokenizer=None) -> dict:
    """What `sendit data` prints: rows, labels, dropped rows, token lengths."""
    info = {
        "source": table.source,
        "rows": len(table),
        "labels": counts(table.labels, table.classes),
        "dropped": dict(table.dropped),
    }
    if tokenizer is not None and len(table):
        lengths = token_lengths(tokenizer, table.texts)
        info["token_lengths"] = {
            "mean": round(float(lengths.mean()), 1),
            "p50": int(np.percentile(lengths, 50)),
            "p95": int(np.percentile(lengths, 95)),
            "max": int(lengths.max()),
        }
    return json.loads(json.dumps(info))
