"""Evaluation helpers: binary metrics, ROC data, plots, atomic JSON and markdown tables."""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.metrics import (  # noqa: E402
    accuracy_score,
    balanced_accuracy_score,
    confusion_matrix,
    f1_score,
    precision_score,
    recall_score,
    roc_auc_score,
    roc_curve,
)

PERCENT_METRICS = frozenset({"accuracy", "balanced_accuracy", "precision", "recall", "f1"})
INT_METRICS = frozenset({"n", "positives"})
MISSING = "–"


def _arrays(y_true: Sequence[int], prob: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """Validate and convert labels / probabilities to 1-D numpy arrays."""
    y = np.asarray(y_true, dtype=np.int64).ravel()
    p = np.asarray(prob, dtype=np.float64).ravel()
    if y.shape != p.shape:
        raise ValueError(f"y_true and prob differ in length: {y.size} vs {p.size}")
    if y.size == 0:
        raise ValueError("cannot evaluate an empty set")
    if not np.isin(y, (0, 1)).all():
        raise ValueError("y_true must contain only 0/1 labels")
    return y, p


def _two_classes(y: np.ndarray) -> bool:
    return np.unique(y).size == 2


def compute_metrics(
    y_true: Sequence[int], prob: Sequence[float], threshold: float = 0.5
) -> dict[str, Any]:
    """Binary metrics of P(positive) ``prob`` thresholded at ``threshold`` (pred = prob >= t).

    Returns plain Python floats/ints: n, accuracy, balanced_accuracy, precision, recall, f1,
    roc_auc (None with only one class present), confusion [[tn, fp], [fn, tp]], positives,
    threshold. Precision/recall/f1 are 0.0 when undefined.
    """
    y, p = _arrays(y_true, prob)
    pred = (p >= threshold).astype(np.int64)
    cm = confusion_matrix(y, pred, labels=[0, 1])
    if _two_classes(y):
        bal = float(balanced_accuracy_score(y, pred))
        auc: float | None = float(roc_auc_score(y, p))
    else:  # balanced accuracy degenerates to recall of the single present class
        bal = float(accuracy_score(y, pred))
        auc = None
    return {
        "n": int(y.size),
        "accuracy": float(accuracy_score(y, pred)),
        "balanced_accuracy": bal,
        "precision": float(precision_score(y, pred, labels=[0, 1], zero_division=0)),
        "recall": float(recall_score(y, pred, labels=[0, 1], zero_division=0)),
        "f1": float(f1_score(y, pred, labels=[0, 1], zero_division=0)),
        "roc_auc": auc,
        "confusion": [[int(v) for v in row] for row in cm],
        "positives": int(y.sum()),
        "threshold": float(threshold),
    }


def roc_points(
    y_true: Sequence[int], prob: Sequence[float], max_points: int = 200
) -> dict[str, list[float]]:
    """ROC curve as {"fpr": [...], "tpr": [...]}, at most ``max_points`` points (ends kept).

    Empty lists when only one class is present (ROC undefined).
    """
    if max_points < 2:
        raise ValueError("max_points must be >= 2")
    y, p = _arrays(y_true, prob)
    if not _two_classes(y):
        return {"fpr": [], "tpr": []}
    fpr, tpr, _ = roc_curve(y, p)
    if fpr.size > max_points:
        idx = np.unique(np.linspace(0, fpr.size - 1, max_points).round().astype(np.int64))
        fpr, tpr = fpr[idx], tpr[idx]
    return {
        "fpr": [round(float(v), 6) for v in fpr],
        "tpr": [round(float(v), 6) for v in tpr],
    }


def plot_roc(
    curves: dict[str, tuple[Sequence[int], Sequence[float]]], path: Path, title: str
) -> None:
    """Write one PNG with a ROC curve per name (``name (AUC 0.973)``) plus the chance diagonal."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(5.5, 5))
    try:
        for name, (y_true, prob) in curves.items():
            y, p = _arrays(y_true, prob)
            if not _two_classes(y):
                ax.plot([], [], label=f"{name} (AUC n/a)")
                continue
            fpr, tpr, _ = roc_curve(y, p)
            ax.plot(fpr, tpr, lw=1.5, label=f"{name} (AUC {roc_auc_score(y, p):.3f})")
        ax.plot([0, 1], [0, 1], ls="--", lw=1, color="grey", label="chance")
        ax.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="False positive rate",
               ylabel="True positive rate", title=title)
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right", fontsize="small")
        fig.tight_layout()
        fig.savefig(path, dpi=120, format="png")
    finally:
        plt.close(fig)


def plot_confusion(confusion: list[list[int]], path: Path, title: str) -> None:
    """Write a 2x2 confusion heatmap (rows true, cols predicted) with counts and row-%."""
    cm = np.asarray(confusion, dtype=np.int64)
    if cm.shape != (2, 2):
        raise ValueError(f"confusion must be 2x2, got shape {cm.shape}")
    rows = cm.sum(axis=1, keepdims=True)
    frac = np.divide(cm, rows, out=np.zeros(cm.shape, dtype=np.float64), where=rows > 0)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    labels = ["negative", "positive"]
    fig, ax = plt.subplots(figsize=(4.5, 4))
    try:
        im = ax.imshow(frac, cmap="Blues", vmin=0.0, vmax=1.0)
        for i in range(2):
            for j in range(2):
                ax.text(j, i, f"{cm[i, j]}\n({100 * frac[i, j]:.1f}%)", ha="center",
                        va="center", color="white" if frac[i, j] > 0.5 else "black")
        ax.set(xticks=[0, 1], yticks=[0, 1], xticklabels=labels, yticklabels=labels,
               xlabel="Predicted", ylabel="True", title=title)
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="row fraction")
        fig.tight_layout()
        fig.savefig(path, dpi=120, format="png")
    finally:
        plt.close(fig)


def _json_default(obj: Any) -> Any:
    """Make numpy scalars/arrays and paths json-serialisable."""
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"Object of type {type(obj).__name__} is not JSON serializable")


def write_json(path: Path, obj: Any) -> None:
    """Atomically write ``obj`` as JSON (indent=2, sorted keys) via a temp file + os.replace."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(obj, fh, indent=2, sort_keys=True, default=_json_default)
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def _round(value: float, scale: int, places: int) -> str:
    """Half-up rounding of the shortest decimal repr (so 0.92345 * 100 -> '92.35')."""
    d = Decimal(repr(float(value))).scaleb(scale)
    return str(d.quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_UP))


