"""Shared test helpers: a small slice of the real reviews in ../shared/data (skips when absent)
and tiny made-up reviews."""

from __future__ import annotations

import gzip
import random
from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def _head_gz(src: Path, dst: Path, lines: int) -> None:
    with gzip.open(src, "rt", encoding="utf-8") as f, gzip.open(dst, "wt", encoding="utf-8") as g:
        for i, line in enumerate(f):
            if i >= lines:
                break
            g.write(line)


@pytest.fixture(scope="session")
def real_slice(tmp_path_factory) -> dict[str, Path]:
    """First rows of each real training file and of two held-out sets, copied to a temp folder."""
    if not (SHARED / "amazon").is_dir():
        pytest.skip(f"real review data not found at {SHARED} (see README: Data)")
    root = tmp_path_factory.mktemp("real")
    (root / "amazon").mkdir()
    (root / "heldout").mkdir()
    for src in sorted((SHARED / "amazon").glob("*.gz")):
        _head_gz(src, root / "amazon" / src.name, 2500)
    for name in ("uci_amazon_cells.jsonl.gz", "li2018_amazon_sent.jsonl.gz"):
        _head_gz(SHARED / "heldout" / name, root / "heldout" / name, 400)
    return {"amazon": root / "amazon", "heldout": root / "heldout"}


POLAR_WORDS = {1: ["great", "love", "works", "perfect"], 0: ["bad", "broken", "awful", "returned"]}
FILLER_WORDS = ["the", "cable", "phone", "was", "it", "and", "this", "case", "very", "my"]


def polar_rows(n: int, seed: int, min_filler: int = 2,
               max_filler: int = 10) -> list[tuple[str, int]]:
    """Tiny labelled reviews: filler words plus two words of the label's polarity, shuffled."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        y = i % 2
        words = rng.choices(FILLER_WORDS, k=rng.randint(min_filler, max_filler))
        words += rng.choices(POLAR_WORDS[y], k=2)
        rng.shuffle(words)
        out.append((" ".join(words), y))
    return out
