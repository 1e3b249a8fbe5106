"""Measure the firmware of an int8 release on riscv32 (the ESP32-C3's instruction set) under QEMU.

    python -m pipeline.bench MODEL_DIR [--kernels esp_nn reference] [--tokens 128] [--out FILE.json]
                             [--before EARLIER.json]
    python -m pipeline.bench MODEL_DIR --arena [--target riscv32|native]
    python -m pipeline.bench MODEL_DIR --build [--target native|riscv32]
    python -m pipeline.bench MODEL_DIR --agreement --data RUN/data [--heldout DIR] [--out FILE.json]

The default prints (and with ``--out`` writes) instructions per token for the tokenizer, the step
loop and the head, per 128-token review and per function / TFLM operator of the step loop, the
32-bit arena minimum of each model (bisection) and the code size split into TFLM + esp-nn, firmware
code, model arrays and tokenizer tables. ``--arena`` only bisects the arenas, ``--build`` only
builds (the executables land in ``build/firmware/``). ``--agreement`` runs every review of the test
split (``--data``: a run's ``data`` folder) and the ``--heldout`` sets through the native and the
riscv32 firmware and ``--runtime tflm`` and counts the answers that differ (exit status 1 if
any). Needs cmake, a C/C++ compiler, ``ziglang`` (the test extra) and ``qemu-user`` (apt);
see :mod:`pipeline.device.native`.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from pipeline.device.bench import arena_minimum, bench
from pipeline.device.native import KERNELS, TARGETS, NativeBuildError, build


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pipeline.bench", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model_dir", type=Path, help="int8 release folder (models/release, runs/*/int8)")
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--arena", action="store_true", help="only bisect the arena minimums")
    mode.add_argument("--build", action="store_true", help="only build the firmware")
    mode.add_argument("--agreement", action="store_true",
                      help="compare the native and riscv32 firmware with --runtime tflm on every "
                           "review of --data's test split and the --heldout sets")
    ap.add_argument("--data", type=Path, help="for --agreement: a run's data folder (test.jsonl)")
    ap.add_argument("--heldout", type=Path, help="for --agreement: the held-out sets' folder")
    ap.add_argument("--target", choices=TARGETS, default="riscv32",
                    help="for --arena / --build (the benchmark itself runs on riscv32)")
    ap.add_argument("--kernels", choices=KERNELS, nargs="+", default=list(KERNELS),
                    help="TFLM kernel flavours to measure")
    ap.add_argument("--tokens", type=int, default=128, help="tokens of the benchmark review")
    ap.add_argument("--no-functions", action="store_true",
                    help="skip the per-function / per-operator split (faster)")
    ap.add_argument("--out", type=Path,
                    help="also write the figures to this JSON file, and their markdown beside it (.md)")
    ap.add_argument("--before", type=Path,
                    help="an earlier --out JSON: the markdown gets a before / after table (a copy "
                         "is kept beside --out as before.json, for the run's report)")
    ap.add_argument("--tflm-dir", type=Path, help="esp-tflite-micro sources (default: vendored)")
    ap.add_argument("--esp-nn-dir", type=Path, help="esp-nn sources (default: vendored)")
    args = ap.parse_args(argv)
    kw = {"tflm_dir": args.tflm_dir, "esp_nn_dir": args.esp_nn_dir}
    try:
        t0 = time.perf_counter()
        if args.build:
            b = build(args.model_dir, args.target, verbose=True, **kw)
            res = {"dir": str(b.dir), "exe": {k: str(v) for k, v in b.exe.items()}}
        elif args.agreement:
            from pipeline.data import read_jsonl
            from pipeline.device.bench import agreement
            from pipeline.report.metrics import load_heldout

            if args.data is None or not (args.data / "test.jsonl").is_file():
                ap.error("--agreement needs --data, a run's data folder holding test.jsonl")
            sets = {"test": read_jsonl(args.data / "test.jsonl"),
                    **{f"heldout/{k}": v for k, v in load_heldout(args.heldout).items()}}
            res = agreement(args.model_dir, sets)
        elif args.arena:
            res = arena_minimum(args.model_dir, args.target, args.kernels, **kw)
        else:
            res = bench(args.model_dir, args.kernels, args.tokens, not args.no_functions, **kw)
        res["seconds"] = round(time.perf_counter() - t0, 1)
    except (NativeBuildError, RuntimeError, OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    command = " ".join(["python -m pipeline.bench", *(argv if argv is not None else sys.argv[1:])])
    res["command"] = command
    text = json.dumps(res, indent=1)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
        if "kernels" in res:
            from pipeline.report.device import bench_markdown

            md = bench_markdown(res, command)
            if args.before:
                from pipeline.report.device import compare_markdown

                before = json.loads(args.before.read_text())
                md += [f"### Before / after (before: `{args.before}`)", "",
                       *compare_markdown(before, res, next(iter(res["kernels"])))]
                # kept beside the figures: the run's report shows the same before / after table
                before["label"] = f"`{args.before}`"
                args.out.with_name("before.json").write_text(json.dumps(before, indent=1) + "\n")
            args.out.with_suffix(".md").write_text("\n".join(md) + "\n")
    print(text)
    return 1 if res.get("identical") is False else 0


if __name__ == "__main__":
    sys.exit(main())
