"""The firmware's serial console: simulated on this machine (``--sim``) or on a board (``--port``).

    python -m pipeline.console MODEL_DIR --sim
    python -m pipeline.console --port /dev/ttyUSB0 [--baud 115200]

``--sim`` runs the firmware's own C console, step loop and tokenizer on this machine for the model
in MODEL_DIR and prints what the board would print; ``--port`` talks to a board running the
firmware (the board holds its own model: no MODEL_DIR). One review per line (English: the model
knows no other language); ``help`` lists the commands, ``quit``/``exit`` or Ctrl-D end the session,
Ctrl-C drops the line being typed. Details: :mod:`pipeline.device.console`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pipeline.device.console import run_port
from pipeline.device.native import run_sim


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pipeline.console", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model_dir", type=Path, nargs="?", metavar="MODEL_DIR",
                    help="--sim only: int8 release folder (models/release, runs/*/int8)")
    mode = ap.add_mutually_exclusive_group(required=True)
    mode.add_argument("--sim", action="store_true", help="simulate the board on this machine")
    mode.add_argument("--port", help="serial port of a board running the firmware")
    ap.add_argument("--baud", type=int, default=115200, help="--port only: baud rate (default 115200)")
    args = ap.parse_args(argv)
    if args.sim and args.model_dir is None:
        ap.error("--sim needs MODEL_DIR, the int8 release folder to simulate (e.g. models/release)")
    if args.port and args.model_dir is not None:
        print(f"note: MODEL_DIR {args.model_dir} is not used with --port: the board runs the model "
              "flashed with its firmware", file=sys.stderr)
    try:
        if args.sim:
            return run_sim(args.model_dir, sys.stdin.buffer, sys.stdout.buffer, stderr=sys.stderr.buffer)
        return run_port(args.port, args.baud, sys.stdin.buffer, sys.stdout.buffer)
    except KeyboardInterrupt:
        return 130
    except (OSError, ValueError, RuntimeError, TimeoutError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
