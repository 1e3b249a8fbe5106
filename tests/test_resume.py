"""Exact resume: a training run interrupted after an epoch (in-process, SIGINT, SIGKILL while a
checkpoint is written) and resumed ends with the same weights, bit for bit, as one never stopped;
``pipeline.all`` killed inside a stage resumes that stage (on a slice of the real reviews).

Also runnable as a script (the subprocess side of the kill test):
``python tests/test_resume.py WORK_DIR OUT.npz`` trains the tiny model in ``WORK_DIR`` and saves its
final weights to ``OUT.npz``; it touches ``WORK_DIR/epoch-N.done`` after each epoch. With
``$TINYSENT_TEST_HOLD=1`` it touches ``epoch-2.held`` in epoch 2's first batch and waits there for a
signal, so the test interrupts epoch 2 however fast it would otherwise run.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import tf_keras as keras

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from test_train import TINY  # noqa: E402

from pipeline.config import DistillConfig, StudentConfig, TrainConfig  # noqa: E402
from pipeline.nn.models import build_student, build_teacher  # noqa: E402
from pipeline.nn.train import (  # noqa: E402
    CKPT_PAUSE_ENV,
    TrainStep,
    fit,
    keras_step,
    set_determinism,
)

# dropout everywhere, EMA and token dropout: every kind of per-epoch state the loop carries
TEACHER = replace(TINY, dropout=0.3, embed_dropout=0.2)
CFG = TrainConfig(batch_size=32, max_epochs=2, patience=2, learning_rate=1e-2, seed=3, ema=0.5,
                  token_dropout=0.1, lr_schedule="cosine")
STUDENT = StudentConfig(embed_dim=8, units=8, dropout=0.3, embed_dropout=0.2)
HOLD_ENV = "TINYSENT_TEST_HOLD"  # script mode: wait for a signal in epoch 2's first batch


def _task(n: int, seed: int) -> tuple[list[list[int]], np.ndarray]:
    """test_train's task with rows of at most 16 tokens: one batch width, one trace (fast)."""
    rng = np.random.default_rng(seed)
    xs, ys = [], []
    for _ in range(n):
        y = int(rng.integers(0, 2))
        row = rng.integers(4, 30, size=int(rng.integers(3, 17))).tolist()
        row[int(rng.integers(0, len(row)))] = 2 if y else 3
        xs.append(row)
        ys.append(y)
    return xs, np.array(ys, np.float32)


def _train(work: Path, kind: str = "fit", stop_after: int | None = None,
           hold: bool = False) -> list[np.ndarray]:
    """Train ``kind`` (fit: the teacher with Keras' step; kd / afd: the student with KD [+ AFD])
    in ``work``; ``stop_after``: raise KeyboardInterrupt after that epoch; ``hold`` (fit): wait in
    epoch 2's first batch, after touching ``epoch-2.held``, until a signal. Returns the weights."""
    from pipeline.compress.distill import kd_step

    set_determinism(CFG.seed)
    x, y = _task(200, 0)
    step = None
    if kind == "fit":
        model = build_teacher(30, TEACHER)
        if hold:
            def held_step(model: keras.Model, optimizer: keras.optimizers.Optimizer) -> TrainStep:
                inner = keras_step(model)

                def held(x: np.ndarray, y: np.ndarray, idx: np.ndarray,
                         first: bool) -> tuple[float, float]:
                    if (work / "epoch-1.done").exists() and not (work / "epoch-2.held").exists():
                        (work / "epoch-2.held").touch()
                        # short sleeps: SIGINT may land on one of TensorFlow's threads, which
                        # would not wake one long sleep of this (main) thread; Python raises the
                        # KeyboardInterrupt here when the current one ends
                        for _ in range(6000):
                            time.sleep(0.1)
                    return inner(x, y, idx, first)

                return held

            step = held_step
    else:
        model = build_student(30, STUDENT)
        teacher_z = np.where(y > 0.5, 2.0, -2.0).astype(np.float32)
        feats = None
        if kind == "afd":
            from pipeline.compress.afd import TEACHER_MAPS, TeacherFeatures

            rng = np.random.default_rng(0)
            feats = TeacherFeatures(
                [rng.random((len(TEACHER_MAPS), len(r))).astype(np.float16) for r in x],
                [rng.random((len(x), d)).astype(np.float16) for d in (6, 8, 8)])
        step = kd_step(teacher_z, DistillConfig(afd_weight=1.0 if feats else 0.0, afd_dim=4), feats)

    def stop(epoch: int) -> None:
        (work / f"epoch-{epoch}.done").touch()
        if stop_after is not None and epoch >= stop_after:
            raise KeyboardInterrupt

    fit(model, (x, y), _task(100, 1), CFG, work, on_epoch_end=stop, make_step=step)
    return [np.asarray(w) for w in model.get_weights()]


