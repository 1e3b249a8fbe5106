"""Export trained artifacts as C sources for the ESP32 firmware.

    python -m pipeline.export tokenizer TOKENIZER_DIR [--out firmware/src]
    python -m pipeline.export firmware MODEL_DIR [--out firmware]

``tokenizer`` writes ``tokenizer_tables.c`` (layout in ``firmware/src/tokenizer_tables.h``) for the
C tokenizer in ``firmware/src/tokenizer.c`` (:mod:`pipeline.text.ctables`). ``firmware`` writes
everything model-specific of the PlatformIO project rooted at ``--out`` into ``OUT/src`` from a
full-int8 release folder: model arrays, ``model_config.h``, the op resolver and the tokenizer tables
(:mod:`pipeline.device.firmware`). Every generated file says how it was made. No TensorFlow.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pipeline.device.firmware import FIRMWARE_FILES, export_firmware
from pipeline.text.ctables import TABLES_C, ExportError, write_tokenizer_tables


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pipeline.export", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="what", required=True)
    t = sub.add_parser("tokenizer", help="write tokenizer_tables.c")
    t.add_argument("tokenizer_dir", type=Path, help="folder with tokenizer.model + tokenizer.json")
    t.add_argument("--out", type=Path, default=Path("firmware/src"), help="output folder")
    f = sub.add_parser("firmware", help="write the model arrays, constants, op resolver and tables")
    f.add_argument("model_dir", type=Path, help="int8 release folder (step/head .tflite, quant.json)")
    f.add_argument("--out", type=Path, default=Path("firmware"), help="PlatformIO project root")
    args = ap.parse_args(argv)
    try:
        if args.what == "tokenizer":
            sizes = write_tokenizer_tables(args.tokenizer_dir, args.out)
            written = str(args.out / TABLES_C)
        else:
            sizes = export_firmware(args.model_dir, args.out)
            written = ", ".join(str(args.out / "src" / n) for n in FIRMWARE_FILES)
    except (OSError, ExportError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"wrote {written}: " + ", ".join(f"{k} {v} B" for k, v in sizes.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
