"""pipeline.sweep: one smoke-sized grid point through the real stages, and the table and plot of
several points (made-up rows)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import polar_rows

from pipeline.config import override, preset
from pipeline.data import write_jsonl
from pipeline.report.sweep import BOARDS, Grid, run_sweep
from pipeline.sweep import main


def _rows(n: int, seed: int) -> list[tuple[str, int]]:
    return polar_rows(n, seed, 2, 10)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("sweep") / "data"
    for name, n, seed in (("train", 200, 1), ("val", 40, 2), ("test", 40, 3)):
        write_jsonl(d / f"{name}.jsonl", _rows(n, seed))
    return d


def _reference(root: Path) -> Path:
    """A finished run's published metrics: the TF-IDF peer and the release int8 evaluation."""
    m = {"test": {"accuracy": 0.9}}
    (root / "peer_tfidf").mkdir(parents=True)
    (root / "peer_tfidf" / "metrics.json").write_text(json.dumps(
        {"C": 32, "stopwords_kept": {**m, "size_bytes": 24_000_000}}))
    (root / "int8_eval").mkdir()
    (root / "int8_eval" / "metrics.json").write_text(json.dumps(
        {**m, "model": {"device": {"flash_bytes": 162_088}}}))
    (root / "firmware_export").mkdir()
    (root / "firmware_export" / "stage.json").write_text(json.dumps(
        {"summary": {"tokenizer_tables": 68_033, "total": 230_121}}))
    return root


def test_smoke_point_writes_table_plot_and_is_reused(data_dir, tmp_path) -> None:
    cfg = override(preset("smoke"), ["student_train.max_epochs=1"])
    grid = Grid(vocab=(60,), embed_dim=(4,), units=(4,))
    ref = _reference(tmp_path / "ref")
    res = run_sweep(tmp_path / "out", cfg, grid, data_dir=data_dir, reference=ref, command="test")
    rows = res["rows"]
    assert [(r["vocab"], r["embed_dim"], r["units"]) for r in rows] == [(60, 4, 4)]
    for r in rows:
        assert r["flash_bytes"] == r["model_bytes"] + r["tokenizer_bytes"]
        assert r["model_bytes"] > 0 and r["tokenizer_bytes"] > 0 and r["arena_bytes"] > 0
        assert 0.0 <= r["int8_test_accuracy"] <= 1.0 and 0.0 <= r["float_test_accuracy"] <= 1.0
    assert res["peers"][0]["bytes"] == 24_000_000
    assert res["release"]["flash_bytes"] == 230_121  # model arrays + tokenizer tables
    assert [b["name"] for b in res["boards"]] == [b.name for b in BOARDS]
    out = tmp_path / "out"
    assert (out / "sweep.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = (out / "sweep.md").read_text()
    assert "| 60 | 4 | 4 |" in table and "ESP32-C3" in table
    # a second run (the CLI, same settings) reuses every finished stage, then publishes
    stamps = {p: p.stat().st_mtime_ns for p in out.glob("*/stage.json")}
    pub = tmp_path / "pub"
    main(["--data-dir", str(data_dir), "--out", str(out), "--preset", "smoke", "--vocab", "60",
          "--embed", "4", "--units", "4", "--set", "student_train.max_epochs=1",
          "--publish", str(pub)])
    assert stamps and {p: p.stat().st_mtime_ns for p in out.glob("*/stage.json")} == stamps
    assert sorted(p.name for p in pub.iterdir()) == ["sweep.json", "sweep.md", "sweep.png"]
    assert json.loads((pub / "sweep.json").read_text())["rows"][0]["name"] == "v60-e4-u4"


def test_table_and_plot_of_several_points(tmp_path) -> None:
    from pipeline.report.sweep import plot, table_md

    rows = [{"name": f"v{v}-e{e}-u{u}", "vocab": v, "embed_dim": e, "units": u, "params": 1000 * e,
             "model_bytes": 30 * v * e, "tokenizer_bytes": 17 * v,
             "flash_bytes": 30 * v * e + 17 * v, "arena_bytes": 12_000,
             "macs_per_128_tokens": 10_000 * u, "int8_test_accuracy": 0.85 + e / 1000,
             "float_test_accuracy": 0.86 + e / 1000}
            for v in (2000, 16000) for e in (16, 64) for u in (16, 32)]
    peers = [{"name": "fastText .ftz", "bytes": 2_000_000, "test_accuracy": 0.915}]
    release = {"name": "release", "flash_bytes": 230_000, "test_accuracy": 0.913}
    md = table_md(rows, peers, release)
    assert md.count("\n| 2000 |") + md.count("\n| 16000 |") == 8
    big = next(line for line in md.splitlines() if line.startswith("| 16000 | 64 | 32 |"))
    small = next(line for line in md.splitlines() if line.startswith("| 2000 | 16 | 16 |"))
    assert big.endswith("| – |")  # 30.7 MB: no board
    assert small.endswith("| ESP32, ESP32-S3, ESP32-C3 |")  # 1 MB: every board
    plot(rows, peers, release, tmp_path / "p.png")
    assert (tmp_path / "p.png").stat().st_size > 10_000
