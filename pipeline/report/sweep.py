"""Size–accuracy sweep of the device student: pick the model for your board.

The CLI is ``python -m pipeline.sweep`` (:mod:`pipeline.sweep`). Every point of the grid (student
vocabulary x embedding width x GRU units) goes through the pipeline's own stages, with the preset's
``student_tokenizer`` / ``student_train`` / calibration settings: BPE tokenizer
(``pipeline.text.tokenizer.build_tokenizer``, one per vocabulary), student trained on labels
(``pipeline.nn.stage.train_student``), full-int8 conversion
(``pipeline.device.convert.quantize_student``), evaluation of the int8 files in the TensorFlow Lite
Micro interpreter and of the float student in Keras (``pipeline.report.metrics``). Each is a
resumable stage under ``OUT`` (a finished point is reused, a killed sweep resumes). Flash bytes are
those the firmware needs for the model: both ``.tflite`` arrays plus the C tokenizer's tables
(``pipeline.text.ctables.write_tokenizer_tables``).

Outputs in ``OUT`` (and, with ``--publish``, copied to that folder): ``sweep.json`` (rows, peers,
release point, budgets, command), ``sweep.md`` (the table) and ``sweep.png``: int8 TFLM test
accuracy against flash bytes (log scale), one marker per point, the reference run's peers (TF-IDF,
fastText ``.bin`` / ``.ftz``, the float teacher) and its release int8 student as labelled points,
and a vertical line per board budget (:data:`BOARDS`).

Board budgets (flash for model arrays + tokenizer tables). The firmware's partition table
(``partitions_singleapp_large.csv``, set in ``firmware/platformio.ini``) gives every board one
1.5 MB factory app partition, whatever its flash chip; the app also holds ESP-IDF, TFLM + esp-nn
and the firmware's own code. Budget = ``APP_PARTITION_BYTES - IDF_BASE_BYTES - CODE_BYTES``:
``CODE_BYTES`` is the measured ``.text`` + ``.rodata`` of TFLM + esp-nn and the firmware code of
the riscv32 build (``python -m pipeline.bench models/release``, ``code_size``), ``IDF_BASE_BYTES``
a stated allowance for ESP-IDF itself (bootloader-independent app image of an ESP-IDF 5.x UART
console application: FreeRTOS, heap, drivers, newlib, esp_timer; not measured here: no ESP
toolchain). The project's own bar for the release model is drawn too.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, replace
from pathlib import Path

from pipeline.progress import track

log = logging.getLogger(__name__)

KIB = 1024
MIB = 1024 * KIB
APP_PARTITION_BYTES = 0x180000  # partitions_singleapp_large.csv: one 1.5 MB factory app
IDF_BASE_BYTES = 256 * KIB  # ESP-IDF's own share of the app image: a stated allowance, not measured
CODE_BYTES = 75_000  # TFLM + esp-nn + firmware code, .text + .rodata, measured (riscv32 build)
PROJECT_BAR = 160 * KIB  # the README's bar for model arrays + tokenizer tables


@dataclass(frozen=True)
class Board:
    name: str
    flash_bytes: int
    sram_kb: int
    note: str

    @property
    def model_budget(self) -> int:
        """Flash the model arrays + tokenizer tables may use in the firmware's app partition."""
        return APP_PARTITION_BYTES - IDF_BASE_BYTES - CODE_BYTES


BOARDS = (
    Board("ESP32 (esp32dev)", 4 * MIB, 520, "Xtensa LX6 240 MHz x2, ESP-NN"),
    Board("ESP32-S3 (DevKitC-1 N8)", 8 * MIB, 512, "Xtensa LX7 240 MHz x2, SIMD ESP-NN"),
    Board("ESP32-C3 (DevKitM-1)", 4 * MIB, 400, "RISC-V 160 MHz x1, no SIMD"),
)


@dataclass(frozen=True)
class Grid:
    vocab: tuple[int, ...] = (2000, 4000, 8000)
    embed_dim: tuple[int, ...] = (16, 32)
    units: tuple[int, ...] = (16, 32)

    def points(self) -> list[tuple[int, int, int]]:
        return [(v, e, u) for v in self.vocab for e in self.embed_dim for u in self.units]


def _test_metrics(metrics: dict) -> dict:
    t = metrics["test"]
    return {k: t[k] for k in ("accuracy", "balanced_accuracy", "f1", "roc_auc")}


