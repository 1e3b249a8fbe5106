"""Load a model directory as a function from review strings to P(positive).

A model directory holds ``model.json`` (which runtimes it supports and their files), the tokenizer
(``tokenizer.model``, ``tokenizer.json``) and the model files themselves. ``keras`` loads the float
model (TensorFlow); ``tflm`` and ``tflite`` run an int8 release through the device loop
(:mod:`pipeline.device.runtime`; ``tflm`` needs no TensorFlow).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from pipeline.text.tokenizer import Tokenizer

RUNTIMES = ("keras", "tflite", "tflm")
MODEL_INFO = "model.json"

Predictor = Callable[[Sequence[str]], np.ndarray]


def load_predictor(model_dir: Path, runtime: str = "keras") -> Predictor:
    """A function from review strings to P(positive) for the model in ``model_dir``."""
    model_dir = Path(model_dir)
    info_path = model_dir / MODEL_INFO
    if not info_path.exists():
        raise FileNotFoundError(
            f"{model_dir} is not a model directory (no {MODEL_INFO}); point at a stage output "
            "such as runs/full/teacher or models/release"
        )
    info = json.loads(info_path.read_text())
    if runtime not in info.get("runtimes", {}):
        raise ValueError(
            f"{model_dir} has no {runtime!r} model; it offers: {', '.join(info['runtimes'])}"
        )
    tok = Tokenizer.load(model_dir)
    if runtime == "keras":
        from pipeline.nn.models import load_model
        from pipeline.nn.train import predict_proba

        model = load_model(model_dir / info["runtimes"]["keras"])

        def keras_predict(texts: Sequence[str]) -> np.ndarray:
            return predict_proba(model, tok.ids(texts))

        return keras_predict
    from pipeline.device.runtime import load_tflm_predictor

    int8_predict = load_tflm_predictor(model_dir, runtime)
    return lambda texts: int8_predict(tok.ids(texts))
