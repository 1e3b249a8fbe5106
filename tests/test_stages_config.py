"""Stage bookkeeping and the typed configuration."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline import stages
from pipeline.config import Config, override, preset


def test_stage_runs_once_and_reruns_when_inputs_change(tmp_path: Path) -> None:
    calls: list[str] = []

    def make(tag: str):
        def fn(out: Path, work: Path) -> dict:
            calls.append(tag)
            (out / "x.txt").write_text(tag)
            return {"tag": tag}
        return fn

    d1, k1 = stages.run_stage(tmp_path, "s", {"a": 1}, make("first"))
    d2, k2 = stages.run_stage(tmp_path, "s", {"a": 1}, make("second"))
    assert calls == ["first"] and k1 == k2 and (d2 / "x.txt").read_text() == "first"
    d3, k3 = stages.run_stage(tmp_path, "s", {"a": 2}, make("third"))
    assert calls == ["first", "third"] and k3 != k1 and (d3 / "x.txt").read_text() == "third"
    assert json.loads((d3 / "stage.json").read_text())["summary"] == {"tag": "third"}


def test_failed_stage_publishes_nothing_and_keeps_work(tmp_path: Path) -> None:
    def boom(out: Path, work: Path) -> dict:
        work.mkdir(parents=True, exist_ok=True)
        (work / "progress").write_text("epoch 1")
        (out / "partial").write_text("half")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        stages.run_stage(tmp_path, "s", {"a": 1}, boom)
    assert not (tmp_path / "s").exists()
    seen: list[str] = []

    def resume(out: Path, work: Path) -> dict:
        seen.append((work / "progress").read_text())
        assert not (out / "partial").exists()
        return {}

    stages.run_stage(tmp_path, "s", {"a": 1}, resume)
    assert seen == ["epoch 1"] and (tmp_path / "s" / "stage.json").exists()
    assert not list(tmp_path.glob(".s.*"))


def test_fingerprint_is_stable_and_sensitive() -> None:
    cfg = preset("smoke")
    assert stages.fingerprint(cfg) == stages.fingerprint(preset("smoke"))
    assert stages.fingerprint(cfg) != stages.fingerprint(override(cfg, ["teacher.units=7"]))


def test_presets_and_overrides() -> None:
    full, smoke = preset("full"), preset("smoke")
    assert full == Config() and smoke.data.max_reviews is not None
    cfg = override(full, ["teacher.units=64", "data.balance=true", "data.max_reviews=none",
                          "tokenizer.truncate=tail", "train.learning_rate=0.01"])
    assert cfg.teacher.units == 64 and cfg.data.balance is True and cfg.data.max_reviews is None
    assert cfg.tokenizer.truncate == "tail" and cfg.train.learning_rate == 0.01
    for bad in ("teacher.nope=1", "nosection.x=1", "teacher.units", "data.balance=maybe"):
        with pytest.raises(ValueError):
            override(full, [bad])
    with pytest.raises(ValueError, match="unknown preset"):
        preset("huge")