def run_point(root: Path, data_dir: Path, k_data: str, cfg, vocab: int, embed: int,
              units: int) -> dict:
    """Tokenizer -> student -> int8 -> TFLM and Keras evaluations for one grid point (stages)."""
    from pipeline import stages
    from pipeline.device import convert
    from pipeline.nn.stage import train_student
    from pipeline.report.metrics import evaluate_model_dir
    from pipeline.text import tokenizer
    from pipeline.text.ctables import write_tokenizer_tables

    tok_cfg = replace(cfg.student_tokenizer, vocab_size=vocab)
    tok_dir, k_tok = stages.run_stage(
        root, f"tok-v{vocab}", {"cfg": tok_cfg, "data": k_data},
        lambda o, w: tokenizer.build_tokenizer(data_dir, o, tok_cfg))
    scfg = replace(cfg.student, embed_dim=embed, units=units)
    name = f"v{vocab}-e{embed}-u{units}"
    student_dir, k_student = stages.run_stage(
        root, f"student-{name}",
        {"model": scfg, "train": cfg.student_train, "tok": k_tok, "data": k_data},
        lambda o, w: train_student(data_dir, tok_dir, o, w, scfg, cfg.student_train))
    int8_dir, k_int8 = stages.run_stage(
        root, f"int8-{name}", {"student": k_student, "data": k_data,
                               "n": cfg.calibration_reviews,
                               "conversion": convert.CONVERSION_VERSION},
        lambda o, w: convert.quantize_student(student_dir, data_dir, o, cfg.calibration_reviews))
    evals = {}
    for kind, model_dir, key, runtime in (("int8", int8_dir, k_int8, "tflm"),
                                          ("float", student_dir, k_student, "keras")):
        out, _ = stages.run_stage(
            root, f"{kind}_eval-{name}", {"model": key, "data": k_data, "runtime": runtime},
            lambda o, w, d=model_dir, r=runtime: evaluate_model_dir(d, data_dir, o, None, r))
        evals[kind] = json.loads((out / "metrics.json").read_text())
    tables_dir, _ = stages.run_stage(
        root, f"tables-v{vocab}", {"tok": k_tok},
        lambda o, w: write_tokenizer_tables(tok_dir, o))
    tables = json.loads((tables_dir / stages.STAGE_FILE).read_text())["summary"]["total"]
    device = evals["int8"]["model"]["device"]
    info = json.loads((student_dir / "model.json").read_text())
    return {
        "name": name, "vocab": vocab, "embed_dim": embed, "units": units,
        "params": info.get("params"),
        "model_bytes": device["flash_bytes"], "tokenizer_bytes": int(tables),
        "flash_bytes": device["flash_bytes"] + int(tables),
        "arena_bytes": device["arena_bytes"], "macs_per_128_tokens": device["macs_per_128_tokens"],
        "host_tflm_ms_per_128_tokens": device["host_tflm_ms_per_128_tokens"],
        "int8_test_accuracy": evals["int8"]["test"]["accuracy"],
        "int8_val_accuracy": evals["int8"]["val"]["accuracy"],
        "int8_test": _test_metrics(evals["int8"]),
        "float_test_accuracy": evals["float"]["test"]["accuracy"],
        "float_test": _test_metrics(evals["float"]),
    }


def reference_points(run_dir: Path | None) -> tuple[list[dict], dict | None]:
    """Peers and the release int8 student of a finished run (``runs/full`` or ``reports/full``)."""
    if run_dir is None:
        return [], None

    def load(rel: str) -> dict | None:
        p = Path(run_dir) / rel
        return json.loads(p.read_text()) if p.exists() else None

    peers = []
    if t := load("peer_tfidf/metrics.json"):
        k = t["stopwords_kept"]
        peers.append({"name": f"TF-IDF + LR (C={t['C']:g})", "bytes": k["size_bytes"],
                      "test_accuracy": k["test"]["accuracy"]})
    if f := load("peer_fasttext/metrics.json"):
        for key, label in (("bigram", "fastText bigram .bin"), ("quantized", "fastText .ftz")):
            peers.append({"name": label, "bytes": f[key]["size_bytes"],
                          "test_accuracy": f[key]["test"]["accuracy"]})
    if t := load("teacher_eval/metrics.json"):
        peers.append({"name": "BiGRU teacher (float32)", "bytes": sum(t["model_files_bytes"].values()),
                      "test_accuracy": t["test"]["accuracy"]})
    release = None
    if (m := load("int8_eval/metrics.json")) and "device" in m.get("model", {}):
        tables = None  # the firmware export stage measured the tokenizer tables
        if stage := load("firmware_export/stage.json"):
            tables = stage.get("summary", {}).get("tokenizer_tables")
        release = {"name": "release int8 student (TFLM)",
                   "model_bytes": m["model"]["device"]["flash_bytes"],
                   "tokenizer_bytes": tables, "test_accuracy": m["test"]["accuracy"]}
        release["flash_bytes"] = release["model_bytes"] + (tables or 0)
    return peers, release


