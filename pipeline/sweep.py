"""Choose a model size: train and compress a grid of students, plot accuracy against flash.

    python -m pipeline.sweep --data-dir runs/full/data --reference runs/full \\
        --vocab 2000,4000,8000 --embed 16,32 --units 16,32 --publish reports/sweep

What each point runs and what the table and plot show: :mod:`pipeline.report.sweep`.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import pipeline
from pipeline.config import override, preset
from pipeline.report.sweep import PUBLISHED, Grid, log, run_sweep


def _ints(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from e
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pipeline.sweep", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--data", type=Path, help="review file or folder (runs the data stage)")
    src.add_argument("--data-dir", type=Path,
                     help="an existing split folder with {train,val,test}.jsonl (e.g. runs/full/data)")
    ap.add_argument("--out", type=Path, default=Path("runs/sweep"))
    ap.add_argument("--preset", choices=("smoke", "full"), default="full")
    ap.add_argument("--vocab", type=_ints, default=Grid.vocab)
    ap.add_argument("--embed", type=_ints, default=Grid.embed_dim)
    ap.add_argument("--units", type=_ints, default=Grid.units)
    ap.add_argument("--reference", type=Path,
                    help="a finished run (runs/full) or its published report: peers + release point")
    ap.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE")
    ap.add_argument("--publish", type=Path, metavar="DIR",
                    help="copy sweep.json, sweep.md and sweep.png to DIR (e.g. reports/sweep)")
    args = ap.parse_args(argv)
    pipeline.setup_logging()
    try:
        cfg = override(preset(args.preset), args.set)
    except ValueError as e:
        ap.error(str(e))
    for p in filter(None, (args.data, args.data_dir, args.reference)):
        if not p.exists():
            ap.error(f"{p} does not exist")
    command = " ".join(["python -m pipeline.sweep", *(argv if argv is not None else sys.argv[1:])])
    run_sweep(args.out, cfg, Grid(args.vocab, args.embed, args.units), args.data, args.data_dir,
              args.reference, command)
    if args.publish:
        args.publish.mkdir(parents=True, exist_ok=True)
        for name in PUBLISHED:
            shutil.copyfile(args.out / name, args.publish / name)
        log.info("published %s to %s", ", ".join(PUBLISHED), args.publish)
    print((args.out / "sweep.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
