"""Train the teacher or the labels-only student with a ``tf.distribute`` strategy.

    python -m pipeline.distribute --strategy default|mirrored|multiworker \\
        (--data runs/smoke/data --tokenizer runs/smoke/student_tokenizer | --shards STREAM_DIR) \\
        --out DIR [--preset smoke|full] [--model student|teacher] [--max-steps N] \\
        [--weights-out FILE.npz]

Strategies, batch sizes and what each worker does: :mod:`pipeline.nn.distribute`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

import pipeline
from pipeline.config import STRATEGIES, override, preset
from pipeline.nn.distribute import strategy_from_name, train_distributed, worker_info


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pipeline.distribute", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--strategy", choices=STRATEGIES, default="default")
    ap.add_argument("--data", type=Path, help="folder with {train,val}.jsonl (with --tokenizer)")
    ap.add_argument("--tokenizer", type=Path, help="tokenizer folder (with --data)")
    ap.add_argument("--shards", type=Path,
                    help="instead of --data/--tokenizer: a python -m pipeline.stream folder; each "
                         "worker reads its own TFRecord files, nothing is loaded into memory")
    ap.add_argument("--out", type=Path, help="model directory to write (chief only)")
    ap.add_argument("--work", type=Path, help="folder for the best-epoch weights (chief)")
    ap.add_argument("--preset", choices=("smoke", "full"), default="full")
    ap.add_argument("--model", choices=("student", "teacher"), default="student")
    ap.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE")
    ap.add_argument("--max-steps", type=int, help="stop after N global steps (smoke tests)")
    ap.add_argument("--weights-out", type=Path,
                    help="every worker writes its final weights here (.npz) to compare them")
    ap.add_argument("--init-weights", type=Path, help="start from these weights (.npz; tests)")
    ap.add_argument("--sgd", type=float, metavar="LR",
                    help="plain SGD with this learning rate instead of Adam (tests)")
    args = ap.parse_args(argv)
    if (args.shards is None) == (args.data is None or args.tokenizer is None):
        ap.error("give either --shards, or --data and --tokenizer")
    pipeline.setup_logging()
    strategy = strategy_from_name(args.strategy)  # first: configures the TF runtime
    cfg = override(preset(args.preset), args.set)
    model_cfg, train_cfg = ((cfg.student, cfg.student_train) if args.model == "student"
                            else (cfg.teacher, cfg.train))
    init = None
    if args.init_weights:
        with np.load(args.init_weights) as z:
            init = [z[f"arr_{i}"] for i in range(len(z.files))]
    make_optimizer = None
    if args.sgd is not None:
        import tf_keras as keras

        def make_optimizer():
            return keras.optimizers.SGD(args.sgd)
    try:
        model, state = train_distributed(args.data, args.tokenizer, args.out, args.model, model_cfg,
                                         train_cfg, strategy, args.work, args.max_steps,
                                         make_optimizer, init, args.shards)
    except (ValueError, FileNotFoundError) as e:  # a wrong folder: one line, not a traceback
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.weights_out:
        args.weights_out.parent.mkdir(parents=True, exist_ok=True)
        np.savez(args.weights_out, *model.get_weights())
    index, workers = worker_info(strategy)
    print(json.dumps({"worker": index, "workers": workers, "replicas": state["replicas"],
                      "global_batch": state["global_batch"], "steps": state["steps"],
                      "best_epoch": state["best_epoch"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

