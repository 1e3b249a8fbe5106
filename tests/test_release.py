"""The committed release model (models/release): what a fresh clone runs with ``--runtime tflm``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pipeline.device import gru
from pipeline.device.arena import MIN_ARENA_FLOOR, _ArenaProber
from pipeline.device.flatbuf import float_ops, op_report, op_set
from pipeline.device.release import QUANT_FILE, load_release

RELEASE = Path(__file__).resolve().parents[1] / "models" / "release"


def _fits(model: bytes, size: int) -> bool:
    """Whether the TFLM interpreter builds and invokes ``model`` in ``size`` bytes."""
    with _ArenaProber(model) as probe:
        return probe.fits(size)


@pytest.fixture(scope="module")
def release() -> dict:
    assert (RELEASE / QUANT_FILE).exists(), "models/release is part of the repository"
    return load_release(RELEASE)


def test_release_is_full_int8_and_loads_with_the_stated_arena(release) -> None:
    meta = release["meta"]
    custom = meta["step"].get("custom_op")
    for name in ("step", "head"):
        blob = release[name]
        assert float_ops(blob) == []
        if name == "step" and custom is not None:
            # one fused operator that the Python interpreter does not run: its arena is measured on
            # the firmware builds (tests/test_native_firmware.py), its arithmetic is the NumPy spec
            assert op_set(blob) == [gru.OP_NAME]
            assert gru.spec_version(gru.read_step_flatbuffer(blob)) == custom["spec_version"]
            continue
        arena = meta[name]["arena_bytes"]
        assert _fits(blob, arena)
        assert arena <= MIN_ARENA_FLOOR or not _fits(blob, arena - 16)  # and no less
    if custom is None:  # builtin operators: sigmoid and tanh as lookup tables (pipeline.device.lut)
        step_ops = [o["op"] for o in op_report(release["step"])]
        assert "LOGISTIC" not in step_ops and "TANH" not in step_ops
        assert step_ops.count("CAST") == 6 and step_ops.count("GATHER") == 7
    info = json.loads((RELEASE / "model.json").read_text())
    assert info["device"]["arena_bytes"] == meta["step"]["arena_bytes"] + meta["head"]["arena_bytes"]
    assert info["device"]["flash_bytes"] == len(release["step"]) + len(release["head"])


def test_release_predicts_real_reviews(real_slice, tmp_path, capsys) -> None:
    """``python -m pipeline.predict models/release FILE --runtime tflm`` on labelled real reviews."""
    from pipeline import data, predict
    from pipeline.report.predictors import load_predictor

    rows = list(data.iter_reviews(real_slice["amazon"]))[:150]
    path = tmp_path / "reviews.jsonl"
    path.write_text("".join(json.dumps({"text": t, "label": y}) + "\n" for t, y in rows))
    assert predict.main([str(RELEASE), str(path), "--runtime", "tflm", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["n"] == len(rows) and out["accuracy"] > 0.85
    p_tflite = load_predictor(RELEASE, "tflite")([t for t, _ in rows])
    p_tflm = load_predictor(RELEASE, "tflm")([t for t, _ in rows])
    assert np.mean((p_tflite >= 0.5) == (p_tflm >= 0.5)) > 0.95  # two interpreters, same labels