def release_tokenizer_bytes(run_dir: Path | None) -> int | None:
    """Tokenizer-table bytes of the run's release tokenizer (needs the run's int8 folder)."""
    if run_dir is None or not (Path(run_dir) / "int8" / "tokenizer.model").exists():
        return None
    import tempfile

    from pipeline.text.ctables import write_tokenizer_tables

    with tempfile.TemporaryDirectory() as tmp:
        return int(write_tokenizer_tables(Path(run_dir) / "int8", Path(tmp))["total"])


def table_md(rows: list[dict], peers: list[dict], release: dict | None) -> str:
    lines = ["| vocab | embed | units | params | flash bytes (model + tokenizer) | arena B | "
             "MACs / 128 tokens | int8 TFLM test acc. | float test acc. | fits |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in sorted(rows, key=lambda r: r["flash_bytes"]):
        fits = ", ".join(b.name.split(" ")[0] for b in BOARDS if r["flash_bytes"] <= b.model_budget)
        lines.append(
            f"| {r['vocab']} | {r['embed_dim']} | {r['units']} | {r['params'] or '–'} | "
            f"{r['flash_bytes']:,} ({r['model_bytes']:,} + {r['tokenizer_bytes']:,}) | "
            f"{r['arena_bytes']:,} | {r['macs_per_128_tokens']:,} | "
            f"{100 * r['int8_test_accuracy']:.2f} | {100 * r['float_test_accuracy']:.2f} | "
            f"{fits or '–'} |")
    if release:
        lines += ["", f"Release model ({release['name']}): {release['flash_bytes']:,} flash bytes, "
                      f"{100 * release['test_accuracy']:.2f}% test accuracy."]
    if peers:
        lines += ["", "Peers (not for the device; size = model file): " + "; ".join(
            f"{p['name']} {100 * p['test_accuracy']:.2f}% at {p['bytes']:,} B" for p in peers) + "."]
    lines += ["", f"Budgets (model arrays + tokenizer tables in the {APP_PARTITION_BYTES:,}-byte app "
                  f"partition, less {IDF_BASE_BYTES:,} B allowed for ESP-IDF and {CODE_BYTES:,} B "
                  "measured for TFLM + esp-nn + firmware code): " + "; ".join(
                      f"{b.name} {b.model_budget:,} B" for b in BOARDS) +
              f"; project bar {PROJECT_BAR:,} B."]
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], peers: list[dict], release: dict | None, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8.5, 5.5))
    try:
        units = sorted({r["units"] for r in rows})
        markers = dict(zip(units, "os^Dvp<>", strict=False))
        embeds = sorted({r["embed_dim"] for r in rows})
        cmap = plt.get_cmap("viridis", max(len(embeds), 2))
        for r in rows:
            ax.scatter(r["flash_bytes"], 100 * r["int8_test_accuracy"], s=40,
                       marker=markers.get(r["units"], "o"),
                       color=cmap(embeds.index(r["embed_dim"])), zorder=3)
            ax.annotate(f"{r['vocab'] // 1000 if r['vocab'] >= 1000 else r['vocab']}"
                        f"{'k' if r['vocab'] >= 1000 else ''}", (r["flash_bytes"],
                        100 * r["int8_test_accuracy"]), textcoords="offset points",
                        xytext=(4, 3), fontsize=7)
        for e in embeds:
            ax.scatter([], [], color=cmap(embeds.index(e)), marker="o", label=f"embed {e}")
        for u in units:
            ax.scatter([], [], color="grey", marker=markers[u], label=f"units {u}")
        for p in peers:
            ax.scatter(p["bytes"], 100 * p["test_accuracy"], marker="x", color="black", zorder=3)
            ax.annotate(p["name"], (p["bytes"], 100 * p["test_accuracy"]),
                        textcoords="offset points", xytext=(4, -9), fontsize=7)
        if release:
            ax.scatter(release["flash_bytes"], 100 * release["test_accuracy"], marker="*", s=180,
                       color="crimson", zorder=4, label=release["name"])
        ymin, ymax = ax.get_ylim()
        styles = ["--", "-.", ":"]
        budgets: dict[int, list[str]] = {}
        for b in BOARDS:
            budgets.setdefault(b.model_budget, []).append(b.name)
        for i, (x, names) in enumerate(sorted(budgets.items())):
            ax.axvline(x, color="tab:red", ls=styles[i % 3], lw=1)
            ax.text(x, ymin + 0.02 * (ymax - ymin), " " + " / ".join(names), rotation=90,
                    fontsize=7, va="bottom", ha="right", color="tab:red")
        ax.axvline(PROJECT_BAR, color="tab:orange", ls=":", lw=1)
        ax.text(PROJECT_BAR, ymin + 0.02 * (ymax - ymin), f" project bar {PROJECT_BAR // KIB} KiB",
                rotation=90,
                fontsize=7, va="bottom", ha="right", color="tab:orange")
        ax.set_xscale("log")
        ax.set(xlabel="flash bytes (int8 model arrays + tokenizer tables; peers: model file)",
               ylabel="test accuracy, % (int8 in TFLM; peers: their own)",
               title="Student size vs accuracy (labels only, post-training int8)")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7, loc="lower right")
        fig.tight_layout()
        fig.savefig(path, dpi=120)
    finally:
        plt.close(fig)


