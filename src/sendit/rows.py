"""From the rows a reader found to a `Table`: label mapping, the checks that drop or refuse a row, and the
`--bad-rows` policy, the same for every file format.

A reader hands over (line, raw label, text, number of columns) items; what comes back is the texts with 0/1 labels
and a `Counter` of the rows left out by reason, so that a run can say exactly what it dropped.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from sendit.config import LABELS, ConfigError, DataConfig

DEFAULT_LABELS = LABELS
# The numeric label schemes whose meaning is certain: Sentiment140's 0/2/4 and binary 0/1; a 4 also makes 0/1/2/4
# Sentiment140-style (1 positive, 2 neutral). Without a 4, labels 0/1/2 are TweetEval's negative/neutral/positive
# as often as 0/1 plus a neutral 2; 1-5 are ratings, -1/0/1 polarities. sendit does not guess those.
SURE_SCHEMES = ({"0", "2", "4"}, {"0", "1"})


class DataError(ValueError):
    """Bad input data, with a message that names the file, the line or value, and the fix."""


@dataclass
class Table:
    texts: list[str]
    labels: np.ndarray  # int64, 0 = negative, 1 = positive
    source: str = ""
    dropped: Counter = field(default_factory=Counter)

    def __len__(self) -> int:
        return len(self.texts)

    def subset(self, idx: np.ndarray, source: str | None = None) -> Table:
        return Table([self.texts[i] for i in idx], self.labels[idx], source or self.source)



class LabelMapper:
    def __init__(self, extra: dict | None = None):
        self.mapping = dict(DEFAULT_LABELS)
        self.user = {self.key(k) for k in extra or {}}
        for k, v in (extra or {}).items():
            target = "neutral" if v is None else str(v).strip().lower()
            if target not in DEFAULT_LABELS:
                raise ConfigError(
                    f"--label-map maps {k!r} to {v!r}, which is not a label: map each value to 0 or negative, "
                    f"4 or 1 or positive, or 2 or neutral (dropped), e.g. --label-map \"{{'{k}': 0}}\"."
                )
            self.mapping[self.key(k)] = DEFAULT_LABELS[target]

    @staticmethod
    def key(raw: object) -> str:
        key = str(raw).strip().lower()
        return key[:-2] if key.endswith(".0") else key

    def __call__(self, raw: object) -> int | None:
        """0/1 for a known label, None for neutral; raises KeyError for an unknown one."""
        return self.mapping[self.key(raw)]

    def ambiguity(self, seen: Counter) -> str | None:
        """Why the numeric labels seen (key -> rows) cannot be read without --label-map, or None."""
        numbers = {k for k in seen if k not in self.user and re.fullmatch(r"[+-]?\d+", k)}
        if any(numbers <= scheme for scheme in SURE_SCHEMES) or ("4" in numbers and numbers <= {"0", "1", "2", "4"}):
            return None
        return ", ".join(sorted(numbers, key=int))



def collect(path: Path, items, cfg: DataConfig, expect_cols: int | None = None,
            columns: tuple[str, ...] = ()) -> Table:
    """Turn (line, raw label, text, ncols) items into a Table, enforcing cfg.bad_rows."""
    mapper = LabelMapper(cfg.label_map)
    texts, labels, dropped = [], [], Counter()
    unknown: Counter = Counter()
    first_unknown: dict = {}
    seen_labels: Counter = Counter()  # label values of the rows with a text, for LabelMapper.ambiguity

    def bad(reason: str, line: int, msg: str) -> None:
        if cfg.bad_rows == "error":
            raise DataError(f"{path}, line {line}: {msg} Fix the row, or pass --bad-rows skip to drop such "
                            f"rows (they are counted in run.json).")
        dropped[reason] += 1

    try:
        for line, raw_label, text, ncols in items:
            if expect_cols and ncols != expect_cols:
                if ncols == 0:
                    continue
                bad("malformed_row", line, f"expected {expect_cols} columns ({', '.join(columns)}), found "
                                           f"{ncols} (an unquoted comma in the text?).")
                continue
            problem = _not_a_tweet(text)
            if problem:
                bad(problem[0], line, problem[1])
                continue
            seen_labels[mapper.key(raw_label)] += 1
            try:
                label = mapper(raw_label)
            except KeyError:
                unknown[str(raw_label)] += 1
                first_unknown.setdefault(str(raw_label), line)
                continue
            if label is None:
                dropped["neutral"] += 1
                continue
            texts.append(text)
            labels.append(label)
    except DataError as e:
        if str(e).startswith("line "):
            raise DataError(f"{path}, {e}") from None
        raise
    ambiguous = mapper.ambiguity(seen_labels)
    if ambiguous:
        raise DataError(_ambiguous_labels(path, ambiguous, seen_labels))
    if unknown:
        counts = ", ".join(f"{short(v)}: {n} rows (first on line {first_unknown[v]})"
                           for v, n in unknown.most_common(10))
        more = f" and {len(unknown) - 10} more values" if len(unknown) > 10 else ""
        example = ", ".join(f"{short(v)}: {y}" for v, y in zip(sorted(unknown)[:2], (0, 4)))
        if cfg.bad_rows == "error":
            raise DataError(
                f"{path}: labels outside the expected set (0/4 or 0/1, 2 = neutral, negative/positive): "
                f"{counts}{more}. Map them with --label-map \"{{{example}}}\" (0 = negative, 4 or 1 = positive, "
                f"2 = neutral, dropped), or pass --bad-rows skip to drop them."
            )
        dropped["unknown_label"] += sum(unknown.values())
    if not texts:
        why = f"dropped: {dict(dropped)}" if dropped else "it has no data rows"
        raise DataError(f"{path}: no usable rows ({why}). Check the file's columns and labels.")
    return Table(texts, np.asarray(labels, dtype=np.int64), str(path), dropped)


def _not_a_tweet(text: object) -> tuple[str, str] | None:
    """(reason, message) when a row's text is no tweet: missing (JSON null, an empty Parquet cell), not a string
    (a number, a JSON object or list: their Python spelling is no tweet), or blank."""
    if text is None or (isinstance(text, float) and math.isnan(text)) or type(text).__name__ in ("NAType", "NaTType"):
        return "missing_text", "the text is missing (null)."
    if not isinstance(text, str):
        kind = {dict: "a JSON object", list: "a JSON list", bool: "true or false"}.get(type(text)) or (
            "a number" if isinstance(text, (int, float, np.number)) else f"a {type(text).__name__}")
        return "not_text", f"the text is {kind} ({short(text)}), not a string, so it is not a tweet."
    if not text.strip():
        return "empty_text", "the tweet text is empty."
    return None


def _ambiguous_labels(path: Path, numbers: str, seen: Counter) -> str:
    values = numbers.split(", ")
    counts = ", ".join(f"{v} ({seen[v]} rows)" for v in values)
    middle = (len(values) - 1) / 2
    example = ", ".join(f"{v}: {'negative' if i < middle else 'neutral' if i == middle else 'positive'}"
                        for i, v in enumerate(values))
    return (f"{path}: the labels {counts} have no single reading: 0/1/2 are negative/neutral/positive in TweetEval "
            f"but 0/1 plus a neutral 2 elsewhere, 1-5 look like ratings, -1/0/1 like polarities. Say what each value "
            f"means with --label-map, e.g. --label-map \"{{{example}}}\" (neutral rows are dropped and counted).")


def short(value: object, width: int = 40) -> str:
    """A value quoted for a message, cut to `width` characters (a misread file can put a whole tweet there)."""
    text = str(value)
    return repr(text if len(text) <= width else text[:width] + "...")
