"""Second classic peer: a fastText bigram classifier and its quantized ``.ftz``, same split.

Text: the pipeline's normalization (spec v1, :func:`pipeline.text.tokenizer.normalize`) with punctuation
split off words (fastText tokenizes on whitespace only). Labels ``__label__0`` / ``__label__1``.
Epochs and learning rate are picked on the validation split (accuracy; ties -> the first setting of
the grid). Training uses one thread and a fixed seed, so a run is deterministic.

Probabilities under numpy 2. The package is ``fasttext-wheel`` 0.9.2 (the official fastText
0.9.2 bindings as a wheel; ``fasttext`` 0.9.3 on PyPI ships no wheel). Its Python ``predict`` is
broken under numpy 2: for one text it raises (``np.array(probs, copy=False)``) and for a list of
texts it returns every label's probability equal to the top label's, so P(positive) is silently
wrong for every review whose top label is negative. The numpy-2 fork ``fasttext-numpy2`` 0.10.4
fixes ``predict`` but its training is not reproducible (34 different models from 40 runs with one
thread and a fixed seed, and an occasional "Encountered NaN"), so it is not used. What is used is
the C++ binding's single-line call ``model.f.predict(line + "\n", 2, 0.0, "strict")``, which
returns plain ``(probability, label)`` pairs with no numpy involved (:func:`predict_proba`;
P(positive) = ``p1 / (p0 + p1)``). It is checked against :func:`reference_proba`, which recomputes
``softmax(O · h)`` from the float model's own matrices (``h`` the mean of the input rows of the
line's words, bigram buckets and end-of-line token, hashed as fastText does) without calling
``predict``: the stage records the largest difference in ``metrics.json`` and stops if it exceeds
``PROB_TOLERANCE`` (they agree within 1e-5: fastText returns ``exp(log(p + 1e-5))``). The same
call serves the quantized ``.ftz``, whose matrices cannot be read back.

Outputs (``out_dir``): ``model.bin`` (float), ``model.ftz`` (quantized: product quantization of the
input matrix, vocabulary pruned to ``cutoff`` rows, retrained), ``metrics.json``::

    {"epoch", "lr", "val_accuracy_by_setting": {"epoch=E lr=L": acc},
     "probability_check": {"reviews", "max_abs_diff", "wrapper_predict_max_abs_diff", "package",
                           "used"},
     "bigram": {"test", "val", "heldout": {...}, "size_bytes", "words", "buckets", "dim"},
     "quantized": {... same keys ...}}
"""

from __future__ import annotations

import itertools
import logging
import os
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.config import FastTextConfig
from pipeline.progress import Progress, track

log = logging.getLogger(__name__)

LABELS = ("__label__0", "__label__1")
PROB_TOLERANCE = 1e-4
_PUNCT = re.compile(r"""([.,!?;:()\[\]{}"/*&#@$%^=+<>|~_]|-{2,}|\.{2,})""")
_SPACES = re.compile(r"\s+")


def ft_text(text: str) -> str:
    """One review as fastText sees it: normalized, punctuation split off, on one line."""
    from pipeline.text.tokenizer import normalize

    return _SPACES.sub(" ", _PUNCT.sub(r" \1 ", normalize(text))).strip()


def write_train_file(path: Path, rows: Iterable[tuple[str, int]]) -> int:
    """fastText's supervised input: ``__label__Y text`` per line; returns the rows written.
    ``rows`` may be a stream (one row in memory at a time)."""
    n = 0
    with open(path, "w", encoding="utf-8") as f:
        for text, y in track(rows, desc="fastText training file", unit="reviews"):
            t = ft_text(text)
            if t:
                f.write(f"{LABELS[int(y)]} {t}\n")
                n += 1
    return n


def train(train_file: Path, cfg: FastTextConfig, epoch: int, lr: float):
    import fasttext

    return fasttext.train_supervised(
        input=str(train_file), epoch=int(epoch), lr=float(lr), wordNgrams=cfg.word_ngrams,
        dim=cfg.dim, bucket=cfg.bucket, minCount=cfg.min_count, loss="softmax",
        thread=cfg.threads, seed=cfg.seed, verbose=0)


