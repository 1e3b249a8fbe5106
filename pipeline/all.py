"""Run the whole pipeline, stage by stage; finished stages are reused, killed ones resume.

    python -m pipeline.all --data PATH [--heldout DIR] [--out DIR] [--preset smoke|full]
                           [--set section.field=value ...] [--publish DIR] [--release DIR]
                           [--firmware DIR] [--until STAGE]

Stages: data -> tokenizer -> teacher -> teacher_eval (-> teacher_2, ...: distill.teachers); the
TF-IDF and fastText peers; the device student: student_tokenizer -> student [labels only] ->
teacher_targets [teacher logits and feature maps on the reviews and their crops] -> student_kd /
student_afd [KD, KD + AFD] -> student_pruned [Lottery Ticket] -> qat -> int8 -> int8_eval [TFLM] ->
firmware_export, with an evaluation of each model; then ``report.md`` and plots in the output
folder (default ``runs/PRESET``). The choices between models along the way are made on the
validation split.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import sys
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np

from pipeline import INTERRUPTED, data, setup_logging, stages
from pipeline.compress import distill, prune, qat
from pipeline.config import Config, TrainConfig, override, preset, to_dict
from pipeline.device import bench, convert, firmware, release
from pipeline.nn import stage as nn_stage
from pipeline.report import fasttext_peer, hashed_peer, metrics, peers, report
from pipeline.report.report import RUN_STAGES
from pipeline.text import tokenizer

log = logging.getLogger("pipeline")


class _Until(Exception):
    """Raised after the stage ``--until`` names: the run stops there."""


def run(cfg: Config, data_path: Path, out: Path, heldout: Path | None = None,
        strategy=None, until: str | None = None) -> Path | None:
    """Run every stage into ``out``; returns the report path (None when stopped by ``until``).

    ``strategy``: the ``tf.distribute`` strategy of ``cfg.distribute`` (made in :func:`main`
    before any TensorFlow op) for the teacher and labels-only student training stages.
    ``until``: stop once that stage is done (or found up to date).
    """
    try:
        return _run(cfg, data_path, out, heldout, strategy, until)
    except _Until:
        log.info("stopped after stage %s (--until)", until)
        return None


def _run(cfg: Config, data_path: Path, out: Path, heldout: Path | None, strategy,
         until: str | None) -> Path:
    def run_stage(name: str, inputs, fn):
        result = stages.run_stage(out, name, inputs, fn)
        if name == until:
            raise _Until
        return result

    out.mkdir(parents=True, exist_ok=True)
    stages.clean_stray(out)
    held = stages.files_fingerprint(heldout) if heldout else None
    # only a non-default strategy enters the training stages' keys: finished runs stay valid
    dist = {} if cfg.distribute.strategy == "default" else {"strategy": cfg.distribute.strategy}
    # data.stream: the training stages read their ids from TFRecord shards (tf.data); in their keys
    # only when on, so in-memory runs keep theirs
    records = cfg.data.stream
    rec = {"records": True} if records else {}

    def evaluation(name: str, model_dir: Path, key: str, runtime: str = "keras",
                   reference: tuple[Path, str] | None = None) -> None:
        """An evaluation stage: test, validation and held-out sets with one runtime."""
        inputs = {"model": key, "data": k_data, "heldout": held}
        if reference:
            inputs["reference"] = reference[1]
        run_stage(name, inputs, lambda o, w: metrics.evaluate_model_dir(
            model_dir, data_dir, o, heldout, runtime, reference[0] if reference else None))

    data_dir, k_data = run_stage(
        "data", {"cfg": cfg.data.split_key(), "files": stages.files_fingerprint(data_path)},
        lambda o, w: data.build_dataset(data_path, o, cfg.data, work_dir=w / "spill"),
    )
    tok_dir, k_tok = run_stage(
        "tokenizer", {"cfg": cfg.tokenizer.key(), "data": k_data},
        lambda o, w: tokenizer.build_tokenizer(data_dir, o, cfg.tokenizer),
    )

    def teacher_stage(stage: str, train: TrainConfig) -> tuple[Path, str]:
        return run_stage(
            stage, {"model": cfg.teacher, "train": train, "tok": k_tok, "data": k_data, **dist, **rec},
            lambda o, w: nn_stage.train_teacher(data_dir, tok_dir, o, w, cfg.teacher, train, strategy,
                                                records),
        )

    teacher_dir, k_teacher = teacher_stage("teacher", cfg.train)
    evaluation("teacher_eval", teacher_dir, k_teacher)
    more_teachers = [  # distill.teachers: other seeds, for the teacher signal
        teacher_stage(f"teacher_{k + 1}", replace(cfg.train, seed=cfg.train.seed + k))
        for k in range(1, cfg.distill.teachers)]
    if cfg.data.stream:  # the hashed, out-of-core peer: nothing it holds grows with the reviews
        peer_key, peer_fn = {"cfg": cfg.hashed_peer, "hashed": True}, lambda o, w: (
            hashed_peer.run_split_peer(data_dir, o, w, cfg.hashed_peer, heldout))
    else:
        peer_key, peer_fn = {"cfg": cfg.peer}, lambda o, w: (
            peers.run_tfidf_peer(data_dir, o, cfg.peer, heldout))
    tfidf_dir, k_tfidf = run_stage("peer_tfidf", {**peer_key, "data": k_data, "heldout": held}, peer_fn)
    run_stage(
        "peer_fasttext", {"cfg": cfg.fasttext, "data": k_data, "heldout": held},
        lambda o, w: fasttext_peer.run_fasttext_peer(data_dir, o, cfg.fasttext, heldout),
    )
    stok_dir, k_stok = run_stage(
        "student_tokenizer", {"cfg": cfg.student_tokenizer.key(), "data": k_data},
        lambda o, w: tokenizer.build_tokenizer(data_dir, o, cfg.student_tokenizer),
    )
    student_dir, k_student = run_stage(
        "student",
        {"model": cfg.student, "train": cfg.student_train, "tok": k_stok, "data": k_data, **dist, **rec},
        lambda o, w: nn_stage.train_student(data_dir, stok_dir, o, w, cfg.student, cfg.student_train,
                                            strategy, records),
    )
    evaluation("student_eval", student_dir, k_student)
    d = cfg.distill
    # d.unlabeled and d.teachers reach the later stages through the targets' key; left out of
    # theirs, so runs from before the fields keep their keys
    d_key = {k: v for k, v in asdict(d).items() if k not in ("unlabeled", "teachers")}
    unlabeled = cfg.distill_unlabeled()

    def targets(o: Path, w: Path) -> dict:
        return distill.teacher_targets(
            data_dir, teacher_dir, stok_dir, o, w, d, cfg.student_train.seed,
            cfg.hashed_peer if cfg.data.stream else peers.chosen(tfidf_dir, cfg.peer), records,
            distill.unlabeled_texts(data_path, unlabeled, w / "unlabeled.jsonl"),
            [t for t, _ in more_teachers])

    targets_dir, k_targets = run_stage(
        "teacher_targets",
        {"augment": d.augment, "crop": [d.crop_min, d.crop_max], "seed": cfg.student_train.seed,
         **({"crop_style": d.crop_style} if d.crop_style else {}),
         **({"sentences": [d.sentence_crops, d.sentence_run]} if d.sentence_crops else {}),
         "teacher": k_teacher, "tok": k_stok, "data": k_data, "features": distill.FEATURES_VERSION, **rec,
         # ensemble v2: the mixed logits are the saved soft targets (v1 saved the BiGRU's)
         **({"ensemble": [d.ensemble, d.ensemble_folds, k_tfidf, 2]} if d.ensemble != "none" else {}),
         **({"unlabeled": unlabeled} if unlabeled != "none" else {}),  # k_data: the raw files
         **({"teachers": [k for _, k in more_teachers]} if more_teachers else {})},
        targets,
    )
    # KD, then KD + AFD continuing the KD run for its last d.afd_epochs epochs (shared start)
    distilled: dict[str, tuple[Path, str]] = {}
    for name, afd in (("student_kd", False), ("student_afd", True)):
        dcfg = d_key if afd else {"temperature": d.temperature, "alpha": d.alpha,
                              "afd_epochs": d.afd_epochs}
        branch = distilled["student_kd"] if afd and d.afd_epochs else None
        distilled[name] = run_stage(
            name,
            {"model": cfg.student, "train": cfg.distill_train, "distill": dcfg, "tok": k_stok,
             "data": k_data, "targets": k_targets, "rewind": cfg.prune.rewind_epoch,
             # branch v2: the AFD student is its own best epoch (distill_student)
             **({"branch": branch[1], "branch_version": 2} if branch else {}), **rec},
            lambda o, w, afd=afd, branch=branch: distill.distill_student(
                data_dir, targets_dir, stok_dir, o, w, cfg.student, cfg.distill_train, d, afd,
                cfg.prune.rewind_epoch, branch[0] if branch else None, records),
        )
        evaluation(f"{name}_eval", *distilled[name])
    # The distilled student that goes on: the better one on the validation split.
    best = max(distilled, key=lambda n: _val_accuracy(out / f"{n}_eval"))
    kd_dir, k_kd = distilled[best]
    afd = best == "student_afd"
    log.info("distilled student going on: %s", best)

    @functools.cache  # loaded once, only if a later stage runs (the factory keeps no state)
    def teacher_step():  # the distillation loss of the chosen student, for the later stages
        z_t = np.load(targets_dir / distill.TARGET_LOGITS)
        feats = distill.TeacherFeatures.load(targets_dir / distill.TARGET_FEATURES) if afd else None
        return distill.kd_step(z_t, d if afd else replace(d, afd_weight=0.0), feats)

    pruned_dir, k_pruned = run_stage(
        "student_pruned",
        {"student": k_kd, "prune": cfg.prune, "train": cfg.distill_train, "distill": d_key,
         "targets": k_targets,
         # the flash bytes a round saves are counted at the release's embedding table (since v2)
         "embedding_bits": cfg.quant.embedding_bits, "flash": 2, **rec},
        lambda o, w: prune.prune_student(kd_dir, data_dir, o, w, cfg.prune, cfg.distill_train,
                                         make_step=teacher_step(),
                                         train_rows=distill.target_rows(targets_dir),
                                         embedding_bits=cfg.quant.embedding_bits, records=records),
    )
    evaluation("prune_eval", pruned_dir, k_pruned)
    # QAT starts from the Lottery ticket unless the dense distilled student is better on validation.
    if _val_accuracy(out / "prune_eval") >= _val_accuracy(out / f"{best}_eval"):
        base_dir, k_base = pruned_dir, k_pruned
    else:
        base_dir, k_base = kd_dir, k_kd
        log.info("the dense distilled student beats the pruned one on validation: QAT starts there")
    compare = (functools.partial(convert.compare_precisions, max_reviews=cfg.quant.compare_reviews)
               if cfg.quant.compare_reviews > 0 else None)
    qat_dir, k_qat = run_stage(
        "qat", {"student": k_base, "train": cfg.qat_train, "distill": d_key, "targets": k_targets,
                     "tokens": cfg.release_tokens, "quant": cfg.quant, "n": cfg.calibration_reviews,
                     "conversion": convert.CONVERSION_VERSION,
                     # output v3: model.keras holds the device's embedding table, the float one
                     # beside it (convert.LATENT_TABLE), whether QAT's weights or the start's are kept
                     "output": 3, **rec},
        lambda o, w: qat.qat_student(base_dir, data_dir, o, w, cfg.qat_train, teacher_step(),
                                     cfg.release_tokens, cfg.quant.embedding_bits, compare,
                                     cfg.calibration_reviews, cfg.quant.qat_cell == "spec", records),
    )
    evaluation("qat_eval", qat_dir, k_qat)
    int8_dir, k_int8 = run_stage(
        "int8",
        {"student": k_qat, "data": k_data, "n": cfg.calibration_reviews,
         "conversion": convert.CONVERSION_VERSION, "embedding_bits": cfg.quant.embedding_bits},
        lambda o, w: convert.quantize_student(qat_dir, data_dir, o, cfg.calibration_reviews,
                                              cfg.quant.embedding_bits),
    )
    evaluation("int8_eval", int8_dir, k_int8, "tflm", reference=(qat_dir, k_qat))
    run_stage("bench", {"int8": k_int8, "bench": bench.BENCH_VERSION},
                     lambda o, w: bench.bench_stage(int8_dir, o))
    run_stage("firmware_export", {"int8": k_int8},
                     lambda o, w: firmware.export_firmware(int8_dir, o))
    (out / "config.json").write_text(json.dumps(to_dict(cfg), indent=2, sort_keys=True))
    report_path = report.write_report(out, command=" ".join(["python -m pipeline.all", *sys.argv[1:]]))
    log.info("report: %s", report_path)
    peak = stages.run_peak_rss_mib()
    log.info("peak RSS of this run: %.0f MiB (pipeline process), %.0f MiB (largest worker process)",
             peak["main"], peak["workers"])
    return report_path


def _val_accuracy(eval_dir: Path) -> float:
    return float(json.loads((eval_dir / "metrics.json").read_text())["val"]["accuracy"])


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
    ap.add_argument("--release", type=Path, metavar="DIR",
                    help="also copy the int8 release model (model files + tokenizer) to DIR, "
                         "e.g. models/release")
    ap.add_argument("--firmware", type=Path, metavar="DIR",
                    help="also write the release model's generated sources into the PlatformIO "
                         "project DIR (firmware)")
    ap.add_argument("--until", choices=RUN_STAGES, metavar="STAGE",
                    help="stop once this stage is done, e.g. teacher (no report); stages: "
                         + ", ".join(RUN_STAGES))
    ap.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    args = ap.parse_args(argv)
    setup_logging(args.quiet)
    if args.until and (args.publish or args.release or args.firmware):
        ap.error("--until stops before the report and the release: drop --publish, --release and "
                 "--firmware, or --until")
    try:
        cfg = override(preset(args.preset), args.set)
    except ValueError as e:
        ap.error(str(e))
    for p in filter(None, (args.data, args.heldout)):
        if not p.exists():
            ap.error(f"{p} does not exist")
    strategy = None
    if cfg.distribute.strategy != "default":
        from pipeline.nn.distribute import strategy_from_name

        try:  # before any TensorFlow op: MultiWorkerMirroredStrategy configures the runtime
            strategy = strategy_from_name(cfg.distribute.strategy)
        except ValueError as e:
            ap.error(str(e))
    try:
        out = args.out or Path("runs") / cfg.preset
        if run(cfg, args.data, out, args.heldout, strategy, args.until) is None:
            return 0
    except data.DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(INTERRUPTED, file=sys.stderr)
        return 130
    if args.publish:
        files = report.publish_report(out, args.publish)
        log.info("published %d files to %s", len(files), args.publish)
    if args.release:
        files = release.copy_release(out / "int8", args.release)
        log.info("release model: %d files in %s", len(files), args.release)
    if args.firmware:
        sizes = firmware.export_firmware(args.release or out / "int8", args.firmware)
        log.info("firmware sources in %s/src: %s", args.firmware, sizes)
    return 0


if __name__ == "__main__":
    sys.exit(main())
