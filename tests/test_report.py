"""report.md from a made-up run folder: the run time table and the held-out tables; the ROC legend."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from pipeline.report import plots
from pipeline.report.metrics import compute_metrics, fmt_cell, roc_points
from pipeline.report.report import HELDOUT_METRICS, REPORT_ROWS, RUN_STAGES, publish_report, write_report

ROOT = Path(__file__).resolve().parents[1]
Y = [0, 0, 1, 1, 0, 1, 1, 0]
PROBS = {"teacher_eval": [0.1, 0.3, 0.9, 0.8, 0.6, 0.7, 0.4, 0.2],
         "student_eval": [0.2, 0.6, 0.7, 0.9, 0.4, 0.3, 0.8, 0.1]}
HELDOUT = {"zeta_set": ([1, 1, 1, 0, 0], 0), "alpha_set": ([0, 1, 0, 1, 1, 1], 1)}


def _metrics(y: list[int], p: list[float]) -> dict:
    return {**compute_metrics(y, p), "roc": roc_points(y, p), "host_ms_per_review": 0.5}


def _eval(stage: str) -> dict:
    p = PROBS[stage]
    heldout = {name: _metrics(y, [p[(i + shift) % len(p)] for i in range(len(y))])
               for name, (y, shift) in HELDOUT.items()}
    return {"test": _metrics(Y, p), "val": _metrics(Y, p[::-1]), "heldout": heldout,
            "model": {"params": 1000}, "model_files_bytes": {"model.keras": 4096}, "runtime": "keras"}


def _stage(run: Path, name: str, seconds: float, cpu_count: int | None = 2, **extra) -> None:
    (run / name).mkdir(parents=True, exist_ok=True)
    rec = {"key": "k", "stage": name, "seconds": seconds, "finished": "2026-01-01T00:00:00Z",
           "summary": {}, **extra}
    if cpu_count is not None:
        rec["cpu_count"] = cpu_count
    (run / name / "stage.json").write_text(json.dumps(rec))


@pytest.fixture()
def run(tmp_path: Path) -> Path:
    run = tmp_path / "run"
    for stage in PROBS:
        (run / stage).mkdir(parents=True)
        (run / stage / "metrics.json").write_text(json.dumps(_eval(stage)))
    (run / "config.json").write_text(json.dumps({"preset": "smoke"}))
    # written out of pipeline order on purpose: the table follows the pipeline, not the disk
    for name, sec in (("student", 300.0), ("teacher_eval", 20.5), ("data", 4.0), ("teacher", 3600.0),
                      ("firmware_export", 0.1)):
        _stage(run, name, sec)
    return run


def _section(report: str, title: str) -> list[str]:
    lines = report.splitlines()
    start = lines.index(title)
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
    return lines[start + 1:end]


def _table(lines: list[str], after: str | None = None) -> list[list[str]]:
    """The cells of the first markdown table in ``lines`` (after the line ``after``), header first."""
    if after is not None:
        lines = lines[lines.index(after) + 1:]
    start = next(i for i, ln in enumerate(lines) if ln.startswith("|"))
    rows = []
    for ln in lines[start:]:
        if not ln.startswith("|"):
            break
        rows.append([c.strip() for c in ln.strip("|").split("|")])
    return [rows[0], *rows[2:]]


def test_run_time_table_in_pipeline_order_with_total_and_cores(run: Path) -> None:
    report = write_report(run, "python -m pipeline.all").read_text()
    section = _section(report, "## Run time")
    rows = _table(section)
    assert rows[0] == ["stage", "seconds", "minutes", "share"]
    assert [r[0] for r in rows[1:]] == ["data", "teacher", "teacher_eval", "student",
                                        "firmware_export", "**total**"]
    assert rows[2] == ["teacher", "3,600.0", "60.0", f"{100 * 3600 / 3924.6:.1f}%"]
    assert rows[-1] == ["**total**", "**3,924.6**", "**65.4**", "100%"]
    text = "\n".join(section)
    assert "Machine: 2 CPU cores" in text
    assert "every attempt" in text  # resumed stages: stages.py adds the killed attempts' time
    assert "No `stage.json` in this folder for: tokenizer, peer_tfidf" in text
    assert "Peak RSS" not in text  # no stage recorded one


def test_run_time_puts_more_teachers_after_teacher_eval(run: Path) -> None:
    for name in ("teacher_10", "teacher_2"):  # distill.teachers; finished last, listed in order
        _stage(run, name, 100.0, finished="2026-01-02T00:00:00Z")
    rows = _table(_section(write_report(run, "x").read_text(), "## Run time"))
    assert [r[0] for r in rows[1:6]] == ["data", "teacher", "teacher_eval", "teacher_2", "teacher_10"]
    assert rows[-1][1] == "**4,124.6**"


def test_run_time_peak_rss_column_when_recorded(run: Path) -> None:
    _stage(run, "teacher", 3600.0, peak_rss_mib=2345.6)
    _stage(run, "student", 100.0, peak_rss_mib=1200.0)
    rows = _table(_section(write_report(run, "x").read_text(), "## Run time"))
    assert rows[0] == ["stage", "seconds", "minutes", "share", "peak RSS (MiB)"]
    by = {r[0]: r for r in rows[1:]}
    assert by["teacher"][-1] == "2,346" and by["student"][-1] == "1,200" and by["data"][-1] == "–"
    assert by["**total**"][-1] == "**2,346**"
    _stage(run, "peer_tfidf", 50.0, peak_rss_mib=900.0, workers_peak_rss_mib=3000.4)
    section = _section(write_report(run, "x").read_text(), "## Run time")
    rows = _table(section)
    assert rows[0][-2:] == ["peak RSS (MiB)", "workers' peak (MiB)"]
    by = {r[0]: r for r in rows[1:]}
    assert by["peer_tfidf"][-2:] == ["900", "3,000"] and by["teacher"][-1] == "–"
    assert by["**total**"][-2:] == ["**2,346**", "**3,000**"]
    assert "/usr/bin/time" in "\n".join(section)


def _allocate(mib: int) -> int:
    import numpy as np

    return int(np.ones(mib * 2**20 // 8).sum())  # touched


def test_stage_records_its_own_peak_rss(tmp_path: Path) -> None:
    import numpy as np

    from pipeline.stages import run_stage

    def big(o: Path, w: Path) -> dict:
        a = np.ones(300 * 2**20 // 8)  # 300 MiB, touched
        return {"sum": float(a.sum())}

    run_stage(tmp_path, "big", {"n": 1}, big)
    run_stage(tmp_path, "small", {"n": 1}, lambda o, w: {})
    big_peak = json.loads((tmp_path / "big" / "stage.json").read_text())["peak_rss_mib"]
    small_peak = json.loads((tmp_path / "small" / "stage.json").read_text())["peak_rss_mib"]
    if big_peak is None:
        pytest.skip("no /proc/self/clear_refs here: peaks are not recorded")
    assert big_peak - small_peak > 250  # the second stage's count started anew
    from pipeline.parallel import cores, run_parallel
    from pipeline.stages import run_peak_rss_mib, workers_peak_rss_mib

    # Linux keeps the largest finished child's peak: outgrow every earlier test's worker
    size = int(max(400, workers_peak_rss_mib() + 200))

    def worker_stage(o: Path, w: Path) -> dict:
        return {"n": len(run_parallel(_allocate, [(1,), (size,)]))}

    run_stage(tmp_path, "workers", {"n": 1}, worker_stage)
    rec = json.loads((tmp_path / "workers" / "stage.json").read_text())
    run = run_peak_rss_mib()
    assert run["main"] >= big_peak  # the whole run's peak survives the resets
    if cores() > 1:  # the big call ran in a worker process
        assert rec["workers_peak_rss_mib"] > size and run["workers"] >= rec["workers_peak_rss_mib"]
    run_stage(tmp_path, "no_workers", {"n": 1}, lambda o, w: {})
    assert json.loads((tmp_path / "no_workers" / "stage.json").read_text())[
        "workers_peak_rss_mib"] is None  # no worker outgrew the earlier ones


def test_run_time_cores_unknown_for_old_runs_and_per_stage_when_mixed(run: Path) -> None:
    for name in ("data", "teacher", "teacher_eval", "student", "firmware_export"):
        rec = json.loads((run / name / "stage.json").read_text())
        del rec["cpu_count"]
        (run / name / "stage.json").write_text(json.dumps(rec))
    _stage(run, "peer_fasttext", 60.0, cpu_count=None, note="run by hand")
    text = "\n".join(_section(write_report(run, "x").read_text(), "## Run time"))
    assert "CPU cores unknown" in text and "- `peer_fasttext`: run by hand" in text
    _stage(run, "teacher", 3600.0, cpu_count=16)  # resumed on another machine
    rows = _table(_section(write_report(run, "x").read_text(), "## Run time"))
    assert rows[0][-1] == "cores"
    assert rows[2][0] == "teacher" and rows[2][-1] == "16" and rows[1][-1] == "unknown"


def test_run_stages_list_every_stage_all_py_runs_in_its_order() -> None:
    src = (ROOT / "pipeline" / "all.py").read_text()
    body = src[src.index('data_dir, k_data = run_stage('):]  # after the helpers
    found = re.findall(r'(?:run_stage\(\s*|teacher_stage\(|evaluation\()(f?"[a-z0-9_{}]+"|name\b)', body)
    loop = re.findall(r'\("(student_[a-z]+)", (?:True|False)\)', body)  # the KD / AFD loop
    assert loop == ["student_kd", "student_afd"]
    i = found.index("name")
    assert found[i:i + 2] == ["name", 'f"{name}_eval"']
    expanded = [n for s in loop for n in (s, f"{s}_eval")]
    names = [n.strip('"') for n in found[:i]] + expanded + [n.strip('"') for n in found[i + 2:]]
    assert tuple(names) == RUN_STAGES
    # distill.teachers' optional stages are not in RUN_STAGES: the run time table and the gate
    # find them by their folders
    assert re.findall(r'teacher_stage\((f"teacher_\{k \+ 1\}")', body) == ['f"teacher_{k + 1}"']


def test_teacher_signal_lists_each_teacher_and_their_mean() -> None:
    from pipeline.report.report import _teacher_signal

    m = {k: {"accuracy": a, "balanced_accuracy": a, "f1": a, "roc_auc": a}
         for k, a in (("teacher", 0.93), ("tfidf_crossfit", 0.92), ("ensemble", 0.94),
                      ("teacher_1", 0.925), ("teacher_2", 0.923))}
    ens = {"weight": 0.35, "folds": 2, "val_accuracy_by_weight": {"0": 0.93}, "val": m, "test": m}
    one = "\n".join(_teacher_signal(ens))
    assert "| BiGRU teacher | 93.00 |" in one and "teacher_2" not in one
    two = "\n".join(_teacher_signal({**ens, "teachers": ["teacher", "teacher_2"]}))
    assert "| BiGRU teacher `teacher` | 92.50 |" in two and "| BiGRU teacher `teacher_2` | 92.30 |" in two
    assert "| BiGRU teachers, mean logit of 2 | 93.00 |" in two


def test_heldout_tables_one_metric_each_models_as_rows_every_number_kept(run: Path) -> None:
    report = write_report(run, "x").read_text()
    section = _section(report, "## Held-out sets")
    sizes = _table(section)
    assert sizes[0] == ["set", "reviews", "positive"]
    assert sizes[1:] == [["alpha_set", "6", "4 (66.7%)"], ["zeta_set", "5", "3 (60.0%)"]]
    names = dict(REPORT_ROWS)
    for key, title in HELDOUT_METRICS:
        rows = _table(section, after=f"### {title}, %")
        assert rows[0] == ["model", "alpha_set", "zeta_set"]
        assert len(rows) == 1 + len(PROBS)
        for stage, row in zip(PROBS, rows[1:], strict=True):
            held = _eval(stage)["heldout"]
            assert row == [names[stage], fmt_cell(key, held["alpha_set"][key]),
                           fmt_cell(key, held["zeta_set"][key])]
    assert " / " not in "\n".join(section)  # no more "acc / bal / F1" cells


def test_roc_legend_sits_outside_the_axes(tmp_path: Path, monkeypatch) -> None:
    figures = []
    monkeypatch.setattr(plots.plt, "close", figures.append)
    curves = {f"model number {i} with a long name": _metrics(Y, PROBS["teacher_eval"][i:] +
                                                              PROBS["teacher_eval"][:i])
              for i in range(8)}
    plots.plot_roc_points(curves, tmp_path / "roc.png", "ROC")
    assert (tmp_path / "roc.png").read_bytes()[:4] == b"\x89PNG"
    (fig,) = figures
    ax = fig.axes[0]
    renderer = fig.canvas.get_renderer()
    legend = ax.get_legend().get_window_extent(renderer)
    axes = ax.get_window_extent(renderer)
    assert legend.y1 < axes.y0  # wholly below the plot: covers neither axes nor curves
    assert len(ax.get_legend().get_texts()) == len(curves)
    import matplotlib.pyplot as plt

    plt.close(fig)


def test_publish_keeps_every_stage_json_for_the_run_time_table(run: Path, tmp_path: Path) -> None:
    (run / "data" / "train.jsonl").write_text('{"text": "x", "label": 1}\n')
    write_report(run, "x")
    names = {p.relative_to(tmp_path / "pub").as_posix() for p in publish_report(run, tmp_path / "pub")}
    assert {"data/stage.json", "teacher/stage.json", "report.md", "roc.png"} <= names
    assert "data/train.jsonl" not in names


def test_publish_keeps_the_bench_files_the_report_is_written_from(run: Path, tmp_path: Path) -> None:
    (run / "bench").mkdir()
    for name in ("bench.json", "before.json", "agreement.json", "bench.md"):
        (run / "bench" / name).write_text("{}")
    names = {p.relative_to(tmp_path / "pub").as_posix() for p in publish_report(run, tmp_path / "pub")}
    assert {"bench/bench.json", "bench/before.json", "bench/agreement.json", "bench/bench.md"} <= names


def _bench(step: float, ops: dict[str, float]) -> dict:
    fig = {"tokenizer_per_token": 2500.0, "step_loop_per_token": step, "head": 2400,
           "review_128_tokens_model": int(128 * step + 2400),
           "review_128_tokens_with_tokenizer": int(128 * (step + 2500) + 2400),
           "run_per_token_by_operator": ops}
    return {"n_tokens": 128, "kernels": {"esp_nn": fig}}


def test_device_section_shows_before_after_and_the_firmware_agreement(run: Path) -> None:
    (run / "bench").mkdir()
    (run / "bench" / "bench.json").write_text(json.dumps(
        {**_bench(47000.0, {"TINYSENT_BIGRU (fused GRU step)": 45000.0}), "command": "bench-cmd"}))
    (run / "bench" / "before.json").write_text(json.dumps(
        {**_bench(222000.0, {"FULLY_CONNECTED": 135000.0, "ADD": 29000.0}), "label": "`old.json`"}))
    sets = {"test": {"reviews": 10, "native": {"p_differs": 0, "label_differs": 0, "first": []},
                     "riscv32": {"p_differs": 2, "label_differs": 1, "first": [3, 7]}}}
    (run / "bench" / "agreement.json").write_text(json.dumps(
        {"targets": ["native", "riscv32"], "sets": sets, "identical": False, "command": "agree-cmd"}))
    report = write_report(run, "x").read_text()
    assert "Measured by `bench-cmd`" in report
    rows = _table(report.splitlines(), after="### Before / after (before: `old.json`)")
    assert rows[1][:4] == ["step loop / token", "222,000", "47,000", "4.72x"]
    agree = _table(report.splitlines(), after="### The firmware against `--runtime tflm`, every review")
    assert agree[1] == ["test", "10", "0", "0", "2", "1"]
    assert "Measured by `agree-cmd`" in report and "**Not identical**" in report
