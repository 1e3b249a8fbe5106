"""Load a model directory as a function from review strings to P(positive).

A model directory holds ``model.json`` (which runtimes it supports and their files), the tokenizer
(``tokenizer.model``, ``tokenizer.json``) and the model files themselves. ``keras`` loads the float
model (TensorFlow); ``tflm`` and ``tflite`` run an int8 release through the device loop
(:mod:`pipeline.device.runtime`; ``tflm`` needs no TensorFlow).

:func:`load_judge` adds the rule for reviews the model cannot judge
(:func:`pipeline.text.tokenizer.no_verdict_reason`): they get a reason instead of a probability.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.text.tokenizer import Tokenizer

RUNTIMES = ("keras", "tflite", "tflm", "firmware")
FIRMWARE_FROM = "tflm"  # a release that offers tflm runs in the firmware build too
MODEL_INFO = "model.json"

Predictor = Callable[[Sequence[str]], np.ndarray]


class ModelDirError(ValueError):
    """The folder is not a usable model directory for the runtime asked for."""


@dataclass(frozen=True)
class Verdict:
    """P(positive) of one review, or None and the ``reason`` the model could not judge it."""

    p_positive: float | None
    reason: str | None = None

    def label(self, threshold: float = 0.5) -> str:
        """``positive``, ``negative`` or ``unknown`` (no probability)."""
        if self.p_positive is None:
            return "unknown"
        return "positive" if self.p_positive >= threshold else "negative"


def _model_info(model_dir: Path) -> tuple[dict, dict[str, str]]:
    """``model.json`` of ``model_dir`` and the runtimes it offers (``firmware`` wherever
    ``FIRMWARE_FROM`` is); :class:`ModelDirError` when it is missing or unreadable."""
    info_path = Path(model_dir) / MODEL_INFO
    if not info_path.is_file():
        raise ModelDirError(
            f"{model_dir} is not a model directory (no {MODEL_INFO}); point at a stage output "
            "such as runs/full/teacher or models/release"
        )
    try:
        info = json.loads(info_path.read_text())
        offered = dict(info["runtimes"])
    except (ValueError, KeyError, TypeError, OSError) as e:
        raise ModelDirError(f"{info_path}: unreadable ({e}); re-copy the model directory") from e
    if FIRMWARE_FROM in offered:
        offered.setdefault("firmware", offered[FIRMWARE_FROM])
    return info, offered


def default_runtime(model_dir: Path) -> str:
    """The runtime ``pipeline.predict`` uses without ``--runtime``: ``keras`` where the folder has a
    Keras model, else ``tflm`` (an int8 release folder), else the first it offers; ``keras`` when
    ``model.json`` cannot be read (:func:`check_model_dir` then says why)."""
    try:
        offered = _model_info(model_dir)[1]
    except ModelDirError:
        return "keras"
    for runtime in ("keras", "tflm"):
        if runtime in offered:
            return runtime
    return next(iter(offered), "keras")


def check_model_dir(model_dir: Path, runtime: str = "keras") -> dict:
    """``model.json`` of ``model_dir``; :class:`ModelDirError` when it is no model directory, lacks
    the tokenizer or has no model for ``runtime``. Cheap: loads no model."""
    model_dir = Path(model_dir)
    info, offered = _model_info(model_dir)
    if runtime not in offered:
        raise ModelDirError(
            f"{model_dir} has no {runtime!r} model; it offers: {', '.join(offered)} (--runtime)"
        )
    missing = [n for n in (Tokenizer.MODEL_FILE, Tokenizer.CONFIG_FILE, offered[runtime])
               if not (model_dir / n).is_file()]
    if missing:
        raise ModelDirError(f"{model_dir}: missing {', '.join(missing)}; re-copy the model directory")
    return info


def _load(model_dir: Path, runtime: str) -> tuple[Tokenizer, Predictor]:
    """The tokenizer and a texts -> P(positive) function for ``runtime``."""
    model_dir = Path(model_dir)
    info = check_model_dir(model_dir, runtime)
    tok = Tokenizer.load(model_dir)
    if runtime == "firmware":  # the firmware's own C tokenizer, step loop and TFLM (native build)
        from pipeline.device.native import load_predictor as firmware_predictor

        return tok, firmware_predictor(model_dir)
    if runtime == "keras":
        from pipeline.nn.models import load_model
        from pipeline.nn.train import predict_proba

        model = load_model(model_dir / info["runtimes"]["keras"])
        return tok, lambda texts: predict_proba(model, tok.ids(texts))
    from pipeline.device.runtime import load_tflm_predictor

    predict_ids = load_tflm_predictor(model_dir, runtime)
    return tok, lambda texts: predict_ids(tok.ids(texts))


def load_predictor(model_dir: Path, runtime: str = "keras") -> Predictor:
    """A function from review strings to P(positive) for the model in ``model_dir``."""
    return _load(model_dir, runtime)[1]


def load_judge(model_dir: Path, runtime: str = "keras") -> Callable[[Sequence[str]], list[Verdict]]:
    """A function from review strings to :class:`Verdict` s: P(positive), or a reason instead for
    reviews with nothing to judge (no words, or only characters the tokenizer does not know)."""
    tok, predict = _load(model_dir, runtime)

    def judge(texts: Sequence[str]) -> list[Verdict]:
        reasons = [tok.no_verdict_reason(r) for r in tok.ids(texts)]
        keep = [t for t, why in zip(texts, reasons, strict=True) if why is None]
        probs = iter(np.asarray(predict(keep), dtype=np.float64).reshape(-1).tolist() if keep else [])
        return [Verdict(None, why) if why else Verdict(next(probs)) for why in reasons]

    return judge
