"""Stage bookkeeping and the typed configuration."""

from __future__ import annotations

import json
import os
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


def test_seconds_count_every_attempt_and_stray_folders_go(tmp_path: Path) -> None:
    import time

    def slow_then_stop(out: Path, work: Path) -> dict:
        work.mkdir(parents=True, exist_ok=True)
        time.sleep(0.3)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        stages.run_stage(tmp_path, "s", {"a": 1}, slow_then_stop)
    # a SIGKILLed attempt writes nothing at the end: it counts until its work folder last changed
    clock = next(tmp_path.glob(".s.seconds-*"))
    work = next(tmp_path.glob(".s.work-*"))
    clock.write_text(json.dumps({"seconds": json.loads(clock.read_text())["seconds"],
                                 "open": time.time() - 5.0}))
    (work / "ckpt").write_text("x")  # its last change: now, about 5 s after it started
    (tmp_path / ".other.tmp").mkdir()  # left by a killed run of another stage
    gone = stages.clean_stray(tmp_path)
    assert tmp_path / ".other.tmp" in gone and tmp_path / ".s.tmp" in gone and work not in gone
    d, _ = stages.run_stage(tmp_path, "s", {"a": 1}, lambda out, work: {})
    record = json.loads((d / "stage.json").read_text())
    assert 5.2 <= record["seconds"] < 8
    assert record["cpu_count"] == os.cpu_count()  # the report's run time table names the cores
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
    # top-level fields take field=value; "preset" is --preset's
    top = override(full, ["release_tokens=768", "calibration_reviews=300"])
    assert (top.release_tokens, top.calibration_reviews) == (768, 300)
    for bad, why in (("release_tokens=lots", "an integer"), ("preset=smoke", "section.field=value"),
                     ("teacher=3", "release_tokens=value")):
        with pytest.raises(ValueError, match=why):
            override(full, [bad])
    with pytest.raises(ValueError, match="unknown preset"):
        preset("huge")
    # the 3-star reviews are unlabeled text only while data.three_star drops them
    for policy, expected in (("drop", "three_star"), ("negative", "none"), ("positive", "none")):
        cfg = override(full, ["distill.unlabeled=three_star", f"data.three_star={policy}"])
        assert cfg.distill_unlabeled() == expected
    assert override(full, ["distill.teachers=2"]).distill.teachers == 2
    with pytest.raises(ValueError, match="distill.teachers must be at least 1"):
        override(full, ["distill.teachers=0"])


def test_set_parses_tuples_by_field_type() -> None:
    cfg = override(preset("full"), ["fasttext.epochs=5,10", "fasttext.lrs=0.1, 0.5",
                                    "fasttext.epochs=7"])
    assert cfg.fasttext.epochs == (7,) and cfg.fasttext.lrs == (0.1, 0.5)
    assert override(cfg, ["fasttext.epochs=5,10"]).fasttext.epochs == (5, 10)
    for bad, why in (("fasttext.epochs=5,x", "an integer"), ("fasttext.lrs=", "comma-separated"),
                     ("teacher.units=6.5", "an integer"), ("peer.max_features=lots", "an integer")):
        with pytest.raises(ValueError, match=why):
            override(cfg, [bad])
    assert override(cfg, ["peer.max_features=none"]).peer.max_features is None


@pytest.mark.parametrize("assignment", ["tokenizer.truncate=tial", "tokenizer.truncate=Tail",
                                        "data.three_star=neg",
                                        "teacher.init_embeddings=svd", "distribute.strategy=tpu"])
def test_set_rejects_values_outside_the_choices(assignment: str) -> None:
    field = assignment.split("=")[0]
    with pytest.raises(ValueError, match=rf"override '{field}=.*': expected one of "):
        override(preset("full"), [assignment])


def test_choices_live_in_the_dataclasses() -> None:
    from pipeline.config import DistributeConfig, TokenizerConfig, choices

    assert choices(TokenizerConfig, "truncate") == ("head", "tail")
    assert choices(DistributeConfig, "strategy") == ("default", "mirrored", "multiworker")
    assert choices(TokenizerConfig, "seq_len") is None
    with pytest.raises(ValueError, match="truncate must be one of head, tail"):
        TokenizerConfig(truncate="tial")
    assert override(preset("full"), ["student_tokenizer.truncate=tail"]).student_tokenizer.truncate \
        == "tail"


def test_until_refuses_the_outputs_it_would_skip(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from pipeline import all as pipeline_all

    with pytest.raises(SystemExit) as e:
        pipeline_all.main(["--data", str(tmp_path), "--until", "teacher", "--publish", str(tmp_path / "p")])
    assert e.value.code == 2
    assert "--until stops before the report" in capsys.readouterr().err
    assert not (tmp_path / "p").exists()
