"""Words per text: a run's distillation texts by crop round, and labelled files (held-out sets).

    python reports/sentences/lengths.py RUN [FILE ...]

Reads ``RUN/teacher_targets/texts.jsonl`` (the training reviews, then ``distill.augment`` rounds of
crops, each as long as the training split) and prints the 10th, 50th and 90th percentile of
white-space words per round, then per FILE.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from pipeline.compress.distill import TARGET_TEXTS, iter_target_rows
from pipeline.data.inputs import read_input


def show(name: str, words: list[int]) -> None:
    p10, p50, p90 = np.percentile(words, [10, 50, 90])
    print(json.dumps({"texts": name, "n": len(words), "p10": p10, "p50": p50, "p90": p90}))


def main(run: Path, files: list[Path]) -> int:
    cfg = json.loads((run / "config.json").read_text())["distill"]
    words = [len(t.split()) for t, _ in iter_target_rows(run / "teacher_targets")]
    n = len(words) // (1 + cfg["augment"])
    if n * (1 + cfg["augment"]) != len(words):
        sys.exit(f"{run / 'teacher_targets' / TARGET_TEXTS}: {len(words)} rows are not "
                 f"{1 + cfg['augment']} rounds of equal length")
    sentence_rounds = min(cfg.get("sentence_crops", 0), cfg["augment"])
    for k in range(1 + cfg["augment"]):
        kind = ("reviews" if k == 0 else
                "sentence crops" if k > cfg["augment"] - sentence_rounds else "word crops")
        show(f"round {k}: {kind}", words[k * n : (k + 1) * n])
    for path in files:
        show(path.name, [len(r.text.split()) for r in read_input(path)])
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]), [Path(p) for p in sys.argv[2:]]))
