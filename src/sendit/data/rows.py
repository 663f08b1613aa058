"""From the rows a reader found to a `Table`: label mapping, the checks that drop or refuse a row, and the
`--bad-rows` policy, the same for every file format.

A reader hands over (line, raw label, text, number of columns) items; what comes back is the texts with class ids (labels.py decides the classes)
and a `Counter` of the rows left out by reason, so that a run can say exactly what it dropped.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from sendit.config.schema import DataConfig
from sendit.data.labels import BINARY, Reading, class_names, key
from sendit.errors import DataError

TEXT_COLUMNS = ("text", "tweet", "sentence", "content")
LABEL_COLUMNS = ("label", "target", "sentiment", "polarity")


@dataclass
class Table:
    texts: list[str]
    labels: np.ndarray  # int64 class ids: the position of each row's class in `classes`
    source: str = ""
    dropped: Counter = field(default_factory=Counter)
    classes: tuple[str, ...] = BINARY  # class names in id order (0 = negative, 1 = positive by default)

    def __len__(self) -> int:
        return len(self.texts)

    def subset(self, idx: np.ndarray, source: str | None = None) -> Table:
        return Table([self.texts[i] for i in idx], self.labels[idx], source or self.source, classes=self.classes)


def find_columns(path: Path, columns: list, text_column: str | None = None,
                 label_column: str | None = None) -> tuple[str, str]:
    """The text and label columns among a file's `columns`: the named ones (--text-column, --label-column), else
    the first of TEXT_COLUMNS and LABEL_COLUMNS, in any case."""
    for flag, name in (("--text-column", text_column), ("--label-column", label_column)):
        if name is not None and name not in columns:
            raise DataError(f"{path}: {flag} {name!r} is not a column of the file; its columns are "
                            f"{', '.join(short(c) for c in columns) or 'none'}.")
    lower = {str(c).strip().lower(): c for c in columns}
    text = text_column or next((lower[c] for c in TEXT_COLUMNS if c in lower), None)
    label = label_column or next((lower[c] for c in LABEL_COLUMNS if c in lower), None)
    missing = [what for what, col in (("text", text), ("label", label)) if col is None]
    if missing:
        raise DataError(
            f"{path}: missing column(s) {', '.join(missing)}; found {', '.join(short(c) for c in columns) or 'none'}. "
            f"The file needs a header with a 'text' column (or tweet/sentence) and a 'label' column "
            f"(or target/sentiment), or the headerless six-column Sentiment140 format."
        )
    return text, label


def collect(path: Path, items, cfg: DataConfig, expect_cols: int | None = None,
            columns: tuple[str, ...] = (), classes: tuple[str, ...] | None = None) -> Table:
    """Turn (line, raw label, text, ncols) items into a Table, enforcing cfg.bad_rows. The classes are `classes`
    (the run's, for every file but its training source), else --labels, else decided from the labels read
    (labels.Reading)."""
    texts, keys, lines, dropped = [], [], [], Counter()
    seen: Counter = Counter()  # label keys of the rows with a text
    spelling: dict[str, str] = {}

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
            k = key(raw_label)
            seen[k] += 1
            spelling.setdefault(k, str(raw_label).strip())
            texts.append(text)
            keys.append(k)
            lines.append(line)
    except DataError as e:
        if str(e).startswith("line "):
            raise DataError(f"{path}, {e}") from None
        raise
    reading = Reading(seen, cfg.label_map, classes or (class_names(cfg.labels) if cfg.labels else None), spelling)
    if reading.ambiguous:
        raise DataError(_ambiguous_labels(path, reading.ambiguous, seen, fixed=classes is not None))
    keep, labels = [], []
    for i, k in enumerate(keys):
        label = reading.ids.get(k, -1)
        if label is None:
            dropped["neutral"] += 1
        elif label >= 0:
            keep.append(i)
            labels.append(label)
    if reading.unknown:
        _unknown_labels(path, reading, seen, spelling, keys, lines, cfg, dropped, fixed=classes is not None)
    if not keep:
        why = f"dropped: {dict(dropped)}" if dropped else "it has no data rows"
        raise DataError(f"{path}: no usable rows ({why}). Check the file's columns and labels.")
    return Table([texts[i] for i in keep], np.asarray(labels, dtype=np.int64), str(path), dropped, reading.classes)


def _unknown_labels(path: Path, reading: Reading, seen: Counter, spelling: dict, keys: list, lines: list,
                    cfg: DataConfig, dropped: Counter, fixed: bool) -> None:
    """Values outside the classes: an error that says how to read them, or (--bad-rows skip) dropped rows.
    `fixed`: the classes are the caller's (a model's, a run's), so --labels cannot widen them."""
    if cfg.bad_rows != "error":
        dropped["unknown_label"] += sum(seen[k] for k in reading.unknown)
        return
    first = {}
    for k, line in zip(keys, lines):
        first.setdefault(k, line)
    unknown = sorted(reading.unknown, key=lambda k: (-seen[k], first[k]))
    counts = ", ".join(f"{short(spelling[k])}: {seen[k]} rows (first on line {first[k]})" for k in unknown[:10])
    more = f" and {len(unknown) - 10} more values" if len(unknown) > 10 else ""
    if cfg.labels or reading.classes != BINARY:
        expected = f"the classes {', '.join(reading.classes)}"
        fix = (f"Map them with --label-map \"{{{short(spelling[unknown[0]])}: {reading.classes[0]}}}\", "
               f"add them to --labels, or pass --bad-rows skip to drop them.")
    else:
        expected = "the expected set (0/4 or 0/1, 2 = neutral, negative/positive)"
        example = ", ".join(f"{short(spelling[k])}: {y}" for k, y in zip(sorted(unknown)[:2], (0, 4)))
        every = ",".join(sorted((spelling[k] for k in seen if k), key=str.lower))
        widen = "" if fixed else f"train on every value as a class with --labels {every}, "
        fix = (f"Map them with --label-map \"{{{example}}}\" (0 = negative, 4 or 1 = positive, 2 = neutral, "
               f"dropped), {widen}or pass --bad-rows skip to drop them.")
    raise DataError(f"{path}: labels outside {expected}: {counts}{more}. {fix}")


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


def _ambiguous_labels(path: Path, values: list[str], seen: Counter, fixed: bool) -> str:
    """`fixed`: the classes are the caller's (a model's, a run's), so only --label-map can say what values mean."""
    counts = ", ".join(f"{v} ({seen[v]} rows)" for v in values)
    middle = (len(values) - 1) / 2
    example = ", ".join(f"{v}: {'negative' if i < middle else 'neutral' if i == middle else 'positive'}"
                        for i, v in enumerate(values))
    # 0/1/2 as ids of three named classes; other values (1-5, -1/0/1) as names of their own
    names = "negative,neutral,positive" if values == ["0", "1", "2"] else ",".join(values)
    widen = "" if fixed else (
        f", or name the classes with --labels, e.g. --labels{'=' if names.startswith('-') else ' '}{names} "
        f"(integers 0..k-1 are then read as positions in --labels, other values as names; the names are the classes)")
    return (f"{path}: the labels {counts} have no single reading: 0/1/2 are negative/neutral/positive in TweetEval "
            f"but 0/1 plus a neutral 2 elsewhere, 1-5 look like ratings, -1/0/1 like polarities. Say what each value "
            f"means with --label-map, e.g. --label-map \"{{{example}}}\" (neutral rows are dropped and counted)"
            f"{widen}.")


def short(value: object, width: int = 40) -> str:
    """A value quoted for a message, cut to `width` characters (a misread file can put a whole tweet there)."""
    text = str(value)
    return repr(text if len(text) <= width else text[:width] + "...")