def run_sweep(out: Path, cfg, grid: Grid, data_path: Path | None = None,
              data_dir: Path | None = None, reference: Path | None = None,
              command: str = "") -> dict:
    """Run (or reuse) every grid point under ``out``; write ``sweep.json``, ``sweep.md``, ``.png``."""
    from pipeline import data, stages

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if (data_path is None) == (data_dir is None):
        raise ValueError("give exactly one of data_path (raw reviews) and data_dir (a split)")
    if data_path is not None:
        data_dir, k_data = stages.run_stage(
            out, "data", {"cfg": cfg.data.split_key(), "files": stages.files_fingerprint(data_path)},
            lambda o, w: data.build_dataset(data_path, o, cfg.data, work_dir=w / "spill"))
    else:
        k_data = stages.fingerprint({"split": stages.files_fingerprint(data_dir)})
    rows = []
    for i, (v, e, u) in enumerate(track(grid.points(), desc="sweep", unit="points"), 1):
        t0 = time.monotonic()
        log.info("sweep point %d/%d: vocab %d, embed %d, units %d", i, len(grid.points()), v, e, u)
        rows.append(run_point(out, Path(data_dir), k_data, cfg, v, e, u))
        log.info("sweep point %d done in %.0fs: int8 test accuracy %.4f, flash %d B", i,
                 time.monotonic() - t0, rows[-1]["int8_test_accuracy"], rows[-1]["flash_bytes"])
    peers, release = reference_points(reference)
    if release is not None and release["tokenizer_bytes"] is None:
        tables = release_tokenizer_bytes(reference)
        if tables is not None:
            release.update(tokenizer_bytes=tables, flash_bytes=release["model_bytes"] + tables)
    result = {"command": command, "preset": cfg.preset, "rows": rows, "peers": peers,
              "release": release, "app_partition_bytes": APP_PARTITION_BYTES,
              "idf_base_bytes": IDF_BASE_BYTES, "code_bytes": CODE_BYTES,
              "boards": [{"name": b.name, "flash_bytes": b.flash_bytes, "sram_kb": b.sram_kb,
                          "model_budget": b.model_budget, "note": b.note} for b in BOARDS],
              "project_bar": PROJECT_BAR}
    (out / "sweep.json").write_text(json.dumps(result, indent=2))
    (out / "sweep.md").write_text(f"# Size–accuracy sweep\n\nCommand: `{command}`\n\n"
                                  + table_md(rows, peers, release))
    plot(rows, peers, release, out / "sweep.png")
    return result


PUBLISHED = ("sweep.json", "sweep.md", "sweep.png")
