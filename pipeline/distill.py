"""Knowledge distillation from the BiGRU teacher into the device student (custom training loop).

The student learns from the labels and from the teacher's temperature-softened output:

    loss = (1 - alpha) * BCE(y, sigmoid(z_s)) + alpha * T^2 * KL(sigmoid(z_t / T) || sigmoid(z_s / T))

with ``z_t``, ``z_s`` the teacher's and student's logits (binary KL: both Bernoulli). The teacher
and the student use different tokenizers, so only per-review quantities are matched here; the
teacher's logits are computed once on the training split with the teacher's own tokenizer.
The step is a ``tf.GradientTape`` loop plugged into :func:`pipeline.train.fit`, which keeps the
batching, early stopping and resumable checkpoints of the other training stages.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tensorflow as tf
import tf_keras as keras

import pipeline  # noqa: F401
from pipeline.models import StudentConfig
from pipeline.train import StepFactory, TrainConfig, TrainStep

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistillConfig:
    """Knowledge-distillation loss settings."""

    temperature: float = 2.0
    alpha: float = 0.7  # weight of the soft (teacher) term; 1 - alpha for the labels


def logits_model(model: keras.Model) -> keras.Model:
    """``ids -> pre-sigmoid logit [B]`` sharing the weights of a model ending in Dense "prob"."""
    prob = model.get_layer("prob")
    z = prob.input
    logit = keras.layers.Lambda(lambda t: tf.squeeze(tf.matmul(t, prob.kernel) + prob.bias, -1),
                                name="logit")(z)
    return keras.Model(model.input, logit, name=f"{model.name}_logits")


def kd_loss(y: tf.Tensor, z_s: tf.Tensor, z_t: tf.Tensor, cfg: DistillConfig) -> tf.Tensor:
    """Hard-label BCE plus T^2-scaled binary KL to the softened teacher, mixed by ``alpha``."""
    hard = tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(labels=y, logits=z_s))
    t = cfg.temperature
    p_t = tf.sigmoid(z_t / t)
    # KL(p_t || p_s) = CE(p_t, p_s) - H(p_t), both from logits for numerical safety.
    ce = tf.nn.sigmoid_cross_entropy_with_logits(labels=p_t, logits=z_s / t)
    ent = tf.nn.sigmoid_cross_entropy_with_logits(labels=p_t, logits=z_t / t)
    soft = tf.reduce_mean(ce - ent) * t * t
    return (1.0 - cfg.alpha) * hard + cfg.alpha * soft


def kd_step(teacher_logits: np.ndarray, cfg: DistillConfig) -> StepFactory:
    """A training step for :func:`pipeline.train.fit` that distils ``teacher_logits[idx]``."""
    teacher_logits = np.asarray(teacher_logits, np.float32)

    def factory(model: keras.Model, optimizer: keras.optimizers.Optimizer) -> TrainStep:
        student_logits = logits_model(model)
        weights = model.trainable_variables

        @tf.function(reduce_retracing=True)
        def step(x, y, z_t):
            with tf.GradientTape() as tape:
                z_s = student_logits(x, training=True)
                loss = kd_loss(y, z_s, z_t, cfg)
            optimizer.apply_gradients(zip(tape.gradient(loss, weights), weights, strict=True))
            correct = tf.reduce_sum(tf.cast(tf.equal(z_s >= 0, y >= 0.5), tf.float32))
            return loss, correct

        totals = {"loss": 0.0, "correct": 0.0, "n": 0}

        def run(x: np.ndarray, y: np.ndarray, idx: np.ndarray, first: bool) -> tuple[float, float]:
            if first:
                totals.update(loss=0.0, correct=0.0, n=0)
            loss, correct = step(x, y.astype(np.float32), teacher_logits[idx])
            totals["loss"] += float(loss) * len(idx)
            totals["correct"] += float(correct)
            totals["n"] += len(idx)
            return totals["loss"] / totals["n"], totals["correct"] / totals["n"]

        return run

    return factory


def teacher_logits_for(teacher_dir: Path, texts: list[str]) -> np.ndarray:
    """The teacher's logits for ``texts`` (its own tokenizer and truncation)."""
    from pipeline.predict import load_predictor

    p = np.clip(load_predictor(teacher_dir, "keras")(texts).astype(np.float64), 1e-6, 1 - 1e-6)
    return np.log(p / (1 - p)).astype(np.float32)


def distill_student(
    data_dir: Path, teacher_dir: Path, tok_dir: Path, out_dir: Path, work_dir: Path,
    model_cfg: StudentConfig, cfg: TrainConfig, dcfg: DistillConfig,
) -> dict:
    """Stage: train the student with labels + the teacher's soft targets (KD)."""
    from pipeline.data import read_jsonl
    from pipeline.models import build_student
    from pipeline.tokenizer import Tokenizer
    from pipeline.train import fit_and_save, labelled_ids, set_determinism

    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    cache = work_dir / "teacher_logits.npy"
    if cache.exists():
        z_t = np.load(cache)
    else:
        log.info("distill: teacher logits on the training split")
        texts = [t for t, _ in read_jsonl(Path(data_dir) / "train.jsonl")]
        z_t = teacher_logits_for(teacher_dir, texts)
        np.save(work_dir / "teacher_logits.tmp.npy", z_t)
        (work_dir / "teacher_logits.tmp.npy").replace(cache)
    set_determinism(cfg.seed)
    tok = Tokenizer.load(tok_dir)
    splits = labelled_ids(data_dir, tok)
    agree = float(np.mean((z_t >= 0) == (splits["train"][1] >= 0.5)))
    log.info("distill: teacher agrees with %.2f%% of training labels", 100 * agree)
    model = build_student(tok.vocab_size, model_cfg)
    summary = fit_and_save(model, tok, splits, cfg, work_dir, out_dir, "student-kd",
                           make_step=kd_step(z_t, dcfg))
    return {**summary, "teacher_train_agreement": agree}
