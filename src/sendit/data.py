"""Readers, tweet normalisation and leak-free stratified splits.

Every reader returns a `Table` (texts, 0/1 labels) plus a `Counter` of dropped rows by reason, so that a run can
say exactly what it left out. Labels: Sentiment140's 0 = negative and 4 = positive become 0 and 1; its neutral 2
is dropped and counted.
"""

from __future__ import annotations

import codecs
import csv
import gzip
import html
import io
import json
import re
from collections import Counter
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np

from sendit.config import ConfigError, DataConfig

EMBEDDED = "embedded"
SENTIMENT140_COLUMNS = ("target", "id", "date", "query", "user", "text")
HUB_DATASET = "stanfordnlp/sentiment140"
TEXT_COLUMNS = ("text", "tweet", "sentence", "content")
LABEL_COLUMNS = ("label", "target", "sentiment", "polarity")
# Sentiment140 uses 0/2/4; generic files often use 0/1 or words. None means neutral: dropped and counted.
DEFAULT_LABELS: dict[str, int | None] = {
    "0": 0, "4": 1, "1": 1, "2": None,
    "negative": 0, "positive": 1, "neg": 0, "pos": 1, "neutral": None,
}


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


# --------------------------------------------------------------------------------------------- normalisation
_URL = re.compile(r"(https?://\S+|www\.\S+)", re.IGNORECASE)
_MENTION = re.compile(r"@\w+")
_SPACE = re.compile(r"\s+")


def normalize_tweet(text: str) -> str:
    """Unescape HTML entities (the corpus stores `"` as `&quot;`), map URLs to 'http' and @mentions to '@user'
    (the same convention as the TweetEval/Twitter-RoBERTa models), and collapse whitespace."""
    text = html.unescape(text)
    text = _URL.sub("http", text)
    text = _MENTION.sub("@user", text)
    return _SPACE.sub(" ", text).strip()


# --------------------------------------------------------------------------------------------- label mapping
class LabelMapper:
    def __init__(self, extra: dict | None = None):
        self.mapping = dict(DEFAULT_LABELS)
        for k, v in (extra or {}).items():
            target = "neutral" if v is None else str(v).strip().lower()
            if target not in DEFAULT_LABELS:
                raise ConfigError(
                    f"--label-map maps {k!r} to {v!r}, which is not a label: map each value to 0 or negative, "
                    f"4 or 1 or positive, or 2 or neutral (dropped), e.g. --label-map \"{{'{k}': 0}}\"."
                )
            self.mapping[str(k).strip().lower()] = DEFAULT_LABELS[target]

    def __call__(self, raw: object) -> int | None:
        """0/1 for a known label, None for neutral; raises KeyError for an unknown one."""
        key = str(raw).strip().lower()
        if key.endswith(".0"):
            key = key[:-2]
        return self.mapping[key]


# --------------------------------------------------------------------------------------------- readers
def _open_text(path: Path, encoding: str) -> io.TextIOBase:
    """The file as text. 'auto' is UTF-8 when the bytes are valid UTF-8, else latin-1 (Sentiment140's own files,
    which any byte decodes); a UTF-8 byte-order mark (Excel's "CSV UTF-8") is dropped either way."""
    raw = path.read_bytes()
    if path.suffix == ".gz":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, ValueError) as e:
            raise DataError(f"{path}: not a readable gzip file ({e}). Decompress it yourself or re-download "
                            f"it.") from None
    raw = raw.removeprefix(codecs.BOM_UTF8)
    if not raw.strip():
        raise DataError(f"{path}: the file is empty. Point --data at a CSV with text and label columns.")
    if b"\x00" in raw:
        line = raw[: raw.index(b"\x00")].count(b"\n") + 1
        raise DataError(
            f"{path}, line {line}: the file contains NUL bytes, so it is binary or corrupted (a spreadsheet "
            f"export gone wrong?). Re-export it as plain CSV, or strip the NULs: tr -d '\\000' < in > out."
        )
    if encoding == "auto":
        try:
            return io.StringIO(raw.decode("utf-8"), newline="")
        except UnicodeDecodeError:
            return io.StringIO(raw.decode("latin-1"), newline="")
    try:
        return io.StringIO(raw.decode(encoding), newline="")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise DataError(
            f"{path}, line {line}: byte {raw[e.start:e.start + 1]!r} is not valid {encoding}. Pass --encoding "
            f"latin-1 (Sentiment140's encoding) or --encoding auto (UTF-8, else latin-1), or re-save the file as "
            f"{encoding}."
        ) from None
    except LookupError:
        raise ConfigError(f"--encoding {encoding!r} is not an encoding Python knows; use auto, utf-8 or "
                          f"latin-1.") from None


