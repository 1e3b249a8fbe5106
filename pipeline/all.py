"""Run the whole pipeline, stage by stage; finished stages are reused, killed ones resume.

    python -m pipeline.all --data PATH [--heldout DIR] [--out DIR] [--preset smoke|full]
                           [--set section.field=value ...] [--publish DIR]

Stages: data -> tokenizer -> teacher -> teacher_eval; the TF-IDF peer; the device student
(student_tokenizer -> student [labels only] -> student_kd [+ knowledge distillation] -> int8 ->
int8_eval in TFLM, with an evaluation of each student); then
``report.md`` and plots in the output folder (default ``runs/PRESET``).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from pipeline import data, distill, evaluate, peers, quantize, stages, tokenizer, train
from pipeline.config import Config, override, preset, to_dict

log = logging.getLogger("pipeline")


def run(cfg: Config, data_path: Path, out: Path, heldout: Path | None = None) -> Path:
    """Run every stage into ``out``; returns the report path."""
    out.mkdir(parents=True, exist_ok=True)
    held = stages.files_fingerprint(heldout) if heldout else None

    def evaluation(name: str, model_dir: Path, key: str, runtime: str = "keras",
                   reference: tuple[Path, str] | None = None) -> None:
        """An evaluation stage: test, validation and held-out sets with one runtime."""
        inputs = {"model": key, "data": k_data, "heldout": held}
        if reference:
            inputs["reference"] = reference[1]
        stages.run_stage(out, name, inputs, lambda o, w: evaluate.evaluate_model_dir(
            model_dir, data_dir, o, heldout, runtime, reference[0] if reference else None))

    data_dir, k_data = stages.run_stage(
        out, "data", {"cfg": cfg.data, "files": stages.files_fingerprint(data_path)},
        lambda o, w: data.build_dataset(data_path, o, cfg.data),
    )
    tok_dir, k_tok = stages.run_stage(
        out, "tokenizer", {"cfg": cfg.tokenizer, "data": k_data},
        lambda o, w: tokenizer.build_tokenizer(data_dir, o, cfg.tokenizer),
    )
    teacher_dir, k_teacher = stages.run_stage(
        out, "teacher", {"model": cfg.teacher, "train": cfg.train, "tok": k_tok, "data": k_data},
        lambda o, w: train.train_teacher(data_dir, tok_dir, o, w, cfg.teacher, cfg.train),
    )
    evaluation("teacher_eval", teacher_dir, k_teacher)
    stages.run_stage(
        out, "peer_tfidf", {"cfg": cfg.peer, "data": k_data, "heldout": held},
        lambda o, w: peers.run_tfidf_peer(data_dir, o, cfg.peer, heldout),
    )
    stok_dir, k_stok = stages.run_stage(
        out, "student_tokenizer", {"cfg": cfg.student_tokenizer, "data": k_data},
        lambda o, w: tokenizer.build_tokenizer(data_dir, o, cfg.student_tokenizer),
    )
    student_dir, k_student = stages.run_stage(
        out, "student",
        {"model": cfg.student, "train": cfg.student_train, "tok": k_stok, "data": k_data},
        lambda o, w: train.train_student(data_dir, stok_dir, o, w, cfg.student, cfg.student_train),
    )
    evaluation("student_eval", student_dir, k_student)
    kd_dir, k_kd = stages.run_stage(
        out, "student_kd",
        {"model": cfg.student, "train": cfg.student_train, "distill": cfg.distill, "tok": k_stok,
         "data": k_data, "teacher": k_teacher},
        lambda o, w: distill.distill_student(data_dir, teacher_dir, stok_dir, o, w, cfg.student,
                                             cfg.student_train, cfg.distill),
    )
    evaluation("student_kd_eval", kd_dir, k_kd)
    int8_dir, k_int8 = stages.run_stage(
        out, "int8", {"student": k_kd, "data": k_data, "n": cfg.calibration_reviews},
        lambda o, w: quantize.quantize_student(kd_dir, data_dir, o, cfg.calibration_reviews),
    )
    evaluation("int8_eval", int8_dir, k_int8, "tflm", reference=(kd_dir, k_kd))
    (out / "config.json").write_text(json.dumps(to_dict(cfg), indent=2, sort_keys=True))
    report = evaluate.write_report(out, command=" ".join(["python -m pipeline.all", *sys.argv[1:]]))
    log.info("report: %s", report)
    return report


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pipeline.all", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, required=True,
                    help="review file or folder (formats: see README)")
    ap.add_argument("--heldout", type=Path, help="folder of extra labelled test sets")
    ap.add_argument("--out", type=Path, help="output folder (default runs/PRESET)")
    ap.add_argument("--preset", choices=("smoke", "full"), default="full")
    ap.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                    help="override one config value, e.g. --set teacher.units=64")
    ap.add_argument("--publish", type=Path, metavar="DIR",
                    help="also copy report.md, metrics, stats and plots (no data, no models) to DIR")
    ap.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO,
                        format="%(asctime)s %(name)s %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("absl").setLevel(logging.WARNING)
    try:
        cfg = override(preset(args.preset), args.set)
    except ValueError as e:
        ap.error(str(e))
    for p in filter(None, (args.data, args.heldout)):
        if not p.exists():
            ap.error(f"{p} does not exist")
    try:
        out = args.out or Path("runs") / cfg.preset
        run(cfg, args.data, out, args.heldout)
    except data.DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.publish:
        files = evaluate.publish_report(out, args.publish)
        log.info("published %d files to %s", len(files), args.publish)
    return 0


if __name__ == "__main__":
    sys.exit(main())
