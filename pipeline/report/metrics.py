"""Evaluation: binary metrics, ROC points, atomic JSON, markdown tables, the evaluation stages."""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    confusion_matrix,
    f1_score,
    precision_score,
    recall_score,
    roc_auc_score,
    roc_curve,
)

from pipeline.data import iter_jsonl, iter_reviews
from pipeline.progress import Progress
from pipeline.report.plots import plot_confusion
from pipeline.report.predictors import load_predictor

EVAL_CHUNK = 4096  # reviews per predictor call in an evaluation (the progress bar's step)

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


def fmt_cell(column: str, value: Any) -> str:
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
        cells = [fmt_cell(c, metrics.get(c)) for c in columns]
        lines.append("| " + " | ".join([str(name), *cells]) + " |")
    return "\n".join(lines) + "\n"



# ----------------------------------------------------------------------------- evaluation stages


def load_heldout(heldout: Path | None) -> dict[str, list[tuple[str, int]]]:
    """Each readable file in the held-out folder as a named labelled set (name = file stem)."""
    if heldout is None:
        return {}
    files = sorted(p for p in Path(heldout).iterdir()
                   if p.is_file() and not p.name.startswith(".") and not p.name.startswith("README"))
    return {p.name.split(".")[0]: list(iter_reviews(p)) for p in files}


class SplitFile(Iterable[tuple[str, int]]):
    """A split's ``{"text", "label"}`` lines, read again at each iteration (nothing held)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._n: int | None = None

    def __iter__(self) -> Iterator[tuple[str, int]]:
        return ((t, int(y)) for t, y in iter_jsonl(self.path))  # type: ignore[arg-type]

    def __len__(self) -> int:
        if self._n is None:
            self._n = sum(1 for _ in iter_jsonl(self.path))
        return self._n


def eval_sets(data_dir: Path, heldout: Path | None = None) -> dict[str, Any]:
    """The labelled sets every model is scored on: ``test``, ``val`` (:class:`SplitFile`, read as
    streams) and ``heldout/NAME`` per file (lists)."""
    sets: dict[str, Any] = {s: SplitFile(Path(data_dir) / f"{s}.jsonl") for s in ("test", "val")}
    sets.update({f"heldout/{k}": v for k, v in load_heldout(heldout).items()})
    return sets


def evaluate_predictor(
    predict: Callable[[Sequence[str]], np.ndarray], sets: dict[str, Any],
    reference: Callable[[Sequence[str]], np.ndarray] | None = None,
) -> dict:
    """Metrics (+ ROC points, host ms per review) on each set of :func:`eval_sets` (sized
    iterables of ``(text, label)``), read and predicted ``EVAL_CHUNK`` reviews at a time.

    With a ``reference`` predictor (the float model an int8 one came from), each set also gets
    ``agreement`` (share of equal labels at 0.5) and ``max_abs_prob_diff``.
    """
    from pipeline.text.tokenizer import chunks

    out: dict[str, Any] = {"heldout": {}}
    progress = Progress(sum(len(r) for r in sets.values()), "evaluation", "reviews")
    for name, rows in sets.items():
        probs, refs, y = [], [], []
        seconds = 0.0
        for part in chunks(rows, EVAL_CHUNK):  # chunks: bounded memory, progress on long sets
            texts = [t for t, _ in part]
            y += [int(lab) for _, lab in part]
            t0 = time.perf_counter()
            probs.append(np.asarray(predict(texts)).reshape(-1))
            seconds += time.perf_counter() - t0
            if reference is not None:
                refs.append(np.asarray(reference(texts)).reshape(-1))
            progress.update(len(part))
        prob = np.concatenate(probs) if probs else np.asarray(predict([]))
        ms = 1000 * seconds / max(len(y), 1)
        m = compute_metrics(y, prob)
        m["roc"] = roc_points(y, prob)
        m["host_ms_per_review"] = round(ms, 4)
        if reference is not None:
            ref = np.concatenate(refs) if refs else np.zeros(0)
            m["agreement"] = float(np.mean((prob >= 0.5) == (ref >= 0.5)))
            m["max_abs_prob_diff"] = float(np.max(np.abs(prob - ref)))
        if name.startswith("heldout/"):
            out["heldout"][name.split("/", 1)[1]] = m
        else:
            out[name] = m
    progress.close()
    return out


def evaluate_model_dir(
    model_dir: Path, data_dir: Path, out_dir: Path, heldout: Path | None, runtime: str,
    reference_dir: Path | None = None,
) -> dict:
    """Stage: evaluate a model directory with one runtime; writes metrics.json and PNG plots.

    ``reference_dir``: a Keras model directory to measure label agreement against (see
    :func:`evaluate_predictor`).
    """
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
