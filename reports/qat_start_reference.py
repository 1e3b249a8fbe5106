"""A QAT stage that kept its starting weights, saved as the stage saves it since 2026-12-06.

    python reports/qat_start_reference.py RUN

Redoes the stage's last step on ``RUN/qat`` (written before, with the float table): the start's
embedding as the device stores it in ``model.keras``, the float table beside it; converts that as
the ``int8`` stage does and checks the step and head files are byte for byte ``RUN/int8``'s; prints
the int8 release's label agreement with the old and the new float reference and their accuracies,
on validation and test.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

import pipeline  # noqa: F401  (selects tf_keras before TensorFlow loads)
from pipeline.compress.qat import save_float_reference
from pipeline.device.convert import LATENT_TABLE, quantize_student
from pipeline.device.runtime import load_tflm_predictor
from pipeline.nn.models import load_model
from pipeline.nn.train import labelled_ids, predict_proba
from pipeline.text.tokenizer import Tokenizer


def main(run: Path) -> None:
    q = run / "qat"
    summary = json.loads((q / "stage.json").read_text())["summary"]
    if summary["kept"] != "start" or (q / LATENT_TABLE).exists():
        sys.exit(f"{q} is not a QAT output that kept its start with the float table")
    bits = summary["embedding_bits"]
    start = load_model(q / "model.keras")
    splits = labelled_ids(run / "data", Tokenizer.load(q), ("val", "test"))
    old = {s: predict_proba(start, x) for s, (x, _) in splits.items()}
    work = Path(tempfile.mkdtemp())
    try:
        shutil.copytree(q, work / "qat")
        save_float_reference(start, work / "qat", bits)
        new = {s: predict_proba(start, x) for s, (x, _) in splits.items()}
        quantize_student(work / "qat", run / "data", work / "int8", 500, bits)
        for f in ("step.tflite", "head.tflite"):
            same = (work / "int8" / f).read_bytes() == (run / "int8" / f).read_bytes()
            print(f"{f}: {'the same bytes as' if same else 'DIFFERENT from'} {run / 'int8' / f}")
    finally:
        shutil.rmtree(work)
    int8 = load_tflm_predictor(run / "int8")
    for s, (x, y) in splits.items():
        p = int8(x)

        def agree(a: np.ndarray, b: np.ndarray) -> str:
            return f"{100 * np.mean((a >= 0.5) == (b >= 0.5)):.2f}%"

        print(f"{s}: int8 agrees with the old reference on {agree(p, old[s])}, the new on "
              f"{agree(p, new[s])}; accuracy old {agree(old[s], y)}, new {agree(new[s], y)}, "
              f"int8 {agree(p, y)}")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
