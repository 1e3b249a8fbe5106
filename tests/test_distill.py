"""Knowledge distillation: the loss, the logits view, and a GradientTape step inside fit."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tensorflow as tf
from test_train import _task  # noqa: E402  (same synthetic task as the training tests)

from pipeline.distill import DistillConfig, kd_loss, kd_step, logits_model
from pipeline.models import StudentConfig, build_student
from pipeline.train import TrainConfig, fit, predict_proba, set_determinism


def test_kd_loss_limits() -> None:
    y = tf.constant([1.0, 0.0, 1.0])
    z_s = tf.constant([2.0, -1.0, 0.5])
    z_t = tf.constant([3.0, -2.0, -1.0])
    bce = tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(labels=y, logits=z_s))
    np.testing.assert_allclose(kd_loss(y, z_s, z_t, DistillConfig(alpha=0.0)), bce, rtol=1e-6)
    assert abs(float(kd_loss(y, z_t, z_t, DistillConfig(alpha=1.0)))) < 1e-6  # KL(p||p) = 0
    assert float(kd_loss(y, z_s, z_t, DistillConfig(alpha=1.0))) > 0
    with tf.GradientTape() as tape:  # the soft term pulls the student's logit toward the teacher's
        z = tf.Variable([0.0])
        loss = kd_loss(tf.constant([1.0]), z, tf.constant([-3.0]), DistillConfig(alpha=1.0))
    assert float(tape.gradient(loss, z)[0]) > 0


def test_logits_model_matches_sigmoid_output() -> None:
    model = build_student(30, StudentConfig(embed_dim=4, units=4))
    x = np.array([[3, 4, 5, 0], [7, 0, 0, 0]], np.int32)
    p = model(x, training=False).numpy()[:, 0]
    z = logits_model(model)(x, training=False).numpy()
    np.testing.assert_allclose(1 / (1 + np.exp(-z)), p, rtol=1e-5, atol=1e-6)


def test_distilled_student_learns_from_teacher_logits(tmp_path: Path) -> None:
    set_determinism(5)
    x, y = _task(500, 0)
    teacher_z = np.where(y > 0.5, 3.0, -3.0).astype(np.float32)  # a confident, correct teacher
    model = build_student(30, StudentConfig(embed_dim=8, units=8, dropout=0.0, embed_dropout=0.0))
    cfg = TrainConfig(batch_size=32, max_epochs=2, patience=2, learning_rate=1e-2, seed=5)
    state = fit(model, (x, y), _task(200, 1), cfg, tmp_path, make_step=kd_step(teacher_z,
                                                                                 DistillConfig()))
    assert [h["epoch"] for h in state["history"]] == [1, 2]
    xt, yt = _task(200, 2)
    assert np.mean((predict_proba(model, xt) >= 0.5) == (yt >= 0.5)) > 0.8
