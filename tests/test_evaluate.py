"""Tests for pipeline.report.metrics and plots."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from pipeline.report.metrics import compute_metrics, metrics_table, roc_points, write_json
from pipeline.report.plots import plot_confusion, plot_roc_points

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_perfect_predictions() -> None:
    m = compute_metrics([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9])
    assert m["n"] == 4 and m["positives"] == 2 and m["threshold"] == 0.5
    for key in ("accuracy", "balanced_accuracy", "precision", "recall", "f1", "roc_auc"):
        assert m[key] == pytest.approx(1.0)
    assert m["confusion"] == [[2, 0], [0, 2]]


def test_all_wrong() -> None:
    m = compute_metrics([0, 0, 1, 1], [0.9, 0.8, 0.2, 0.1])
    assert m["accuracy"] == 0.0 and m["balanced_accuracy"] == 0.0
    assert m["precision"] == 0.0 and m["recall"] == 0.0 and m["f1"] == 0.0
    assert m["roc_auc"] == pytest.approx(0.0)
    assert m["confusion"] == [[0, 2], [2, 0]]


def test_hand_computed_mixed_and_confusion_layout() -> None:
    # y:    1    1    1    0    0    0    0
    # pred: 1    1    0    1    0    0    0   -> tp=2 fn=1 fp=1 tn=3
    y = [1, 1, 1, 0, 0, 0, 0]
    p = [0.9, 0.6, 0.4, 0.7, 0.3, 0.2, 0.1]
    m = compute_metrics(y, p)
    assert m["confusion"] == [[3, 1], [1, 2]]  # [[tn, fp], [fn, tp]]
    assert m["accuracy"] == pytest.approx(5 / 7)
    assert m["precision"] == pytest.approx(2 / 3)
    assert m["recall"] == pytest.approx(2 / 3)
    assert m["f1"] == pytest.approx(2 / 3)
    assert m["balanced_accuracy"] == pytest.approx((2 / 3 + 3 / 4) / 2)
    # pairs (pos, neg) ranked correctly: 0.9>all 4, 0.6>3 of 4, 0.4>3 of 4 -> 10/12
    assert m["roc_auc"] == pytest.approx(10 / 12)
    assert m["positives"] == 3


def test_threshold_is_inclusive_and_changes_predictions() -> None:
    m = compute_metrics([0, 1], [0.5, 0.5], threshold=0.5)
    assert m["confusion"] == [[0, 1], [0, 1]]
    m = compute_metrics([0, 1], [0.5, 0.7], threshold=0.6)
    assert m["confusion"] == [[1, 0], [0, 1]] and m["threshold"] == 0.6


def test_one_class_roc_auc_none_and_json_serialisable() -> None:
    m = compute_metrics([1, 1, 1], [0.9, 0.2, 0.7])
    assert m["roc_auc"] is None
    assert m["confusion"] == [[0, 0], [1, 2]]
    assert m["accuracy"] == pytest.approx(2 / 3)
    out = json.loads(json.dumps(m))
    assert out == m
    assert all(type(v) in (int, float, type(None), list) for v in m.values())
    assert roc_points([1, 1], [0.2, 0.3]) == {"fpr": [], "tpr": []}


def test_bad_inputs() -> None:
    with pytest.raises(ValueError):
        compute_metrics([], [])
    with pytest.raises(ValueError):
        compute_metrics([0, 1], [0.5])
    with pytest.raises(ValueError):
        compute_metrics([0, 2], [0.5, 0.5])


def test_roc_points_downsampled_and_jsonable() -> None:
    n = 1000
    y = [i % 2 for i in range(n)]
    p = [((i * 7919) % n) / n * 0.5 + 0.5 * (i % 2) for i in range(n)]
    pts = roc_points(y, p, max_points=50)
    assert 2 <= len(pts["fpr"]) == len(pts["tpr"]) <= 50
    assert pts["fpr"][0] == 0.0 and pts["tpr"][0] == 0.0
    assert pts["fpr"][-1] == 1.0 and pts["tpr"][-1] == 1.0
    assert pts["fpr"] == sorted(pts["fpr"]) and pts["tpr"] == sorted(pts["tpr"])
    assert json.loads(json.dumps(pts)) == pts
    small = roc_points([0, 1, 0, 1], [0.1, 0.9, 0.3, 0.6])
    assert small["tpr"][-1] == 1.0


def _assert_png(path: Path) -> None:
    data = path.read_bytes()
    assert len(data) > 1000 and data[:8] == PNG_MAGIC


def test_plot_roc_points_writes_png(tmp_path: Path) -> None:
    y = [0, 0, 1, 1, 0, 1]
    curves = {name: {"roc": roc_points(y, p), "roc_auc": compute_metrics(y, p)["roc_auc"]}
              for name, p in (("good", [0.1, 0.2, 0.9, 0.8, 0.3, 0.7]),
                              ("meh", [0.5, 0.2, 0.4, 0.8, 0.6, 0.7]))}
    out = tmp_path / "roc.png"
    plot_roc_points(curves, out, "ROC test")
    _assert_png(out)


def test_plot_confusion_writes_png(tmp_path: Path) -> None:
    out = tmp_path / "cm.png"
    plot_confusion([[50, 3], [0, 0]], out, "Confusion test")  # empty row must not crash
    _assert_png(out)
    with pytest.raises(ValueError):
        plot_confusion([[1, 2, 3]], tmp_path / "bad.png", "bad")


def test_write_json_atomic(tmp_path: Path) -> None:
    import numpy as np

    out = tmp_path / "m.json"
    write_json(out, {"b": 1, "a": [1.5, None], "np": np.float32(0.25), "i": np.int64(3)})
    write_json(out, {"b": 2, "a": [1.5, None], "np": np.float32(0.25), "i": np.int64(3)})
    assert [p.name for p in tmp_path.iterdir()] == ["m.json"]
    text = out.read_text()
    assert json.loads(text) == {"a": [1.5, None], "b": 2, "i": 3, "np": 0.25}
    assert text.index('"a"') < text.index('"b"') and '\n  "a"' in text
    with pytest.raises(TypeError):
        write_json(out, {"x": object()})
    assert [p.name for p in tmp_path.iterdir()] == ["m.json"]
    assert json.loads(out.read_text())["b"] == 2  # old content survives a failed write


def test_metrics_table_formatting() -> None:
    m = {"n": 1234, "accuracy": 0.92345, "balanced_accuracy": 0.9, "precision": 1.0,
         "recall": 0.5, "f1": 2 / 3, "roc_auc": 0.97344}
    one_class = {"n": 3.0, "accuracy": 1.0, "roc_auc": None}
    table = metrics_table([("teacher", m), ("tiny", one_class)])
    lines = table.strip().splitlines()
    assert lines[0] == ("| model | n | accuracy | balanced_accuracy | precision | recall | f1"
                        " | roc_auc |")
    assert lines[1].startswith("|---|---:|")
    assert lines[2] == "| teacher | 1234 | 92.35 | 90.00 | 100.00 | 50.00 | 66.67 | 0.9734 |"
    assert lines[3] == "| tiny | 3 | 100.00 | – | – | – | – | – |"
    custom = metrics_table([("test", m)], columns=("accuracy", "roc_auc"), name_header="set")
    assert custom.splitlines()[0] == "| set | accuracy | roc_auc |"
    assert custom.splitlines()[2] == "| test | 92.35 | 0.9734 |"
    assert "nan" not in metrics_table([("x", {"accuracy": math.nan})], columns=("accuracy",))


def test_metrics_table_edge_values() -> None:
    import numpy as np

    row = {"accuracy": np.float32("nan"), "roc_auc": 1, "n": np.int64(7), "threshold": 0.5}
    table = metrics_table([("x", row)], columns=("n", "accuracy", "roc_auc", "threshold"))
    assert table.splitlines()[2] == "| x | 7 | – | 1.0000 | 0.5000 |"
    assert metrics_table([("y", {"f1": 0.000049})], columns=("f1",)).splitlines()[2] == (
        "| y | 0.00 |"
    )