def read_sentiment140(path: str | Path, cfg: DataConfig | None = None, encoding: str = "latin-1") -> Table:
    """The original six-column file (target, id, date, query, user, text), no header, latin-1."""
    cfg = cfg or DataConfig()
    path = Path(path)
    rows = csv.reader(_open_text(path, encoding), strict=True)
    return _collect(path, ((i, r[0] if r else "", r[5] if len(r) == 6 else None, len(r)) for i, r in _numbered(rows)), cfg, expect_cols=6)


def _numbered(rows):
    """(line number, row) pairs that survive csv's own errors (broken quoting) as a DataError. The reader is
    strict, so a quote that is never closed fails instead of swallowing the rest of the file into one tweet."""
    it = iter(rows)
    while True:
        start = rows.line_num + 1
        try:
            row = next(it)
        except StopIteration:
            return
        except csv.Error as e:
            upto = f" (read up to line {rows.line_num})" if rows.line_num > start else ""
            raise DataError(f"line {start}: malformed CSV ({e}) in the row that starts there{upto}. Check its "
                            f"quotes: a quoted field must end with a quote followed by a comma or the line end, "
                            f"and quotes inside it are doubled (\"\").") from None
        yield rows.line_num, row


def _collect(path: Path, items, cfg: DataConfig, expect_cols: int | None = None,
             columns: tuple[str, ...] = SENTIMENT140_COLUMNS) -> Table:
    """Turn (line, raw label, text, ncols) items into a Table, enforcing cfg.bad_rows."""
    mapper = LabelMapper(cfg.label_map)
    texts, labels, dropped = [], [], Counter()
    unknown: Counter = Counter()
    first_unknown: dict = {}

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
            try:
                label = mapper(raw_label)
            except KeyError:
                unknown[str(raw_label)] += 1
                first_unknown.setdefault(str(raw_label), line)
                continue
            if label is None:
                dropped["neutral"] += 1
                continue
            text = "" if text is None else str(text)
            if not text.strip():
                bad("empty_text", line, "the tweet text is empty.")
                continue
            texts.append(text)
            labels.append(label)
    except DataError as e:
        if str(e).startswith("line "):
            raise DataError(f"{path}, {e}") from None
        raise
    if unknown:
        counts = ", ".join(f"{_short(v)}: {n} rows (first on line {first_unknown[v]})"
                           for v, n in unknown.most_common(10))
        more = f" and {len(unknown) - 10} more values" if len(unknown) > 10 else ""
        example = ", ".join(f"{_short(v)}: {y}" for v, y in zip(sorted(unknown)[:2], (0, 4)))
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


def read_table(path: str | Path, cfg: DataConfig | None = None, encoding: str | None = None) -> Table:
    """Any supported file: the original Sentiment140 CSV (detected by its shape), or CSV/JSONL/Parquet with
    text and label columns."""
    cfg = cfg or DataConfig()
    path = Path(path)
    if not path.exists():
        raise DataError(f"data file '{path}' does not exist. Pass --data with a CSV/JSONL/Parquet file, "
                        f"'embedded' for the packaged sample, or 'hub' for {HUB_DATASET}.")
    if path.is_dir():
        raise DataError(f"'{path}' is a folder; --data takes a file.")
    suffixes = "".join(path.suffixes[-2:]).lower()
    if ".parquet" in suffixes or ".jsonl" in suffixes or suffixes.endswith(".json"):
        import pandas as pd

        try:
            df = pd.read_parquet(path) if ".parquet" in suffixes else pd.read_json(path, lines=True)
        except (ValueError, OSError) as e:
            raise DataError(f"{path}: could not be read ({e}). Check that the file is valid.") from None
        text_col, label_col = _find_columns(path, list(df.columns))
        items = ((i + 1, lab, txt, None) for i, (lab, txt) in enumerate(zip(df[label_col], df[text_col])))
        return _collect(path, items, cfg)
    enc = encoding or cfg.encoding
    stream = _open_text(path, enc)
    try:
        first = next(csv.reader(io.StringIO(stream.readline())), [])
    except csv.Error:
        first = []
    stream.seek(0)
    if len(first) == 6 and first[0].strip() in ("0", "2", "4"):
        return read_sentiment140(path, cfg, enc)
    reader = csv.reader(stream, strict=True)
    try:
        header = [h.strip() for h in next(_numbered(reader), (1, []))[1]]
    except DataError as e:
        raise DataError(f"{path}, {e}") from None
    text_col, label_col = _find_columns(path, header)
    ti, li = header.index(text_col), header.index(label_col)
    n = len(header)

    def items():
        for line, row in _numbered(reader):
            if not row:
                continue
            yield line, row[li] if len(row) == n else None, row[ti] if len(row) == n else None, len(row)

    return _collect(path, items(), cfg, expect_cols=n, columns=tuple(header))


