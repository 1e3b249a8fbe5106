"""The package's shape: no import cycles, configuration on the ground floor, small modules, and the
device path (export, predict --runtime tflm, the console) free of TensorFlow."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "pipeline"
MAX_LINES = 600


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PKG.rglob("*.py"))}


def _imports(path: Path, modules: dict[str, Path]) -> set[str]:
    """Project modules ``path`` imports anywhere (top level or inside functions)."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name in modules}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module not in modules:
                continue
            for a in node.names:  # ``from pipeline.device import flatbuf`` imports the submodule
                sub = f"{node.module}.{a.name}"
                out.add(sub if sub in modules else node.module)
    return out


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(path, modules) - {name, "pipeline"} for name, path in modules.items()}


def test_no_import_cycles() -> None:
    graph = _graph()
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    cycles: list[list[str]] = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append(path[path.index(nxt):] + [nxt] if nxt in path else [node, nxt])
            elif nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_config_is_the_ground_floor() -> None:
    graph = _graph()
    assert graph["pipeline.config"] == set(), "pipeline.config imports nothing from the package"
    assert graph["pipeline.stages"] == set()
    # the thin CLIs and the orchestrator sit on top: no module below imports them
    top = {"pipeline.all", "pipeline.predict", "pipeline.tokenize", "pipeline.console",
           "pipeline.export", "pipeline.sweep", "pipeline.stream", "pipeline.distribute",
           "pipeline.bench"}
    for name, deps in graph.items():
        assert not (deps & top), f"{name} imports the CLI module(s) {deps & top}"


def test_modules_stay_small() -> None:
    big = {n: len(p.read_text().splitlines()) for n, p in _modules().items()}
    assert {n: k for n, k in big.items() if k > MAX_LINES} == {}


def test_device_path_imports_no_tensorflow() -> None:
    code = ("import sys, pipeline.export, pipeline.predict, pipeline.config, pipeline.console, "
            "pipeline.device.runtime, pipeline.device.flatbuf\n"
            "from pipeline.report.predictors import load_predictor\n"
            "load_predictor(sys.argv[1], 'tflm')(['Great little speaker, works as described'])\n"
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'tf_keras'))\n"
            "assert not bad, bad[:5]\n")
    proc = subprocess.run([sys.executable, "-c", code, str(ROOT / "models" / "release")],
                          capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