def predict_proba(model, texts: Sequence[str]) -> np.ndarray:
    """P(positive) per text: the binding's single-line predict, normalised over the two labels.

    ``model.predict`` of the Python wrapper is not used: under numpy 2 it is wrong for lists and
    raises for single texts with ``fasttext-wheel`` 0.9.2 (see the module docstring).
    """
    return predict_lines(model, [ft_text(t) for t in texts])


def predict_lines(model, lines: Sequence[str]) -> np.ndarray:
    """:func:`predict_proba` of lines already in fastText's form (:func:`ft_text`)."""
    out = np.empty(len(lines), dtype=np.float64)
    for i, line in enumerate(lines):
        pairs = model.f.predict(line + "\n", 2, 0.0, "strict")
        d = {label: float(p) for p, label in pairs}
        p0, p1 = d.get(LABELS[0], 0.0), d.get(LABELS[1], 0.0)
        out[i] = p1 / (p0 + p1) if p0 + p1 > 0 else 0.5
    return out


def predict_proba_wrapper(model, texts: Sequence[str]) -> np.ndarray:
    """P(positive) from the Python wrapper's list ``predict`` (broken under numpy 2; for the check)."""
    labels, probs = model.predict([ft_text(t) for t in texts], k=2)
    out = np.empty(len(texts), dtype=np.float64)
    for i, (lab, p) in enumerate(zip(labels, probs, strict=True)):
        d = dict(zip(lab, np.asarray(p, dtype=np.float64), strict=True))
        p0, p1 = d.get(LABELS[0], 0.0), d.get(LABELS[1], 0.0)
        out[i] = p1 / (p0 + p1) if p0 + p1 > 0 else 0.5
    return out


def _fnv1a(token: str) -> int:
    """fastText's ``Dictionary::hash``: 32-bit FNV-1a over the UTF-8 bytes as *signed* chars."""
    h = 2166136261
    for b in token.encode("utf-8"):
        h ^= (b - 256 if b > 127 else b) & 0xFFFFFFFF
        h = (h * 16777619) & 0xFFFFFFFF
    return h


def _input_rows(model, line: str) -> list[int]:
    """Rows of the input matrix fastText averages for one line (``Dictionary::getLine``).

    Tokens are the line's words plus the end-of-line token ``</s>``; known ones add their row, and
    every run of 2..wordNgrams adjacent tokens (unknown ones included) adds the bucket row
    ``nwords + hash % bucket`` (``Dictionary::addWordNgrams``: the int32 token hashes are
    sign-extended into a 64-bit accumulator).
    """
    args = model.f.getArgs()
    nwords = len(model.words)
    tokens = [*(line.split() if line else []), "</s>"]
    rows = [w for w in (model.get_word_id(t) for t in tokens) if w >= 0]
    mask = (1 << 64) - 1
    hashes = [h - (1 << 32) if h >= 1 << 31 else h for h in map(_fnv1a, tokens)]
    if args.bucket > 0:
        for i in range(len(hashes)):
            h = hashes[i] & mask
            for j in range(i + 1, min(len(hashes), i + args.wordNgrams)):
                h = (h * 116049371 + hashes[j]) & mask
                rows.append(nwords + h % args.bucket)
    return rows


def reference_proba(model, texts: Sequence[str]) -> np.ndarray:
    """P(positive) computed independently of ``predict``: ``softmax(O · mean(input rows))``.

    Float (not quantized) models only: it reads the input and output matrices.
    """
    inp = model.get_input_matrix()
    out_m = np.asarray(model.get_output_matrix(), dtype=np.float64)
    pos = model.get_labels().index(LABELS[1])
    res = np.empty(len(texts), dtype=np.float64)
    for i, t in enumerate(texts):
        h = inp[_input_rows(model, ft_text(t))].astype(np.float64).mean(axis=0)
        logits = out_m @ h
        e = np.exp(logits - logits.max())
        res[i] = e[pos] / e.sum()
    return res


def check_probabilities(model, texts: Sequence[str]) -> dict:
    """Largest ``|P(positive) - reference_proba|`` of :func:`predict_proba` (used) and of the
    wrapper's list ``predict`` (not used) over ``texts``."""
    if not texts:
        return {"reviews": 0, "max_abs_diff": 0.0, "wrapper_predict_max_abs_diff": 0.0}
    ref = reference_proba(model, texts)
    try:
        wrapper: float | None = float(np.max(np.abs(predict_proba_wrapper(model, texts) - ref)))
    except (ValueError, TypeError):
        wrapper = None
    return {"reviews": len(texts),
            "max_abs_diff": float(np.max(np.abs(predict_proba(model, texts) - ref))),
            "wrapper_predict_max_abs_diff": wrapper}


