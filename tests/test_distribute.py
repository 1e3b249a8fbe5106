"""Tests for pipeline.distribute: batch schedule, strategy names, and two local CPU workers on
loopback that end with identical weights, equal to one device stepping on the global batches."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from conftest import polar_rows

from pipeline.data import write_jsonl
from pipeline.nn.distribute import global_batches, replica_slice, strategy_from_name

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT = 300


def _rows(n: int, seed: int) -> list[tuple[str, int]]:
    return polar_rows(n, seed, 3, 20)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> tuple[Path, Path]:
    """``data/{train,val,test}.jsonl`` and a small BPE tokenizer (smoke preset's 128 tokens)."""
    from pipeline.config import TokenizerConfig
    from pipeline.text.tokenizer import train_tokenizer

    root = tmp_path_factory.mktemp("dist")
    data = root / "data"
    for name, n, seed in (("train", 320, 1), ("val", 64, 2), ("test", 64, 3)):
        write_jsonl(data / f"{name}.jsonl", _rows(n, seed))
    tok = train_tokenizer([t for t, _ in _rows(320, 1)], TokenizerConfig(vocab_size=60, seq_len=128))
    tok.save(root / "tok")
    return data, root / "tok"


@pytest.fixture(scope="module")
def tiny_shards(tiny_run, tmp_path_factory) -> Path:
    """The same reviews as :func:`tiny_run` through ``pipeline.stream``: 4 TFRecord files a split."""
    from pipeline.config import StreamConfig, TokenizerConfig
    from pipeline.data import read_jsonl
    from pipeline.data.stream import build_stream

    root = tmp_path_factory.mktemp("shards")
    rows = [r for name in ("train", "val", "test") for r in read_jsonl(tiny_run[0] / f"{name}.jsonl")]
    write_jsonl(root / "reviews.jsonl", rows)
    build_stream(root / "reviews.jsonl", root / "stream",
                 StreamConfig(spill_buckets=2, shards=4, tokenizer_sample=1000),
                 TokenizerConfig(vocab_size=60, seq_len=128))
    return root / "stream"


def test_global_batches_are_full_disjoint_and_reproducible() -> None:
    lengths = np.random.default_rng(0).integers(1, 50, 1000)
    a = global_batches(lengths, 64, np.random.default_rng([13, 1]), 4)
    b = global_batches(lengths, 64, np.random.default_rng([13, 1]), 4)
    assert len(a) == 1000 // 64 and all(len(x) == 64 for x in a)
    assert all((x == y).all() for x, y in zip(a, b, strict=True))
    flat = np.concatenate(a)
    assert len(np.unique(flat)) == flat.size
    parts = [replica_slice(a[0], r, 4) for r in range(4)]
    assert [len(p) for p in parts] == [16] * 4
    assert (np.concatenate(parts) == a[0]).all()
    with pytest.raises(ValueError, match="fewer than one global batch"):
        global_batches(lengths[:10], 64, np.random.default_rng(0), 4)


def test_strategy_names(monkeypatch) -> None:
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(ValueError, match="TF_CONFIG"):
        strategy_from_name("multiworker")
    with pytest.raises(ValueError, match="unknown strategy"):
        strategy_from_name("tpu")
    assert strategy_from_name("default").num_replicas_in_sync == 1
    mirrored = strategy_from_name("mirrored")  # no GPU here: the CPU
    assert type(mirrored).__name__ == "MirroredStrategy" and mirrored.num_replicas_in_sync >= 1


def test_cli_names_a_folder_that_is_not_a_stream(tmp_path, capsys) -> None:
    from pipeline.distribute import main

    assert main(["--shards", str(tmp_path), "--preset", "smoke"]) == 2
    assert "not a pipeline.stream folder" in capsys.readouterr().err


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "TF_CONFIG"}
    env.update(PYTHONPATH=str(ROOT), CUDA_VISIBLE_DEVICES="", TF_CPP_MIN_LOG_LEVEL="2",
               OMP_NUM_THREADS="1", **extra)
    return env