def _short(value: object, width: int = 40) -> str:
    """A value quoted for a message, cut to `width` characters (a misread file can put a whole tweet there)."""
    text = str(value)
    return repr(text if len(text) <= width else text[:width] + "...")


def _find_columns(path: Path, columns: list) -> tuple[str, str]:
    lower = {str(c).strip().lower(): c for c in columns}
    text = next((lower[c] for c in TEXT_COLUMNS if c in lower), None)
    label = next((lower[c] for c in LABEL_COLUMNS if c in lower), None)
    missing = [what for what, col in (("text", text), ("label", label)) if col is None]
    if missing:
        raise DataError(
            f"{path}: missing column(s) {', '.join(missing)}; found {', '.join(_short(c) for c in columns) or 'none'}. "
            f"The file needs a header with a 'text' column (or tweet/sentence) and a 'label' column "
            f"(or target/sentiment), or the headerless six-column Sentiment140 format."
        )
    return text, label


def embedded_path(name: str) -> Path:
    return Path(str(resources.files("sendit") / "resources" / name))


def read_source(spec: str, cfg: DataConfig) -> Table:
    """Resolve --data: 'embedded', 'hub' / 'hub:<dataset id>', or a file."""
    if spec == EMBEDDED:
        return read_sentiment140(embedded_path("sentiment140_sample.csv.gz"), cfg)
    if spec == "hub" or spec.startswith("hub:"):
        return read_hub(spec.partition(":")[2] or HUB_DATASET, cfg)
    return read_table(spec, cfg)


def read_hub(dataset_id: str, cfg: DataConfig) -> Table:
    """The Hugging Face hub copy of Sentiment140 (columns text, sentiment 0/4). Needs `pip install sendit[hub]`."""
    try:
        import datasets
    except ImportError:
        raise DataError("reading from the hub needs the datasets package: pip install 'sendit[hub]'") from None
    try:
        ds = datasets.load_dataset(dataset_id, split="train")
    except Exception as e:  # network errors, missing dataset: all surface as a user-facing message
        raise DataError(
            f"could not load '{dataset_id}' from the Hugging Face hub ({type(e).__name__}: {e}). Offline? "
            f"Download training.1600000.processed.noemoticon.csv and pass it with --data."
        ) from None
    label_col = "sentiment" if "sentiment" in ds.column_names else "label"
    items = ((i + 1, lab, txt, None) for i, (lab, txt) in enumerate(zip(ds[label_col], ds["text"])))
    return _collect(Path(dataset_id), items, cfg)


def read_test_file(spec: str, cfg: DataConfig) -> Table:
    """The hand-labelled test file; neutral rows are dropped (498 -> 359 tweets)."""
    path = embedded_path("testdata.manual.2009.06.14.csv") if spec == EMBEDDED else spec
    return read_table(path, cfg)


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
            "label_balance": {
                name: {"negative": int((t.labels == 0).sum()), "positive": int((t.labels == 1).sum())}
                for name, t in (("train", self.train), ("val", self.val), ("heldout", self.test))
            },
        }


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


def _size(value: float, n: int) -> int:
    return int(round(value * n)) if value < 1 else int(value)