def _fmt(column: str, value: Any) -> str:
    """Format one table cell: % for rate metrics, 4 decimals for roc_auc, int for counts."""
    if value is None:
        return MISSING
    if isinstance(value, (float, np.floating)) and not np.isfinite(value):
        return MISSING
    if column in PERCENT_METRICS:
        return _round(value, 2, 2)
    if column in INT_METRICS:
        return str(int(value))
    if column == "roc_auc" or isinstance(value, (float, np.floating)):
        return _round(value, 0, 4)
    return str(value)


def metrics_table(
    rows: list[tuple[str, dict]],
    columns: Sequence[str] = (
        "n", "accuracy", "balanced_accuracy", "precision", "recall", "f1", "roc_auc",
    ),
    name_header: str = "model",
) -> str:
    """Markdown table, one row per (name, metrics); rates in % (2 dp), roc_auc 4 dp, missing '–'."""
    header = "| " + " | ".join([name_header, *columns]) + " |"
    sep = "|" + "|".join(["---", *(["---:"] * len(columns))]) + "|"
    lines = [header, sep]
    for name, metrics in rows:
        cells = [_fmt(c, metrics.get(c)) for c in columns]
        lines.append("| " + " | ".join([str(name), *cells]) + " |")
    return "\n".join(lines) + "\n"


# --- stage-level evaluation and the report ------------------------------------------------------

def load_heldout(heldout: Path | None) -> dict[str, list[tuple[str, int]]]:
    """Each readable file in the held-out folder as a named labelled set (name = file stem)."""
    from pipeline.data import iter_reviews

    if heldout is None:
        return {}
    files = sorted(p for p in Path(heldout).iterdir()
                   if p.is_file() and not p.name.startswith(".") and not p.name.startswith("README"))
    return {p.name.split(".")[0]: list(iter_reviews(p)) for p in files}


