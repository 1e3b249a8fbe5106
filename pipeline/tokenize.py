"""Print token ids, one line of space-separated ids per review.

    python -m pipeline.tokenize MODEL_DIR INPUT [--impl python|c] [--max-len N]

MODEL_DIR holds ``tokenizer.model`` and ``tokenizer.json``; INPUT is anything ``pipeline.predict``
reads (review files or folders, or JSON lines with ``text``). Ids are untruncated unless
``--max-len`` is given (then the first N, as the models see them with truncate="head").

``--impl c`` runs the firmware's C tokenizer (built with gcc on first use), by default sized to
read every review whole, so that both implementations print the same ids. ``--max-input-bytes
2048`` gives the device's limit (TOK_MAX_INPUT_BYTES): longer reviews are cut at a character
boundary first, as on the device, and a note on stderr says how many were.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Iterable
from pathlib import Path

from pipeline import data
from pipeline.data.inputs import read_input
from pipeline.text.tokenizer import Tokenizer


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pipeline.tokenize", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model_dir", type=Path, help="folder with tokenizer.model + tokenizer.json")
    ap.add_argument("input", type=Path,
                    help="review file or folder: anything pipeline.predict reads")
    ap.add_argument("--impl", choices=("python", "c"), default="python",
                    help="python: SentencePiece; c: the firmware's C tokenizer (default: python)")
    ap.add_argument("--max-len", type=int, default=None, metavar="N", help="keep the first N ids")
    ap.add_argument("--max-input-bytes", type=int, default=None, metavar="B",
                    help="--impl c: cut reviews longer than B bytes (device: 2048; default: none)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    if args.max_len is not None and args.max_len < 0:
        ap.error("--max-len must be >= 0")
    if args.max_input_bytes is not None and args.max_input_bytes < 1:
        ap.error("--max-input-bytes must be >= 1")
    try:
        rows = read_input(args.input)
        cut = 0
        if args.impl == "python":
            tok = Tokenizer.load(args.model_dir)

            def encode(text: str) -> list[int]:
                return tok.encode(_utf8(text).decode("utf-8"))[: args.max_len]
        else:
            from pipeline.text.ctok import DEVICE_MAX_INPUT_BYTES, CTokenizer

            size = args.max_input_bytes
            if size is None:  # whole reviews: a power of two keeps the number of builds small
                longest = max(len(_utf8(r.text)) for r in rows)
                size = max(DEVICE_MAX_INPUT_BYTES, 1 << (longest - 1).bit_length())
            ctok = CTokenizer(args.model_dir, size)

            def encode(text: str) -> list[int]:
                nonlocal cut
                raw = _utf8(text)
                r = ctok.encode_info(raw, args.max_len)
                cut += r.input_bytes_used < len(raw)
                return r.ids
        _print_ids((r.text for r in rows), encode)
    except (OSError, ValueError, RuntimeError, data.DataError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    if cut:
        print(f"note: {cut} review(s) longer than {ctok.max_input_bytes} bytes were cut first, as on "
              "the device (see --max-input-bytes)", file=sys.stderr)
    return 0


def _utf8(text: str) -> bytes:
    """UTF-8 of ``text``; lone surrogates (JSON ``\\ud800`` escapes) become ``?`` as in data."""
    return text.encode("utf-8", "replace")


def _print_ids(texts: Iterable[str], encode: Callable[[str], list[int]]) -> None:
    out = sys.stdout
    for text in texts:
        out.write(" ".join(map(str, encode(text))) + "\n")
    out.flush()


if __name__ == "__main__":
    sys.exit(main())
