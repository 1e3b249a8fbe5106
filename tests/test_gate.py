"""The release gate on a made-up run folder: every target read from the run's files, each able to fail."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.report import gate
from pipeline.report.report import RUN_STAGES


def _write(path: Path, obj: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))


def _heldout(big: float, small: float) -> dict:
    return {"big_set": {"n": 3000, "balanced_accuracy": big},
            "tiny_set": {"n": 101, "balanced_accuracy": small}}


@pytest.fixture()
def run(tmp_path: Path) -> Path:
    run = tmp_path / "run"
    for s in RUN_STAGES:
        _write(run / s / "stage.json", {"seconds": 100.0, "summary": {}})
    _write(run / "int8_eval" / "metrics.json",
           {"test": {"accuracy": 0.935, "agreement": 0.998}, "val": {"accuracy": 0.934},
            "heldout": _heldout(0.70, 0.50)})
    _write(run / "qat_eval" / "metrics.json", {"test": {"accuracy": 0.934}})
    _write(run / "peer_tfidf" / "metrics.json", {"stopwords_kept": {"heldout": _heldout(0.69, 0.90)}})
    _write(run / "peer_fasttext" / "metrics.json", {"bigram": {"heldout": _heldout(0.68, 0.90)},
                                                    "quantized": {"heldout": _heldout(0.67, 0.90)}})
    _write(run / "bench" / "agreement.json", {
        "targets": ["native", "riscv32"],
        "sets": {"test": {"reviews": 10, "native": {"label_differs": 0}, "riscv32": {"label_differs": 0}}}})
    _write(run / "firmware_export" / "stage.json", {"seconds": 0.1, "summary": {
        "total": 140_000, "model_arrays": 86_000, "tokenizer_tables": 54_000, "arena": 3952}})
    _write(run / "student_pruned" / "stage.json", {"seconds": 100.0, "summary": {
        "dense_flash_bytes": 81_000, "flash_bytes": 57_000, "val_accuracy": 0.92,
        "dense_val_accuracy": 0.93}})
    return run


def _holds(rows: list[gate.Row]) -> dict[str, bool | None]:
    return {r.target: r.holds for r in rows}


def test_a_run_meeting_every_target_passes_and_small_sets_are_left_out(run: Path, capsys) -> None:
    assert gate.main([str(run)]) == 0
    rows = gate.check(run)
    assert all(h is not False for h in _holds(rows).values())
    assert not any("tiny_set" in r.target for r in rows)  # 101 reviews: under 900, peers' 0.90 ignored
    out = capsys.readouterr().out
    assert "24,000 B of model arrays saved, validation -1.00 points" in out
    assert "2,100.1 s" in out  # every stage's seconds, firmware_export's 0.1 included


@pytest.mark.parametrize("edit, failing", [
    (("int8_eval/metrics.json", ["test", "accuracy"], 0.9315), "test accuracy"),
    (("int8_eval/metrics.json", ["test", "agreement"], 0.99), "agreement"),
    (("int8_eval/metrics.json", ["heldout", "big_set", "balanced_accuracy"], 0.685), "big_set"),
    (("bench/agreement.json", ["sets", "test", "riscv32", "label_differs"], 1), "firmware"),
    (("firmware_export/stage.json", ["summary", "total"], 163_841), "flash"),
    (("firmware_export/stage.json", ["summary", "arena"], 16_385), "arena"),
    (("teacher/stage.json", ["seconds"], 1_600.0), "stage seconds"),
])
def test_each_target_fails_on_its_own(run: Path, edit, failing: str) -> None:
    rel, keys, value = edit
    obj = json.loads((run / rel).read_text())
    node = obj
    for k in keys[:-1]:
        node = node[k]
    node[keys[-1]] = value
    _write(run / rel, obj)
    failed = [t for t, h in _holds(gate.check(run)).items() if h is False]
    assert len(failed) == 1 and failing in failed[0]
    assert gate.main([str(run)]) == 1


def test_the_stages_of_more_teachers_count_toward_the_seconds(run: Path, capsys) -> None:
    _write(run / "teacher_2" / "stage.json", {"seconds": 1_000.0, "summary": {}})  # distill.teachers
    assert gate.main([str(run)]) == 0 and "3,100.1 s" in capsys.readouterr().out
    _write(run / "teacher_3" / "stage.json", {"seconds": 600.0, "summary": {}})
    failed = [t for t, h in _holds(gate.check(run)).items() if h is False]
    assert len(failed) == 1 and "stage seconds" in failed[0]


def test_a_set_no_peer_measured_fails(run: Path) -> None:
    _write(run / "peer_tfidf" / "metrics.json", {"stopwords_kept": {"heldout": None}})
    _write(run / "peer_fasttext" / "metrics.json", {"bigram": {"heldout": {}}, "quantized": {"heldout": {}}})
    failed = [r for r in gate.check(run) if r.holds is False]
    assert [r.measured for r in failed] == ["no peer measured on it"]


def test_validation_is_compared_with_the_reference_release(run: Path, tmp_path: Path) -> None:
    ref = tmp_path / "published"
    _write(ref / "int8_eval" / "metrics.json", {"val": {"accuracy": 0.934}})
    assert gate.main([str(run), "--reference", str(ref)]) == 1  # equal is not better
    _write(ref / "int8_eval" / "metrics.json", {"val": {"accuracy": 0.933}})
    assert gate.main([str(run), "--reference", str(ref)]) == 0


def test_a_missing_file_fails_its_own_rows_and_is_named(run: Path, capsys) -> None:
    (run / "bench" / "agreement.json").unlink()
    rows = gate.check(run)
    assert [r.measured for r in rows if r.holds is False] == ["not measured: bench/agreement.json missing"]
    assert any("flash" in r.target and r.holds for r in rows)  # the other groups are still checked
    assert gate.main([str(run)]) == 1
    (run / "int8_eval" / "metrics.json").unlink()
    capsys.readouterr()
    assert gate.main([str(run)]) == 2
    err = capsys.readouterr().err
    assert "int8_eval/metrics.json is missing" in err and "pipeline.bench" in err
