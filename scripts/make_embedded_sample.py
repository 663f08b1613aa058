"""Rebuild the embedded tweet sample shipped in `src/sendit/resources/`.

    python scripts/make_embedded_sample.py ../shared/data/sentiment140

Draws a class-balanced random sample (10,000 negative + 10,000 positive) from the training pool, in the
original six-column Sentiment140 format, and copies the hand-labelled test file beside it. The pool is
sorted by (label, id) and partly made of contiguous blocks, so the sample is drawn uniformly per class and
shuffled.
"""

import csv
import gzip
import random
import shutil
import sys
from pathlib import Path

PER_CLASS = 10_000
SEED = 140


def main(src: Path, dst: Path) -> None:
    with open(src / "train_pool.csv", encoding="latin-1", newline="") as f:
        rows = list(csv.reader(f))
    rng = random.Random(SEED)
    sample = []
    for label in ("0", "4"):
        sample += rng.sample([r for r in rows if r[0] == label], PER_CLASS)
    rng.shuffle(sample)
    with gzip.open(dst / "sentiment140_sample.csv.gz", "wt", encoding="latin-1", newline="") as f:
        csv.writer(f, quoting=csv.QUOTE_ALL).writerows(sample)
    shutil.copyfile(src / "testdata.manual.2009.06.14.csv", dst / "testdata.manual.2009.06.14.csv")
    print(f"wrote {len(sample)} tweets to {dst}")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(__file__).resolve().parents[1] / "src" / "sendit" / "resources")