def _model_info(model, path: Path) -> dict:
    args = model.f.getArgs()
    return {"size_bytes": path.stat().st_size, "file": path.name, "words": len(model.words),
            "buckets": int(args.bucket), "dim": int(args.dim)}


def fit_grid(train_file: Path, cfg: FastTextConfig,
             val_accuracy: Callable[[Any], float]) -> tuple[dict[str, float], tuple[int, float, Any]]:
    """Train every ``epochs`` x ``lrs`` setting on ``train_file``; returns the validation accuracy
    of each (``"epoch=E lr=L"``) and ``(epoch, lr, model)`` of the most accurate (first on ties)."""
    grid = [(e, lr) for e in cfg.epochs for lr in cfg.lrs]
    if not grid:
        raise ValueError("empty fasttext.epochs x fasttext.lrs grid")
    scores: dict[str, float] = {}
    best = None
    # progress in epochs trained: a setting's cost grows with its epochs
    with Progress(sum(e for e, _ in grid), "fastText grid", "epochs") as progress:
        for epoch, lr in grid:
            model = train(train_file, cfg, epoch, lr)
            progress.update(epoch)
            key = f"epoch={epoch} lr={lr:g}"
            scores[key] = val_accuracy(model)
            log.info("fastText peer: %s val accuracy %.4f", key, scores[key])
            if best is None or scores[key] > best[0]:
                best = (scores[key], epoch, lr, model)
    return scores, best[1:]


def run_fasttext_peer(
    data_dir: Path, out_dir: Path, cfg: FastTextConfig = FastTextConfig(),  # noqa: B008
    heldout: Path | None = None,
) -> dict:
    """Stage: fastText bigram peer (+ quantized ``.ftz``) on the pipeline's split; writes metrics."""
    import fasttext

    from pipeline.data import iter_jsonl, read_jsonl
    from pipeline.report.metrics import eval_sets, evaluate_predictor, write_json

    data_dir, out_dir = Path(data_dir), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    seen: set[int] = set()

    def train_rows() -> Iterator[tuple[str, int]]:  # one row in memory at a time
        for t, y in iter_jsonl(data_dir / "train.jsonl"):
            seen.add(int(y))  # type: ignore[arg-type]  # the split's rows are labelled
            yield t, int(y)  # type: ignore[arg-type]

    train_file = out_dir / ".train.txt"
    n = write_train_file(train_file, train_rows())
    if seen != {0, 1}:
        train_file.unlink()
        raise ValueError(f"{data_dir}/train.jsonl: labels must contain both classes 0 and 1")
    val = read_jsonl(data_dir / "val.jsonl")
    val_lines, y_val = [ft_text(t) for t, _ in val], np.array([int(y) for _, y in val])
    try:
        scores, (epoch, lr, model) = fit_grid(
            train_file, cfg, lambda m: float(np.mean((predict_lines(m, val_lines) >= 0.5) == y_val)))
        sets = eval_sets(data_dir, heldout)

        def predictor(m):  # the sets are read chunk by chunk: each chunk normalized when scored
            return lambda texts: predict_lines(m, [ft_text(t) for t in texts])

        check = check_probabilities(model, [t for t, _ in itertools.islice(sets["test"], 2000)])
        log.info("fastText peer: P(positive) vs matrix softmax on %d reviews: max |diff| %.2e "
                 "(the wrapper's list predict: %s)", check["reviews"], check["max_abs_diff"],
                 check["wrapper_predict_max_abs_diff"])
        if check["max_abs_diff"] > PROB_TOLERANCE:
            raise RuntimeError(
                f"fastText probabilities differ from softmax(O.h) by {check['max_abs_diff']:.3g}; "
                "is a different fasttext build installed? (pyproject pins fasttext-wheel)")
        results: dict = {
            "epoch": epoch, "lr": lr, "train_reviews": n, "val_accuracy_by_setting": scores,
            "config": asdict(cfg),
            "probability_check": {**check, "package": _package(),
                                  "used": "binding f.predict per line, p1 / (p0 + p1)"},
        }
        bin_path = out_dir / "model.bin"
        model.save_model(str(bin_path))
        results["bigram"] = {**evaluate_predictor(predictor(model), sets),
                             **_model_info(model, bin_path)}
        log.info("fastText peer: quantizing (cutoff %d, retrain)", cfg.quant_cutoff)
        model.quantize(input=str(train_file), retrain=True, cutoff=cfg.quant_cutoff, qnorm=True,
                       dsub=cfg.quant_dsub, epoch=int(epoch), lr=float(lr), thread=cfg.threads,
                       verbose=0)
        ftz_path = out_dir / "model.ftz"
        model.save_model(str(ftz_path))
        qmodel = fasttext.load_model(str(ftz_path))
        results["quantized"] = {**evaluate_predictor(predictor(qmodel), sets),
                                **_model_info(qmodel, ftz_path)}
    finally:
        train_file.unlink(missing_ok=True)
    write_json(out_dir / "metrics.json", results)
    return {"epoch": epoch, "lr": lr,
            "test_accuracy": results["bigram"]["test"]["accuracy"],
            "ftz_test_accuracy": results["quantized"]["test"]["accuracy"],
            "bin_bytes": results["bigram"]["size_bytes"],
            "ftz_bytes": results["quantized"]["size_bytes"]}