def _reference_on_shards(build, shards, cfg, steps: int, lr: float):
    """One device stepping on the global batches two workers read from ``shards``: each step the
    two input pipelines' per-replica batches, concatenated (padding never changes the masked
    student's output), with the mean loss over the global batch."""
    import tensorflow as tf
    import tf_keras as keras

    from pipeline.nn.distribute import Shards, shards_dataset_fn
    from pipeline.nn.train import set_determinism

    set_determinism(cfg.seed)  # tf.data's shuffle order depends on the global seed, as in a worker
    fn = shards_dataset_fn(Shards.open(shards, "train"), 2 * cfg.batch_size,
                           seed=cfg.seed * 1000 + 1)
    its = [iter(fn(tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=i,
                                              num_replicas_in_sync=2))) for i in range(2)]
    model, opt = build(), keras.optimizers.SGD(lr)
    for _ in range(steps):
        xs, ys = zip(*(next(it) for it in its), strict=True)
        width = max(int(x.shape[1]) for x in xs)
        x = tf.concat([tf.pad(x, [[0, 0], [0, width - int(x.shape[1])]]) for x in xs], 0)
        y = tf.concat(ys, 0)
        with tf.GradientTape() as tape:
            p = tf.clip_by_value(tf.reshape(model(x, training=True), [-1]), 1e-7, 1 - 1e-7)
            loss = tf.reduce_mean(-(y * tf.math.log(p) + (1 - y) * tf.math.log(1 - p)))
        grads = tape.gradient(loss, model.trainable_variables)
        opt.apply_gradients(zip(grads, model.trainable_variables, strict=True))
    return model


def test_a_streamed_stage_under_a_strategy_trains_from_shards_of_its_splits(tiny_run, tmp_path) -> None:
    """``pipeline.all`` with a strategy and ``data.stream``: the training stage turns the JSON-lines
    splits into a stream folder (every review once, the tokenizer's ids, its label; reused once
    written) and the strategy's input pipelines read its shard files."""
    from pipeline.config import preset
    from pipeline.data import read_jsonl
    from pipeline.data.stream import make_dataset, splits_to_shards
    from pipeline.nn import stage
    from pipeline.nn.distribute import Shards
    from pipeline.text.tokenizer import Tokenizer

    data, tok_dir = tiny_run
    tok = Tokenizer.load(tok_dir)
    out = splits_to_shards(data, tok, tmp_path / "s", shards=3)
    stamp = (out / "stats.json").stat().st_mtime_ns
    assert splits_to_shards(data, tok, tmp_path / "s", shards=3) == out
    assert (out / "stats.json").stat().st_mtime_ns == stamp and not (tmp_path / "s.tmp").exists()
    for split in ("train", "val", "test"):
        rows = read_jsonl(data / f"{split}.jsonl")
        shards = Shards.open(out, split)
        assert (shards.reviews, shards.seq_len) == (len(rows), 128)
        batches = make_dataset(out, split, 16, shuffle_buffer=0).as_numpy_iterator()
        got = sorted((tuple(x[x > 0].tolist()), float(y)) for xb, yb in batches
                     for x, y in zip(xb, yb, strict=True))
        want = sorted((tuple(ids), float(y)) for ids, (_, y) in
                      zip(tok.ids([t for t, _ in rows]), rows, strict=True))
        assert got == want
    assert Tokenizer.load(out / "tokenizer").ids(["great case"]) == tok.ids(["great case"])

    cfg = preset("smoke")
    summary = stage.train_student(data, tok_dir, tmp_path / "model", tmp_path / "work", cfg.student,
                                  replace(cfg.student_train, max_epochs=1),
                                  strategy_from_name("mirrored"), records=True)
    assert summary["replicas"] == 1 and (tmp_path / "work/shards/train").is_dir()
    assert (tmp_path / "model/model.keras").exists()