def _same(a: list[np.ndarray], b: list[np.ndarray]) -> bool:
    return len(a) == len(b) and all(np.array_equal(u, v) for u, v in zip(a, b, strict=True))


@pytest.mark.parametrize("kind", ["fit", "kd", "afd"])
def test_interrupted_equals_uninterrupted(tmp_path: Path, kind: str) -> None:
    whole = _train(tmp_path / "whole", kind)
    with pytest.raises(KeyboardInterrupt):
        _train(tmp_path / "cut", kind, stop_after=1)
    resumed = _train(tmp_path / "cut", kind)
    assert _same(whole, resumed)


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 600.0) -> None:
    end = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, f"training exited early ({proc.returncode})"
        assert time.monotonic() < end, f"timed out waiting for {path.name}"
        time.sleep(0.05)


def test_sigint_and_sigkill_during_checkpoint_then_resume(tmp_path: Path) -> None:
    work, out = tmp_path / "w", tmp_path / "final.npz"
    cmd = [sys.executable, __file__, str(work), str(out)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    # 1. SIGINT once epoch 1 is checkpointed: a clean KeyboardInterrupt in epoch 2 (held in its
    #    first batch, so that a tiny epoch cannot end before the signal arrives)
    proc = subprocess.Popen(cmd, env={**env, HOLD_ENV: "1"}, stderr=subprocess.PIPE, text=True)
    _wait_for(work / "epoch-2.held", proc)
    proc.send_signal(signal.SIGINT)
    err = proc.communicate(timeout=600)[1]
    assert proc.returncode != 0 and "KeyboardInterrupt" in err and not out.exists()
    # 2. resume; SIGKILL while epoch 2's checkpoint is being written (the hook pauses inside it)
    proc = subprocess.Popen(cmd, env={**env, CKPT_PAUSE_ENV: "2"}, stderr=subprocess.DEVNULL)
    _wait_for(work / "ckpt-2.writing", proc)
    proc.kill()
    proc.wait(timeout=60)
    assert not (work / "epoch-2.done").exists()
    # 3. resume to the end
    subprocess.run(cmd, env=env, check=True, stderr=subprocess.DEVNULL, timeout=300)
    resumed = np.load(out)
    whole = _train(tmp_path / "whole")
    assert _same(whole, [resumed[f"w{i}"] for i in range(len(resumed.files))])



def _run_pipeline(args: list[str], log: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "pipeline.all", *args], cwd=ROOT, env=env,
                            stdout=log.open("w"), stderr=subprocess.STDOUT)


@pytest.mark.slow
def test_killed_pipeline_resumes_without_redoing_finished_stages(real_slice,
                                                               tmp_path: Path) -> None:
    """``pipeline.all`` killed in the teacher's second epoch: the next run reuses the finished
    stages, resumes the teacher after its last epoch and publishes it once."""
    out = tmp_path / "run"
    args = ["--data", str(real_slice["amazon"]), "--preset", "smoke", "--out", str(out),
            "--set", "train.max_epochs=4", "--set", "data.max_reviews=2500", "--until", "teacher"]
    proc = _run_pipeline(args, tmp_path / "first.log")
    deadline = time.monotonic() + 600
    state = None
    while time.monotonic() < deadline and proc.poll() is None:
        states = list(out.glob(".teacher.work-*/state.json"))
        if states and json.loads(states[0].read_text())["epoch"] >= 1:
            state = states[0]
            break
        time.sleep(0.05)
    assert state is not None, (tmp_path / "first.log").read_text()[-2000:]
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (out / "teacher").exists()  # the stage was not published half-done
    done_epochs = json.loads(state.read_text())["epoch"]
    assert done_epochs < 4
    proc = _run_pipeline(args, tmp_path / "second.log")
    assert proc.wait(timeout=900) == 0, (tmp_path / "second.log").read_text()[-3000:]
    log = (tmp_path / "second.log").read_text()
    assert "[data] up to date" in log and "[tokenizer] up to date" in log
    assert f"resuming training after epoch {done_epochs}" in log
    history = json.loads((out / "teacher" / "history.json").read_text())["history"]
    assert [h["epoch"] for h in history] == list(range(1, len(history) + 1))
    assert not list(out.glob(".teacher.work-*"))  # work folder cleaned once published
    assert "stopped after stage teacher (--until)" in log
    assert not (out / "teacher_eval").exists() and not (out / "report.md").exists()


if __name__ == "__main__":
    # a runner started in the background ignores SIGINT and passes that on to this child: take
    # Python's KeyboardInterrupt handler back, as a run started from a terminal has it
    signal.signal(signal.SIGINT, signal.default_int_handler)
    work_dir, out_file = Path(sys.argv[1]), Path(sys.argv[2])
    weights = _train(work_dir, hold=os.environ.get(HOLD_ENV) == "1")
    np.savez(out_file, **{f"w{i}": w for i, w in enumerate(weights)})
