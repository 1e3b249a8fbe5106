"""Write the review pool N times as one JSON-lines file, copy k > 0 of each review marked " [copy k]".

    python reports/scale/repeat_pool.py ../shared/data/amazon 8 /tmp/pool8.jsonl

The marked copies are new reviews to the pipeline (no copy is a duplicate of another), so the file
measures time and memory at N times the pool; its accuracies mean nothing (copies of one review land
in different splits). The same marking as ``python -m pipeline.stream --repeat N``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from pipeline.data import iter_reviews


def main(src: Path, n: int, out: Path) -> int:
    files = sorted(p for p in Path(src).iterdir() if p.is_file() and not p.name.startswith(("README", ".")))
    rows = 0
    with open(out, "w", encoding="utf-8") as f:
        for k in range(n):
            for path in files:
                for s, y in iter_reviews(path, "drop", []):
                    text = s if k == 0 else f"{s} [copy {k}]"
                    f.write(json.dumps({"text": text, "label": y}, ensure_ascii=False) + "\n")
                    rows += 1
    print(f"{out}: {rows:,} reviews ({n} x the pool)")
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3])))