def run_fasttext_stream(stream_dir: Path, out_dir: Path, cfg: FastTextConfig,
                        chunk: int = 10_000) -> dict:
    """The fastText peer on a :mod:`pipeline.stream` folder, without a split in memory.

    The training file is written from the shards' text one chunk at a time and fastText trains
    from it on disk, as it does natively; the ``epochs`` x ``lrs`` grid is scored on ``val`` and
    the chosen model on ``val`` and ``test``, chunk by chunk. Unlike :func:`run_fasttext_peer`:
    no quantized ``.ftz`` and no held-out sets. Writes ``out_dir/metrics.json``.
    """
    from pipeline.data.stream import split_predictions, text_chunks
    from pipeline.report.metrics import compute_metrics, write_json

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    def scored(model, split: str) -> tuple[np.ndarray, np.ndarray]:
        return split_predictions(stream_dir, split, chunk, lambda t: predict_proba(model, t))

    def val_accuracy(model) -> float:
        p, y = scored(model, "val")
        return float(np.mean((p >= 0.5) == (y >= 0.5)))

    train_file = out_dir / ".train.txt"
    try:
        n = write_train_file(train_file, ((t, int(y)) for texts, ys in
                                          text_chunks(stream_dir, "train", chunk)
                                          for t, y in zip(texts, ys, strict=True)))
        scores, (epoch, lr, model) = fit_grid(train_file, cfg, val_accuracy)
    finally:
        train_file.unlink(missing_ok=True)
    results: dict = {"epoch": epoch, "lr": lr, "train_reviews": n,
                     "val_accuracy_by_setting": scores, "config": asdict(cfg)}
    for split in ("val", "test"):
        p, y = scored(model, split)
        results[split] = compute_metrics(y.tolist(), p)
    write_json(out_dir / "metrics.json", results)
    return {s: results[s]["accuracy"] for s in ("val", "test")}


def _package() -> str:
    from importlib.metadata import PackageNotFoundError, version

    for name in ("fasttext-wheel", "fasttext", "fasttext-numpy2"):
        try:
            return f"{name}=={version(name)}"
        except PackageNotFoundError:
            continue
    return "unknown"


def main(argv: list[str] | None = None) -> int:
    import argparse
    import json

    ap = argparse.ArgumentParser(prog="python -m pipeline.fasttext_peer",
                                 description="fastText bigram peer on a pipeline data folder")
    ap.add_argument("data_dir", type=Path, help="folder with {train,val,test}.jsonl")
    ap.add_argument("out_dir", type=Path)
    ap.add_argument("--heldout", type=Path)
    args = ap.parse_args(argv)
    from pipeline import setup_logging

    setup_logging()
    print(json.dumps(run_fasttext_peer(args.data_dir, args.out_dir, FastTextConfig(),
                                       args.heldout), indent=2))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    raise SystemExit(main())