def eval_sets(data_dir: Path, heldout: Path | None = None) -> dict[str, list[tuple[str, int]]]:
    """The labelled sets every model is scored on: ``test``, ``val``, ``heldout/NAME`` per file."""
    from pipeline.data import read_jsonl

    sets = {s: read_jsonl(Path(data_dir) / f"{s}.jsonl") for s in ("test", "val")}
    sets.update({f"heldout/{k}": v for k, v in load_heldout(heldout).items()})
    return sets


def evaluate_predictor(
    predict: Callable[[Sequence[str]], np.ndarray], sets: dict[str, list[tuple[str, int]]],
    reference: Callable[[Sequence[str]], np.ndarray] | None = None,
) -> dict:
    """Metrics (+ ROC points, host ms per review) on each set of :func:`eval_sets`.

    With a ``reference`` predictor (the float model an int8 one came from), each set also gets
    ``agreement`` (share of equal labels at 0.5) and ``max_abs_prob_diff``.
    """
    out: dict[str, Any] = {"heldout": {}}
    for name, rows in sets.items():
        texts = [t for t, _ in rows]
        t0 = time.perf_counter()
        prob = np.asarray(predict(texts))
        ms = 1000 * (time.perf_counter() - t0) / max(len(rows), 1)
        y = [int(lab) for _, lab in rows]
        m = compute_metrics(y, prob)
        m["roc"] = roc_points(y, prob)
        m["host_ms_per_review"] = round(ms, 4)
        if reference is not None:
            ref = np.asarray(reference(texts))
            m["agreement"] = float(np.mean((prob >= 0.5) == (ref >= 0.5)))
            m["max_abs_prob_diff"] = float(np.max(np.abs(prob - ref)))
        if name.startswith("heldout/"):
            out["heldout"][name.split("/", 1)[1]] = m
        else:
            out[name] = m
    return out


def evaluate_model_dir(
    model_dir: Path, data_dir: Path, out_dir: Path, heldout: Path | None, runtime: str,
    reference_dir: Path | None = None,
) -> dict:
    """Stage: evaluate a model directory with one runtime; writes metrics.json and PNG plots.

    ``reference_dir``: a Keras model directory to measure label agreement against (see
    :func:`evaluate_predictor`).
    """
    from pipeline.predict import load_predictor

    info = json.loads((Path(model_dir) / "model.json").read_text())
    ref = load_predictor(reference_dir, "keras") if reference_dir else None
    metrics = evaluate_predictor(load_predictor(model_dir, runtime), eval_sets(data_dir, heldout),
                                 ref)
    files = info.get("files") or sorted(set(info["runtimes"].values()))
    metrics.update(runtime=runtime, model=info, model_files_bytes={
        f: (Path(model_dir) / f).stat().st_size for f in files})
    write_json(Path(out_dir) / "metrics.json", metrics)
    test = metrics["test"]
    plot_confusion(test["confusion"], Path(out_dir) / "confusion.png",
                   f"{info.get('kind', 'model')} ({runtime}) — test split")
    return {"test_accuracy": test["accuracy"], "test_roc_auc": test["roc_auc"]}


def _plot_roc_points(curves: dict[str, dict], path: Path, title: str) -> None:
    fig, ax = plt.subplots(figsize=(5, 5))
    for name, m in curves.items():
        ax.plot(m["roc"]["fpr"], m["roc"]["tpr"], label=f"{name} (AUC {m['roc_auc']:.4f})")
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=0.8)
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title=title)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def _bytes_or_missing(n: int | None) -> str:
    return f"{n:,} B" if n else MISSING


def _s3_estimate(macs: int) -> str:
    """A rough ESP32-S3 latency from MACs: ESP-NN's int8 kernels sustain very roughly 0.1-0.3 GMAC/s
    on the S3's vector unit at 240 MHz for these small matrices (an estimate, not a measurement)."""
    return (f"{macs / 0.3e6:.1f}–{macs / 0.1e6:.1f} ms per 128-token review from {macs:,} MACs at "
            "0.1–0.3 GMAC/s (an estimate, not measured on a board), plus per-invoke overhead")


