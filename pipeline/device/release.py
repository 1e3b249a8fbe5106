"""The int8 release folder: ``step.tflite``, ``head.tflite`` and ``quant.json`` (+ tokenizer).

``quant.json`` holds the constants the device loop needs (:mod:`pipeline.device.loop`): state /
pooled / prob scale and zero point, the tensor position of every input and output in each model,
arena sizes, MACs, the optional ``id_map`` of a compacted embedding table, and for a custom-operator
step (:mod:`pipeline.device.gru`) ``step.custom_op``: its name and spec version. No TensorFlow.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

STEP_FILE, HEAD_FILE, QUANT_FILE = "step.tflite", "head.tflite", "quant.json"
STEP_INPUTS, STEP_OUTPUTS = ("tokens", "h_fwd", "h_bwd"), ("h_fwd", "h_bwd")
HEAD_INPUTS, HEAD_OUTPUTS = ("pooled",), ("prob",)
FORMAT_VERSION = 2  # of quant.json and the step / head interface the device loop relies on
# 2: ``step.custom_op`` (name, spec version, ...) when the step is one custom operator; the rest is
# format 1, which stays loadable (the builtin-operator step of the first releases)
READABLE_FORMATS = (1, 2)
RELEASE_FILES = (STEP_FILE, HEAD_FILE, QUANT_FILE, "model.json", "tokenizer.model", "tokenizer.json")


def write_release(out_dir: Path, converted: dict[str, Any]) -> None:
    """Write ``step.tflite``, ``head.tflite`` and ``quant.json`` into ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / STEP_FILE).write_bytes(converted["step"])
    (out_dir / HEAD_FILE).write_bytes(converted["head"])
    (out_dir / QUANT_FILE).write_text(json.dumps(converted["meta"], indent=2, sort_keys=True))


def load_release(model_dir: Path) -> dict[str, Any]:
    """Read what :func:`write_release` wrote back into :func:`convert_int8`'s dict."""
    model_dir = Path(model_dir)
    meta = json.loads((model_dir / QUANT_FILE).read_text())
    if meta.get("format") not in READABLE_FORMATS:
        raise ValueError(f"{model_dir / QUANT_FILE}: format {meta.get('format')} is not one of "
                         f"{READABLE_FORMATS}")
    return {"step": (model_dir / meta["step"]["file"]).read_bytes(),
            "head": (model_dir / meta["head"]["file"]).read_bytes(), "meta": meta}


def copy_release(model_dir: Path, dest: Path) -> list[Path]:
    """Copy an int8 model folder's release files (models, ``quant.json``, tokenizer) to ``dest``."""
    model_dir, dest = Path(model_dir), Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    for name in RELEASE_FILES:
        tmp = dest / f".{name}.tmp"
        shutil.copyfile(model_dir / name, tmp)
        tmp.replace(dest / name)
    return [dest / n for n in RELEASE_FILES]
