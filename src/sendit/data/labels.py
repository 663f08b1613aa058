"""The classes of a run, and how a file's label values become class ids.

A run's classes are decided once, from the training source or `--labels`, and every other file (the test file,
the extra training file, a file `sendit evaluate` scores) is read against them. Without `--labels`:
- labels that are all Sentiment140/sentiment words (0/4, 0/1, negative/positive, neg/pos, with 2/neutral) make
  the binary negative/positive task, neutral rows dropped and counted, as sendit always did;
- word labels none of which is a sentiment word (joy, anger, fear) are the classes themselves, in sorted order;
- anything else (a mix, or numbers whose meaning is not certain) is refused with the flags that say what is meant.
With `--labels a,b,c` the i-th name is class i: a value is read as a name (any case), through `--label-map`, as
an id (integers 0..k-1, when all of a file's integers are), or as Sentiment140's 0/2/4 = negative/neutral/positive.
"""

from __future__ import annotations

import re
from collections import Counter

from sendit.config.schema import LABELS

BINARY: tuple[str, ...] = ("negative", "positive")
NEUTRAL = "neutral"
# Sentiment140's 0/2/4, binary 0/1 and the sentiment words, as class names (None in config.LABELS is neutral).
VOCABULARY: dict[str, str] = {k: NEUTRAL if v is None else BINARY[v] for k, v in LABELS.items()}
# The numeric label schemes whose meaning is certain: Sentiment140's 0/2/4 and binary 0/1; a 4 also makes 0/1/2/4
# Sentiment140-style (1 positive, 2 neutral). Without a 4, labels 0/1/2 are TweetEval's negative/neutral/positive
# as often as 0/1 plus a neutral 2; 1-5 are ratings, -1/0/1 polarities. sendit does not guess those.
SURE_SCHEMES = ({"0", "2", "4"}, {"0", "1"})


def key(raw: object) -> str:
    """A label value as compared: stripped, lower case, '4.0' read as '4' (pandas reads integer columns with a gap
    as floats)."""
    text = str(raw).strip().lower()
    return text[:-2] if text.endswith(".0") else text


def is_number(k: str) -> bool:
    return re.fullmatch(r"[+-]?\d+", k) is not None


def ambiguous_numbers(keys: set[str]) -> list[str]:
    """The numeric label values whose reading is not certain, sorted; [] when they are a sure scheme."""
    numbers = {k for k in keys if is_number(k)}
    if any(numbers <= scheme for scheme in SURE_SCHEMES) or ("4" in numbers and numbers <= {"0", "1", "2", "4"}):
        return []
    return sorted(numbers, key=int)


def class_names(labels: list | tuple | None) -> tuple[str, ...]:
    """`--labels` as class names (None: the binary default)."""
    return BINARY if not labels else tuple(str(x).strip() for x in labels)


def is_binary(classes: tuple[str, ...]) -> bool:
    return tuple(classes) == BINARY


class Reading:
    """How one file's label values map to class ids, for given classes or for classes decided from the values
    (`classes=None`). `seen` counts the rows of each value's key; `spelling` is each key's first spelling in the
    file (class names from the data keep it). `ids[key]` is the class id, None for a neutral row that no class
    takes (dropped and counted), absent for a value outside the classes (`unknown`); `ambiguous` lists the numeric
    values that need --labels or --label-map."""

    def __init__(self, seen: Counter, label_map: dict | None, classes: tuple[str, ...] | None,
                 spelling: dict[str, str] | None = None):
        user = {key(k): v for k, v in (label_map or {}).items()}
        free = {k for k in seen if k not in user}  # values the file's own spelling must explain
        self.classes = tuple(classes) if classes is not None else _decide(free, bool(user), spelling or {})
        by_name = {key(c): i for i, c in enumerate(self.classes)}
        for i, c in enumerate(self.classes):  # --labels neg,pos still reads Sentiment140's 0/4 and 'negative'
            if not is_number(key(c)) and key(c) in VOCABULARY:
                by_name.setdefault(VOCABULARY[key(c)], i)
        numbers = {k for k in free if is_number(k) and k not in by_name}
        as_ids = bool(numbers) and all(0 <= int(k) < len(self.classes) for k in numbers)
        self.ambiguous = [] if as_ids else ambiguous_numbers(numbers)
        self.ids: dict[str, int | None] = {}
        for k in seen:
            target = user.get(k, k)
            name = key(NEUTRAL if target is None else target)
            if name in by_name:
                self.ids[k] = by_name[name]
            elif as_ids and k in numbers:
                self.ids[k] = int(k)
            elif name in VOCABULARY:
                canonical = VOCABULARY[name]
                if canonical in by_name:
                    self.ids[k] = by_name[canonical]
                elif canonical == NEUTRAL:
                    self.ids[k] = None
        self.unknown = [k for k in seen if k not in self.ids]


def _decide(free: set[str], mapped: bool, spelling: dict[str, str]) -> tuple[str, ...]:
    """The classes of a source read without --labels: binary for sentiment labels (or any --label-map, whose
    targets are sentiment labels), else the source's own words, sorted, when none of them is a sentiment label."""
    words = {k for k in free if k and not is_number(k)}
    if mapped or len(words) < 2 or len(words) < len(free) or any(k in VOCABULARY for k in words):
        return BINARY
    return tuple(sorted((spelling.get(k, k) for k in words), key=str.lower))


def counts(labels, classes: tuple[str, ...]) -> dict[str, int]:
    """Rows per class name, in class order."""
    import numpy as np

    labels = np.asarray(labels)
    return {name: int((labels == i).sum()) for i, name in enumerate(classes)}


def label_dicts(probs, classes: tuple[str, ...]) -> list[dict]:
    """`predict`'s dicts from class probabilities, for every kind of model folder (torch or ONNX): label and
    label_name, then prob_positive for a negative/positive model, else one prob_<name> per class."""
    if classes == ("negative", "positive"):
        return [{"label": int(p >= 0.5), "label_name": "positive" if p >= 0.5 else "negative",
                 "prob_positive": float(p)} for p in probs[:, 1]]
    return [{"label": int(row.argmax()), "label_name": classes[int(row.argmax())],
             **{f"prob_{c}": float(p) for c, p in zip(classes, row)}} for row in probs]