def stratified_split(labels: np.ndarray, sizes: list[int], seed: int) -> list[np.ndarray]:
    """Disjoint index sets of the requested sizes with the source's class balance, deterministic in seed."""
    rng = np.random.default_rng(seed)
    by_class = {c: rng.permutation(np.flatnonzero(labels == c)) for c in np.unique(labels)}
    frac = {c: len(ix) / len(labels) for c, ix in by_class.items()}
    pos = dict.fromkeys(by_class, 0)
    out = []
    for size in sizes:
        quotas = {c: int(round(size * f)) for c, f in frac.items()}
        quotas[max(frac, key=frac.get)] += size - sum(quotas.values())  # rounding remainder
        part = []
        for c, q in quotas.items():
            part.append(by_class[c][pos[c] : pos[c] + q])
            pos[c] += q
        out.append(rng.permutation(np.concatenate(part)))
    return out


def load_splits(cfg: DataConfig) -> Splits:
    """Read, normalise, deduplicate and split. The split depends on `split_seed` only."""
    source = read_source(cfg.data, cfg)
    manual = read_test_file(cfg.test_file, cfg) if cfg.test_file not in (None, "none", "") else None
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
    sizes = [_size(cfg.train_size, n), _size(cfg.val_size, n), _size(cfg.test_size, n)]
    if sum(sizes) > n:
        raise DataError(
            f"{source.source}: train/val/test sizes {sizes} need {sum(sizes)} rows but only {n} remain after "
            f"dropping {({k: v for k, v in dropped['data'].items() if v}) or 'nothing'}. Lower --train-size/--val-size/"
            f"--test-size or use fractions."
        )
    if len(np.unique(source.labels)) < 2:
        raise DataError(f"{source.source}: only {'negative' if source.labels[0] == 0 else 'positive'} tweets "
                        f"({n} rows); a sentiment classifier needs both negative and positive tweets. Check the "
                        f"label column (and --label-map).")
    tr, va, te = stratified_split(source.labels, sizes, cfg.split_seed)
    if len(np.unique(source.labels[tr])) < 2:
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
        extra = read_table(cfg.extra_train_file, cfg)
        dropped["extra_train_file"] = Counter(extra.dropped)
        extra = _normalised(extra, cfg, dropped["extra_train_file"])
        held = set(val.texts) | set(test.texts) | set(train.texts) | (set(manual.texts) if manual else set())
        extra, d = dedupe(extra, drop=held)
        dropped["extra_train_file"].update(d)
        train = Table(train.texts + extra.texts, np.concatenate([train.labels, extra.labels]), "train")
    return Splits(train, val, test, manual, dropped, rows_read)


def _normalised(table: Table, cfg: DataConfig, dropped: Counter) -> Table:
    if not cfg.normalize:
        return table
    texts = [normalize_tweet(t) for t in table.texts]
    keep = np.asarray([i for i, t in enumerate(texts) if t], dtype=np.int64)
    dropped["empty_after_normalisation"] += len(texts) - len(keep)
    return Table([texts[i] for i in keep], table.labels[keep], table.source)


def read_texts(path: str | Path, column: str = "text") -> list[str]:
    """Unlabelled texts for prediction (CSV with a text column, or one JSON object per line)."""
    import pandas as pd

    path = Path(path)
    if not path.is_file():
        raise DataError(f"'{path}' does not exist or is not a file. Pass a CSV with a '{column}' column.")
    try:
        df = (pd.read_json(path, lines=True) if path.suffix == ".jsonl"
              else pd.read_csv(path, encoding="latin-1", dtype=str, keep_default_na=False))
    except (ValueError, OSError) as e:  # pandas' ParserError and EmptyDataError are ValueErrors
        raise DataError(f"{path}: could not be read as {'JSON lines' if path.suffix == '.jsonl' else 'CSV'} "
                        f"({' '.join(str(e).split())}). Check that it is a valid file with a header.") from None
    if column not in df.columns:
        raise DataError(f"{path}: no '{column}' column (found {', '.join(map(str, df.columns))}).")
    return ["" if v is None or (isinstance(v, float) and v != v) else str(v) for v in df[column]]


def token_lengths(tokenizer, texts: list[str]) -> np.ndarray:
    return np.asarray([len(ids) for ids in tokenizer(texts, truncation=False)["input_ids"]])


def describe(table: Table, tokenizer=None) -> dict:
    """What `sendit data` prints: rows, labels, dropped rows, token lengths."""
    info = {
        "source": table.source,
        "rows": len(table),
        "labels": {"negative": int((table.labels == 0).sum()), "positive": int((table.labels == 1).sum())},
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
