"""Reviews -> sharded, tokenized TFRecords in bounded memory (the streaming path).

    python -m pipeline.stream --data PATH --out DIR [--preset smoke|full] [--shards N]
                              [--repeat N] [--peer] [--set section.field=value ...]

Layout of DIR and how it is made: :mod:`pipeline.data.stream`.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import pipeline
from pipeline import data
from pipeline.config import StreamConfig, override, preset
from pipeline.data.stream import build_stream


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pipeline.stream", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, required=True, action="append",
                    help="review file or folder (repeatable)")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--preset", choices=("smoke", "full"), default="full",
                    help="which tokenizer settings (vocabulary, sequence length)")
    ap.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                    help="e.g. --set tokenizer.vocab_size=8000 --set data.three_star=negative")
    ap.add_argument("--shards", type=int, default=StreamConfig.shards)
    ap.add_argument("--spill-buckets", type=int, default=StreamConfig.spill_buckets)
    ap.add_argument("--tokenizer-sample", type=int, default=StreamConfig.tokenizer_sample)
    ap.add_argument("--repeat", type=int, default=1,
                    help="read the input N times, marking copy k > 0 (memory measurements)")
    ap.add_argument("--peer", action="store_true",
                    help="then fit the peers on the shards, streamed: hashed TF-IDF + LR "
                         "(OUT/peer_tfidf) and fastText (OUT/peer_fasttext)")
    args = ap.parse_args(argv)
    pipeline.setup_logging()
    cfg = override(preset(args.preset), args.set)
    if cfg.data.max_reviews is not None or cfg.data.balance:
        ap.error("data.max_reviews and data.balance are done by python -m pipeline.all's data stage, "
                 "not here")
    scfg = replace(StreamConfig(), three_star=cfg.data.three_star, shards=args.shards,
                   spill_buckets=args.spill_buckets, tokenizer_sample=args.tokenizer_sample,
                   repeat=args.repeat, seed=cfg.data.seed)
    try:
        stats = build_stream(args.data, args.out, scfg, cfg.tokenizer)
    except data.DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    summary = {"reviews_read": stats["totals"]["used"], "unique": stats["totals"]["unique"],
               "splits": {s: stats["splits"][s]["n"] for s in data.SPLITS},
               "seconds": stats["seconds"], "peak_rss_mb": stats["peak_rss_mb"]}
    if args.peer:
        from pipeline.data.stream import peak_rss_mb
        from pipeline.report.fasttext_peer import run_fasttext_stream
        from pipeline.report.hashed_peer import run_hashed_peer

        for name, fit in (("tfidf", lambda o: run_hashed_peer(args.out, o, cfg.hashed_peer)),
                          ("fasttext", lambda o: run_fasttext_stream(args.out, o, cfg.fasttext))):
            t0 = time.monotonic()
            summary[f"{name}_accuracy"] = fit(args.out / f"peer_{name}")
            summary[f"{name}_seconds"] = round(time.monotonic() - t0, 1)
        summary["peak_rss_mb"] = round(peak_rss_mb(), 1)
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
