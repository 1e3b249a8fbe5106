"""Check that ``teacher_targets`` with ``records`` writes the shards the stages wrote before.

    python reports/scale/same_records.py RUN OUT

RUN: an in-memory run of a preset without ``--set`` (``python -m pipeline.all --preset smoke --data
... --out RUN``: its ``teacher_targets/texts.jsonl``); OUT: a new folder. Writes the teacher targets
again with ``records=True`` (the same teacher, peer and student tokenizer) and, as the KD, AFD and
ticket stages did before they read those shards, ``soft_labelled_ids`` over ``texts.jsonl``; then
compares the two folders file by file, byte for byte.
"""

from __future__ import annotations

import filecmp
import json
import sys
from pathlib import Path


def main(run: Path, out: Path) -> int:
    from pipeline.compress import distill
    from pipeline.config import preset
    from pipeline.nn.train import soft_labelled_ids
    from pipeline.report import peers
    from pipeline.text.tokenizer import Tokenizer

    cfg = preset(json.loads((run / "config.json").read_text())["preset"])
    (out / "new").mkdir(parents=True, exist_ok=True)
    distill.teacher_targets(run / "data", run / "teacher", run / "student_tokenizer", out / "new",
                            out / "work", cfg.distill, cfg.student_train.seed,
                            peers.chosen(run / "peer_tfidf", cfg.peer), records=True)
    tok = Tokenizer.load(run / "student_tokenizer")
    soft_labelled_ids(tok, distill.iter_target_rows(run / "teacher_targets"), out / "old", True)
    new = out / "new" / distill.TARGET_RECORDS
    names = sorted(p.name for p in (out / "old").iterdir())
    same, differ, errors = filecmp.cmpfiles(out / "old", new, names, shallow=False)
    extra = sorted({p.name for p in new.iterdir()} - set(names))
    print(f"{len(same)} files the same: {same}; differ: {differ}; unreadable: {errors}; only new: {extra}")
    return 0 if same == names and not extra else 1


if __name__ == "__main__":  # the guard matters: teacher_targets spawns a worker
    sys.exit(main(Path(sys.argv[1]), Path(sys.argv[2])))
