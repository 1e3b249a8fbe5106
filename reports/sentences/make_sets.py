"""Sentence-level validation sets from a run's validation split (no held-out text is read).

    python reports/sentences/make_sets.py RUN/data/val.jsonl OUT_DIR

Most held-out sets are single sentences labelled with their review's label (li2018_amazon_sent) or
their own. These are the same thing built from the pipeline's validation reviews: every sentence of
5 to 40 words (:func:`distill.sentences`: split after ``.``, ``!`` or ``?`` and at line breaks),
labelled with its review's label, shuffled (seed 7), 4,000 of each class. Writes
``OUT_DIR/val_sentences.jsonl.gz`` and the same sentences in publisher style
(``OUT_DIR/val_sentences_styled.jsonl.gz``: :func:`distill.publisher_style`).
"""

from __future__ import annotations

import gzip
import json
import random
import sys
from pathlib import Path

from pipeline.compress.distill import publisher_style, sentences
from pipeline.data import iter_jsonl

PER_CLASS = 4000


def labelled_sentences(val: Path) -> list[tuple[str, int]]:
    """Every 5-to-40-word sentence of the validation reviews with its review's label, shuffled."""
    rows = [(s, int(y)) for t, y in iter_jsonl(val) for s in sentences(t) if 5 <= len(s.split()) <= 40]
    random.Random(7).shuffle(rows)
    return rows


def main(val: Path, out: Path) -> int:
    rows = labelled_sentences(val)
    chosen = [r for r in rows if r[1] == 1][:PER_CLASS] + [r for r in rows if r[1] == 0][:PER_CLASS]
    out.mkdir(parents=True, exist_ok=True)
    for name, fn in (("val_sentences", str), ("val_sentences_styled", publisher_style)):
        with gzip.open(out / f"{name}.jsonl.gz", "wt", encoding="utf-8") as f:
            for s, y in chosen:
                f.write(json.dumps({"text": fn(s), "label": y}, ensure_ascii=False) + "\n")
    print(f"{out}: {len(chosen):,} of {len(rows):,} sentences")
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]), Path(sys.argv[2])))
