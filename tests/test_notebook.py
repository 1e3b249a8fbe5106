"""Executes notebooks/results.ipynb headless on what a fresh clone has: the committed reports/."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "results.ipynb"


def _tracked_reports() -> list[Path]:
    """Files under reports/ that git tracks (a fresh clone's); every file without git metadata."""
    try:
        out = subprocess.run(["git", "ls-files", "-z", "reports"], cwd=ROOT, check=True,
                             capture_output=True, text=True).stdout
        files = [Path(p) for p in out.split("\0") if p]
    except (OSError, subprocess.CalledProcessError):
        files = []
    if not files:
        files = [p.relative_to(ROOT) for p in (ROOT / "reports").rglob("*") if p.is_file()]
    return files


def _fake_sweep(dest: Path) -> None:
    """A two-row sweep so the sweep cell runs its table and image path too."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    dest.mkdir(parents=True)
    rows = [{"vocab": 500, "embed_dim": 16, "units": 16, "flash_bytes": 30_000,
             "int8_test_accuracy": 0.8, "float_test_accuracy": 0.81},
            {"vocab": 1000, "embed_dim": 32, "units": 32, "flash_bytes": 90_000,
             "int8_test_accuracy": 0.85, "float_test_accuracy": None}]
    (dest / "sweep.json").write_text(json.dumps({"rows": rows, "peers": []}))
    fig, ax = plt.subplots()
    ax.plot([1, 2], [1, 2])
    fig.savefig(dest / "sweep.png")
    plt.close(fig)


def test_results_notebook_runs_on_committed_reports(tmp_path) -> None:
    files = _tracked_reports()
    if not any(f.as_posix().startswith("reports/full/") and f.name == "metrics.json" for f in files):
        pytest.skip("no committed reports/full/*/metrics.json")
    for rel in files:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(ROOT / rel, tmp_path / rel)
    if not (tmp_path / "reports" / "sweep").exists():
        _fake_sweep(tmp_path / "reports" / "sweep")
    (tmp_path / "notebooks").mkdir()
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=180, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path / "notebooks")}})
    client.execute()  # raises CellExecutionError on the first failing cell
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    text = json.dumps([o.get("data", {}).get("text/markdown", "") for o in outputs])
    assert "Test split" in text and "teacher" in text
    assert "set | n |" in text  # held-out table
    images = sum("image/png" in o.get("data", {}) for o in outputs)
    assert images >= 5  # ROC grid, ROC overlay, confusion grid, held-out bars, sweep plot