@pytest.mark.parametrize("source", ["jsonl", "shards"])
def test_two_cpu_workers_end_with_identical_weights(tiny_run, tiny_shards, tmp_path,
                                                    source: str) -> None:
    """Two MultiWorkerMirroredStrategy workers on loopback, two steps of the smoke student.

    Both start from the same weights as a single-device run here, with dropout off and plain SGD
    (whose step length shows any error in the loss scaling, unlike Adam): the workers must end
    bit-identical to each other and equal to one device stepping on the same global batches.
    ``jsonl``: every worker loads the split and slices the same global batches; ``shards``: each
    worker reads its own two of the four TFRecord files (``pipeline.stream``) from disk.
    """
    import tf_keras as keras

    from pipeline.config import override, preset
    from pipeline.nn.distribute import fit_distributed
    from pipeline.nn.models import build_student
    from pipeline.nn.train import labelled_ids
    from pipeline.text.tokenizer import Tokenizer

    data, tok = tiny_run
    if source == "shards":
        tok = tiny_shards / "tokenizer"
    sets = ["student.dropout=0", "student.embed_dropout=0"]
    cfg = override(preset("smoke"), sets)
    tokenizer = Tokenizer.load(tok)
    keras.utils.set_random_seed(3)
    w_init = build_student(tokenizer.vocab_size, cfg.student).get_weights()
    np.savez(tmp_path / "init.npz", *w_init)

    ports = _free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    procs = []
    for i in range(2):
        tf_config = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}})
        inputs = (["--shards", str(tiny_shards)] if source == "shards" else
                  ["--data", str(data), "--tokenizer", str(tok)])
        cmd = [sys.executable, "-m", "pipeline.distribute", "--strategy", "multiworker", *inputs,
               "--preset", "smoke",
               "--model", "student", "--max-steps", "2", "--out", str(tmp_path / f"model{i}"),
               "--weights-out", str(tmp_path / f"w{i}.npz"), "--init-weights",
               str(tmp_path / "init.npz"), "--sgd", "5.0", *(x for a in sets for x in ("--set", a))]
        procs.append(subprocess.Popen(cmd, cwd=ROOT, env=_env(TF_CONFIG=tf_config),
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))

    # meanwhile, the reference: one device, per-replica batch = the workers' global batch
    def build():
        m = build_student(tokenizer.vocab_size, cfg.student)
        m.set_weights(w_init)
        return m

    if source == "shards":
        ref = _reference_on_shards(build, tiny_shards, cfg.student_train, 2, 5.0)
    else:
        splits = labelled_ids(data, tokenizer)
        ref_cfg = replace(cfg.student_train, batch_size=2 * cfg.student_train.batch_size)
        ref, _ = fit_distributed(build, splits["train"], splits["val"], ref_cfg,
                                 strategy_from_name("default"), max_steps=2,
                                 make_optimizer=lambda: keras.optimizers.SGD(5.0))
    outs = []
    try:
        for p in procs:
            outs.append(p.communicate(timeout=TIMEOUT)[0])
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for i, (p, out) in enumerate(zip(procs, outs, strict=True)):
        assert p.returncode == 0, f"worker {i} failed:\n{out[-3000:]}"
    summaries = [json.loads([ln for ln in out.splitlines() if ln.startswith('{"worker"')][-1])
                 for out in outs]
    assert [s["worker"] for s in summaries] == [0, 1]
    for s in summaries:  # smoke preset: 32 reviews per replica, one replica per worker
        assert s["workers"] == 2 and s["replicas"] == 2 and s["global_batch"] == 64
        assert s["steps"] == 2
    w0, w1 = np.load(tmp_path / "w0.npz"), np.load(tmp_path / "w1.npz")
    assert w0.files == w1.files and len(w0.files) == len(w_init)
    for k in w0.files:
        np.testing.assert_array_equal(w0[k], w1[k], err_msg=k)
    workers = [w0[f"arr_{i}"] for i in range(len(w_init))]
    moved = max(float(np.max(np.abs(a - b))) for a, b in zip(workers, w_init, strict=True))
    diff = max(float(np.max(np.abs(a - b))) for a, b in zip(workers, ref.get_weights(),
                                                             strict=True))
    # a loss averaged per replica instead of over the global batch would double the step
    assert moved > 1e-6 and diff < 1e-3 * moved, (moved, diff)
    # only the chief writes the model directory
    assert (tmp_path / "model0" / "model.keras").exists()
    assert not (tmp_path / "model1").exists()