_MODEL_STAGE = {"teacher_eval": "teacher", "student_eval": "student", "student_kd_eval": "student_kd",
                "student_afd_eval": "student_afd", "prune_eval": "student_pruned", "qat_eval": "qat",
                "int8_eval": "int8"}


def _compression_summary(run_dir: Path, load, evals: dict, peer: dict | None) -> list[str]:
    """The Baseline / Distilled / Pruned / Quantized table and the pruning rounds."""
    lines: list[str] = []
    distilled = [s for s in ("student_kd_eval", "student_afd_eval") if evals.get(s)]
    chosen = max(distilled, key=lambda s: evals[s]["val"]["accuracy"]) if distilled else None
    prune = load("student_pruned/pruning.json")
    rows = []
    if evals.get("teacher_eval"):
        m = evals["teacher_eval"]
        rows.append(("Baseline", "BiGRU teacher, float32", m,
                     _human_bytes(sum(m["model_files_bytes"].values())) + " (Keras file)",
                     "teacher_eval"))
    if chosen:
        m = evals[chosen]
        rows.append(("Distilled", "student + KD" + (" + AFD" if "afd" in chosen else "") +
                     ", float32", m, _human_bytes(sum(m["model_files_bytes"].values())) +
                     f" (Keras file; {m['model'].get('params', 0):,} weights)", chosen))
    if evals.get("prune_eval") and prune:
        m, last = evals["prune_eval"], prune["rounds"][-1]
        sz = last["size"]
        rows.append(("Pruned", f"Lottery ticket, {100 * last['sparsity']:.0f}% sparse, float32", m,
                     f"{sz['nonzero_weights']:,} non-zero of {sz['weights']:,} weights; int8 "
                     f"{_human_bytes(sz['int8_dense_bytes'])} dense, "
                     f"{_human_bytes(sz['int8_gzip_bytes'])} gzip", "prune_eval"))
    if evals.get("int8_eval"):
        m = evals["int8_eval"]
        d = m["model"]["device"]
        qat = (load("qat/stage.json") or {}).get("summary", {})
        how = ("QAT weights" if qat.get("kept") == "qat" else
               "QAT kept its start weights" if qat.get("kept") == "start" else "post-training")
        rows.append(("Quantized", f"full int8 ({how}), TFLM step loop", m,
                     f"{_human_bytes(d['flash_bytes'])} flash (model files)", "int8_eval"))
    if peer:
        kept = peer["stopwords_kept"]
        rows.append(("Peer", f"TF-IDF 1-2gram + LR (C={peer['C']:g})", kept,
                     _human_bytes(kept["size_bytes"]) + " (pickle)", ""))
    if ft := load("peer_fasttext/metrics.json"):
        for key, name, kind in (("bigram", "fastText bigram", ".bin"),
                                ("quantized", "fastText bigram, quantized", ".ftz")):
            rows.append(("Peer", name, ft[key], _human_bytes(ft[key]["size_bytes"]) + f" ({kind})",
                         ""))
    if not rows:
        return lines
    lines += ["## Compression: Baseline / Distilled / Pruned / Quantized (test split)", "",
              "| stage | model | tokens | accuracy | balanced acc. | F1 | ROC-AUC | size | "
              "host ms / review |", "|---|---|---:|---:|---:|---:|---:|---|---:|"]
    for stage, name, m, size, eval_stage in rows:
        t = m["test"]
        tok = load(f"{_MODEL_STAGE[eval_stage]}/tokenizer.json") if eval_stage else None
        tokens = (tok or {}).get("seq_len", MISSING)
        lines.append(f"| {stage} | {name} | {tokens} | " + " | ".join(
            _fmt(c, t.get(c)) for c in ("accuracy", "balanced_accuracy", "f1", "roc_auc")) +
            f" | {size} | {t['host_ms_per_review']:.3f} |")
    lines += ["", "Host ms / review: batched Keras prediction on this machine's CPU; the int8 row "
              "runs one review at a time, token by token, in the TFLM interpreter.", ""]
    if chosen:
        qat = (load("qat/stage.json") or {}).get("summary", {})
        ticket = evals.get("prune_eval")
        base = ("the pruned ticket" if ticket and ticket["val"]["accuracy"] >=
                evals[chosen]["val"]["accuracy"] else "the dense distilled student")
        lines += [f"Decisions, all on the validation split: the distilled student that went on is "
                  f"the better of KD and KD + AFD: `{chosen.removesuffix('_eval')}`; QAT started "
                  f"from {base} (the ticket goes on only if it is at least as accurate)"]
        if qat:
            lines[-1] += (f"; QAT fine-tuned at {qat.get('seq_len')} tokens and "
                          + ("kept its fine-tuned weights" if qat.get("kept") == "qat" else
                             "kept its starting weights") +
                          f" (validation loss {qat.get('val_loss_before', float('nan')):.5f} "
                          f"before, {qat.get('val_loss_after', float('nan')):.5f} after).")
        lines += [""]
    if prune:
        names = list(prune["rounds"][-1]["layers"])
        lines += ["### Lottery Ticket rounds (one global magnitude threshold; rewind to epoch "
                  f"{prune['rewind']['epoch']}, source: {prune['rewind']['source']})", "",
                  "| round | sparsity | threshold | " + " | ".join(f"`{n}`" for n in names) +
                  " | zero embedding rows | val acc | non-zero | int8 dense | int8 gzip |",
                  "|---:|---:|---:|" + "---:|" * len(names) + "---:|---:|---:|---:|---:|"]
        for r in prune["rounds"]:
            emb = next((v for v in r.get("structure", {}).values() if "zero_rows" in v), {})
            lines.append(
                f"| {r.get('round', 0)} | {100 * r['sparsity']:.1f}% | "
                f"{r.get('threshold', 0.0):.4f} | " +
                " | ".join(f"{100 * r['layers'][n]['sparsity']:.1f}%" for n in names) +
                f" | {emb.get('zero_rows', MISSING)} | {100 * r['val_accuracy']:.2f} | "
                f"{r['size']['nonzero_weights']:,} | {r['size']['int8_dense_bytes']:,} | "
                f"{r['size']['int8_gzip_bytes']:,} |")
        lines += ["", "Round 0 is the dense distilled student. TFLM stores zeros densely, so the "
                  "device gains from pruning only where whole structures empty: embedding rows that "
                  "are entirely zero leave the int8 table (`quantize.compact_rows`, an id map "
                  "sends their ids to one shared zero row).", ""]
    return lines


REPORT_ROWS = (  # (evaluation stage, row name), in pipeline order
    ("teacher_eval", "Baseline: BiGRU teacher (float32, Keras)"),
    ("student_eval", "Student, labels only (float32)"),
    ("student_kd_eval", "Distilled: student + KD (float32)"),
    ("student_afd_eval", "Distilled: student + KD + AFD (float32)"),
    ("prune_eval", "Pruned: Lottery Ticket of the distilled student (float32)"),
    ("qat_eval", "QAT stage output at the release length (float32; see kept)"),
    ("int8_eval", "Quantized: full int8 step loop (TFLM)"),
)


def write_report(run_dir: Path, command: str) -> Path:
    """Assemble ``report.md`` and ``roc.png`` from the finished stages' outputs in ``run_dir``."""
    run_dir = Path(run_dir)

    def load(rel: str) -> dict | None:
        p = run_dir / rel
        return json.loads(p.read_text()) if p.exists() else None

    data_stats = load("data/stats.json") or {}
    tok_stats = load("tokenizer/stats.json") or {}
    evals = {stage: load(f"{stage}/metrics.json") for stage, _ in REPORT_ROWS}
    teacher, int8 = evals["teacher_eval"], evals["int8_eval"]
    history = load("teacher/history.json")
    peer = load("peer_tfidf/metrics.json")
    ft = load("peer_fasttext/metrics.json")
    cfg = load("config.json") or {}
    models: list[tuple[str, dict, dict]] = []  # (name, eval metrics, extra)
    for stage, name in REPORT_ROWS:
        if m := evals[stage]:
            models.append((name, m, {"size": sum(m["model_files_bytes"].values()),
                                     "params": m["model"].get("params")}))
    if peer:
        kept = peer["stopwords_kept"]
        models.append((f"TF-IDF 1-2gram + LR (C={peer['C']:g})", kept,
                       {"size": kept["size_bytes"], "params": kept["features"]}))
    if ft:
        for key, label in (("bigram", "fastText bigram"), ("quantized", "fastText bigram, .ftz")):
            models.append((f"{label} (epoch {ft['epoch']}, lr {ft['lr']:g})", ft[key],
                           {"size": ft[key]["size_bytes"], "params": ft[key]["words"]}))
    lines = [
        "# Results",
        "",
        f"Command: `{command}`  ",
        f"Preset: `{cfg.get('preset', '?')}` · written {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
        "",
        "## Data",
        "",
    ]
    if data_stats:
        splits = data_stats.get("splits", {})
        lines += [
            "| split | reviews | positive |",
            "|---|---:|---:|",
            *[f"| {k} | {v['n']} | {v['positives']} |" for k, v in splits.items()],
            "",
            f"Split rule: md5 of the review string (test = bucket 0, validation = 1). "
            f"Config: `{json.dumps(cfg.get('data', {}), sort_keys=True)}`.",
            "",
        ]
    if tok_stats:
        p = tok_stats["val_tokens_per_review"]
        lines += [
            f"Tokenizer: SentencePiece BPE, vocabulary {tok_stats['vocab_size']}, "
            f"{cfg.get('tokenizer', {}).get('seq_len', '?')} tokens max "
            f"({100 * tok_stats['val_truncated_share']:.1f}% of validation reviews truncated; "
            f"tokens per review p50 {p['p50']:.0f}, p90 {p['p90']:.0f}, p99 {p['p99']:.0f}).",
            "",
        ]
    lines += _compression_summary(run_dir, load, evals, peer)
    lines += ["## Test split", ""]
    cols = ("n", "accuracy", "balanced_accuracy", "precision", "recall", "f1", "roc_auc")
    lines.append("| model | " + " | ".join(cols) + " | size | params / features | host ms/review |")
    lines.append("|---|" + "---:|" * (len(cols) + 3))
    for name, m, extra in models:
        t = m["test"]
        cells = [_fmt(c, t.get(c)) for c in cols]
        lines.append(f"| {name} | " + " | ".join(cells) +
                     f" | {_human_bytes(extra['size'])} | {extra['params'] or MISSING} |"
                     f" {t['host_ms_per_review']:.3f} |")
    lines += ["", "Size: bytes of the saved model file(s) (TF-IDF: its pickle; fastText: its "
              "`.bin` / `.ftz`; params / features: TF-IDF terms, fastText dictionary rows). "
              "Host ms/review: batched prediction on this machine's CPU, test split.", ""]
    if any("val" in m for _, m, _ in models):
        lines += ["Validation split (used for early stopping and the peer's C):", "",
                  metrics_table([(n, m["val"]) for n, m, _ in models if "val" in m]), ""]
    if teacher:
        tn, fp = teacher["test"]["confusion"][0]
        fn, tp = teacher["test"]["confusion"][1]
        lines += [f"Teacher confusion on test (rows true neg/pos): [[{tn}, {fp}], [{fn}, {tp}]] "
                  "— `teacher_eval/confusion.png`; ROC curves: `roc.png`.", ""]
    if int8:
        d = int8["model"]["device"]
        fw = (load("firmware_export/stage.json") or {}).get("summary", {})
        tables = fw.get("tokenizer_tables")
        flash = (f"{d['flash_bytes']:,} B" + (f" + {fw['id_map']:,} B id map" if fw.get("id_map")
                                              else ""))
        lines += ["## On the device (int8 student)", "",
                  "| flash: model files | flash: tokenizer tables | flash: total | tensor arenas "
                  "(min, TFLM, step + head) | MACs / 128-token review | host TFLM ms / 128-token "
                  "review | operators |", "|---:|---:|---:|---:|---:|---:|---|",
                  f"| {flash} | {_bytes_or_missing(tables)} | "
                  f"{_bytes_or_missing(fw.get('total'))} | "
                  f"{d['arena_bytes']:,} B | {d['macs_per_128_tokens']:,} | "
                  f"{d['host_tflm_ms_per_128_tokens']:.2f} | "
                  f"{', '.join(sorted(set(d['ops']['step']) | set(d['ops']['head'])))} |", "",
                  f"Label agreement with the float student it came from: "
                  f"{100 * int8['test'].get('agreement', float('nan')):.2f}% on the test split "
                  f"(largest probability difference "
                  f"{int8['test'].get('max_abs_prob_diff', float('nan')):.3f}).", "",
                  "The int8 rows run the exact `.tflite` bytes in the TensorFlow Lite Micro "
                  "interpreter, token by token (`pipeline/quantize.py`; the step model's sigmoid "
                  "and tanh are 256-entry int8 lookup tables, `pipeline/lut.py`). Host ms: best "
                  "of 20 runs of one 128-token review. Arenas: the minimum each "
                  "interpreter needs, found by bisection on this 64-bit host, added up (both live "
                  "on the device). Flash totals are the generated firmware arrays "
                  "(`firmware_export` stage, `pipeline/export.py`). ESP32-S3 estimate: "
                  f"{_s3_estimate(d['macs_per_128_tokens'])}.", ""]
    names = sorted({k for _, m, _ in models for k in m.get("heldout", {})})
    if names:
        lines += ["## Held-out sets (accuracy / balanced accuracy / F1, %)", "",
                  "| set | n | " + " | ".join(n for n, _, _ in models) + " |",
                  "|---|---:|" + "---|" * len(models)]
        for s in names:
            cells, n = [], MISSING
            for _, m, _ in models:
                h = m.get("heldout", {}).get(s)
                if h is None:
                    cells.append(MISSING)
                    continue
                n = str(h["n"])
                cells.append(" / ".join(_fmt(k, h[k]) for k in ("accuracy", "balanced_accuracy",
                                                                  "f1")))
            lines.append(f"| {s} | {n} | " + " | ".join(cells) + " |")
        lines.append("")
    if peer:
        a, b = peer["stopwords_kept"]["test"], peer["stopwords_removed"]["test"]
        lines += ["## Stopword removal (measured once, with the TF-IDF peer)", "",
                  "Same split, same normalization, same C; negations are never removed.", "",
                  metrics_table([("stopwords kept (default)", a), ("stopwords removed", b)],
                                name_header="TF-IDF + LR"), ""]
    if history:
        lines += ["## Teacher training", "", "| epoch | loss | acc | val loss | val acc | s |",
                  "|---:|---:|---:|---:|---:|---:|"]
        for h in history["history"]:
            mark = " (best)" if h["epoch"] == history["best_epoch"] else ""
            lines.append(f"| {h['epoch']}{mark} | {h['loss']:.4f} | {100 * h['accuracy']:.2f} | "
                         f"{h['val_loss']:.4f} | {100 * h['val_accuracy']:.2f} | "
                         f"{h['seconds']:.0f} |")
        total = sum(h["seconds"] for h in history["history"])
        lines += ["", f"Training time: {total / 60:.1f} min on this machine.", ""]
    if models:
        _plot_roc_points({n.split(" (")[0]: m["test"] for n, m, _ in models}, run_dir / "roc.png",
                         "ROC — test split")
    report = run_dir / "report.md"
    tmp = report.with_suffix(".md.tmp")
    tmp.write_text("\n".join(lines) + "\n")
    tmp.replace(report)
    return report


PUBLISHED = ("report.md", "config.json", "*.png", "*/metrics.json", "*/stats.json",
             "*/history.json", "*/stage.json", "*/*.png")


def publish_report(run_dir: Path, dest: Path) -> list[Path]:
    """Copy the report, metrics, stats and plots (never data or model files) to ``dest``."""
    import shutil

    run_dir, dest = Path(run_dir), Path(dest)
    copied = []
    for pattern in PUBLISHED:
        for src in sorted(run_dir.glob(pattern)):
            if src.parent.name.startswith(".") or src.parent.name == "data" and src.name != "stats.json":
                continue
            target = dest / src.relative_to(run_dir)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, target)
            copied.append(target)
    return copied
