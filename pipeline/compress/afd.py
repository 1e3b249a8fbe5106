"""Attention-based feature distillation (AFD, Ji, Heo & Park, AAAI 2021) adapted to sequences.

AFD matches *where* teacher and student put their energy, with a learned attention deciding which
teacher layer each student layer should imitate. Here a layer's map is one value per time step:

* teacher: embedding energy ``mean_c e_t[c]^2``, BiGRU energy ``mean_c h_t[c]^2`` and the attention
  pooling weights ``a_t``; student: embedding energy and BiGRU-state energy.
* The two models tokenize differently (16k vs 4k BPE pieces), so teacher maps are moved onto the
  student's tokens through the shared normalized text: each teacher token's value is spread evenly
  over its UTF-8 bytes, and each student token receives the sum over its own bytes
  (SentencePiece reports byte offsets; both tokenizers see the same normalized string).
* Every map is L2-normalized over the (unpadded) time steps.
* A query per teacher layer (a linear map of its time-averaged features) and a key per student
  layer give ``alpha[t, s] = softmax_s(q_t . k_s / sqrt(d))`` per review, and

      L_afd = mean_batch sum_t sum_s alpha[t, s] * || m_t - m_s ||^2

  The query/key maps train with the student (their own Adam) and are dropped afterwards.

The teacher side (maps aligned to student tokens, time-averaged features) is computed once per
training split by :func:`teacher_features`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tensorflow as tf
import tf_keras as keras

import pipeline  # noqa: F401
from pipeline.compress.ensemble import logit
from pipeline.parallel import run_parallel
from pipeline.progress import Progress

log = logging.getLogger(__name__)

TEACHER_MAPS = ("embedding", "bigru", "attention")
STUDENT_MAPS = ("embedding", "bigru")


@dataclass
class TeacherFeatures:
    """Per training review: teacher maps on student tokens ``[3, T_s]`` and averaged features."""

    maps: list[np.ndarray]  # float16 [len(TEACHER_MAPS), T_s] per review, L2-normalized rows
    pooled: list[np.ndarray]  # per teacher layer: float16 [n, D_layer]

    def save(self, path: Path) -> None:
        lengths = np.array([m.shape[1] for m in self.maps], np.int64)
        flat = (np.concatenate([m for m in self.maps], axis=1) if self.maps
                else np.zeros((len(TEACHER_MAPS), 0), np.float16))
        tmp = path.with_name(path.name + ".tmp.npz")
        np.savez(tmp, lengths=lengths, flat=flat,
                 **{f"pooled_{i}": p for i, p in enumerate(self.pooled)})
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> TeacherFeatures:
        z = np.load(path)
        ends = np.cumsum(z["lengths"])
        starts = ends - z["lengths"]
        flat = z["flat"]
        maps = [flat[:, a:b] for a, b in zip(starts, ends, strict=True)]
        pooled = [z[f"pooled_{i}"] for i in range(len(TEACHER_MAPS))]
        return cls(maps, pooled)


def encode_spans(tok, texts: Sequence[str]) -> tuple[list[list[int]], list[np.ndarray]]:
    """Truncated ids (as ``tok.ids``) and their ``[n_ids, 2]`` UTF-8 byte spans in the normalized
    text, from one encoding."""
    ids, spans = [], []
    for proto in tok.sp.encode([tok.preprocess(t) for t in texts], return_type="proto"):
        pieces = tok.truncate(proto.pieces)
        ids.append([p.id for p in pieces])
        spans.append(np.array([(p.begin, p.end) for p in pieces], np.int64).reshape(-1, 2))
    return ids, spans


def align(values: np.ndarray, src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Move per-token ``values [L, n_src]`` on byte spans ``src`` onto spans ``dst`` -> ``[L, n_dst]``.

    Each source token's value is spread evenly over its bytes; each destination token sums its bytes.
    Zero-width source tokens carry nothing; bytes no source token covers contribute 0.
    """
    if len(dst) == 0:
        return np.zeros((values.shape[0], 0), np.float32)
    end = int(max(src[:, 1].max(initial=0), dst[:, 1].max(initial=0)))
    density = np.zeros((values.shape[0], end + 1), np.float64)
    width = src[:, 1] - src[:, 0]
    j = np.flatnonzero(width > 0)
    w = width[j]
    first = np.cumsum(w) - w  # each kept token's first position in the flat byte list
    byte = np.repeat(src[j, 0], w) + np.arange(int(w.sum())) - np.repeat(first, w)
    np.add.at(density, (slice(None), byte), np.repeat(values[:, j] / w, w, axis=1))
    cum = np.concatenate([np.zeros((values.shape[0], 1)), np.cumsum(density, axis=1)], axis=1)
    return (cum[:, dst[:, 1]] - cum[:, dst[:, 0]]).astype(np.float32)


def l2_rows(m: np.ndarray) -> np.ndarray:
    return m / np.maximum(np.linalg.norm(m, axis=-1, keepdims=True), 1e-8)


def teacher_feature_model(teacher: keras.Model) -> keras.Model:
    """``ids -> (embedding [B,T,E], BiGRU features [B,T,2U], attention weights [B,T], pooled, prob)``."""
    emb = teacher.get_layer("embedding").output
    attn = teacher.get_layer("attention")
    pooled, weights = attn.output
    return keras.Model(teacher.input, [emb, attn.input, weights, pooled, teacher.output],
                       name="teacher_afd")


def teacher_features(teacher_dir: Path, student_tok, texts: Sequence[str],
                     batch_size: int = 128) -> tuple[TeacherFeatures, np.ndarray]:
    """Teacher maps on the student's tokens and time-averaged features, and its logits, for ``texts``.

    One teacher pass (its own tokenizer and truncation); logits are ``log(p / (1 - p))``.
    """
    from pipeline.nn.models import load_model
    from pipeline.nn.train import pad_batch
    from pipeline.text.tokenizer import Tokenizer

    t_tok = Tokenizer.load(teacher_dir)
    feats = teacher_feature_model(load_model(Path(teacher_dir) / "model.keras"))
    log.info("teacher targets: tokenizing %d texts with both tokenizers", len(texts))
    (t_ids, t_spans), (_, s_spans) = run_parallel(encode_spans, [(t_tok, texts),
                                                                (student_tok, texts)])
    n = len(texts)
    maps: list[np.ndarray] = [np.zeros((len(TEACHER_MAPS), 0), np.float16)] * n
    pooled = [np.zeros((n, d), np.float16) for d in
              (int(o.shape[-1]) for o in (feats.outputs[0], feats.outputs[1], feats.outputs[3]))]
    logits = np.zeros(n, np.float32)
    order = np.argsort([len(r) for r in t_ids], kind="stable")
    progress = Progress(n, "teacher targets", "reviews")
    for start in range(0, n, batch_size):
        idx = order[start : start + batch_size]
        e, h, w, p, prob = (np.asarray(a) for a in
                            feats.predict_on_batch(pad_batch([t_ids[i] for i in idx])))
        logits[idx] = logit(prob.reshape(-1))
        energy = np.stack([np.mean(e**2, -1), np.mean(h**2, -1), w], 1)  # [B, 3, T]
        for r, i in enumerate(idx):
            L = len(t_ids[i])
            maps[i] = l2_rows(align(energy[r, :, :L], t_spans[i], s_spans[i])).astype(np.float16)
            pooled[0][i] = e[r, :L].mean(0) if L else 0.0
            pooled[1][i] = h[r, :L].mean(0) if L else 0.0
            pooled[2][i] = p[r]
        progress.update(len(idx))
    progress.close()
    return TeacherFeatures(maps, pooled), logits


def student_feature_model(model: keras.Model) -> keras.Model:
    """``ids -> (logit [B], embedding [B,T,E], BiGRU states [B,T,2U])`` sharing the student's weights."""
    from pipeline.nn.models import logits_model

    return keras.Model(model.input, [logits_model(model).output,
                                     model.get_layer("embedding").output,
                                     model.get_layer("bigru").output], name="student_afd")


class PairAttention(tf.Module):
    """The learned attention over (teacher layer, student layer) pairs: queries and keys."""

    def __init__(self, teacher_dims: Sequence[int], student_dims: Sequence[int], dim: int = 32,
                 seed: int = 13) -> None:
        super().__init__(name="afd_pairs")
        init = keras.initializers.GlorotUniform(seed=seed)
        self.dim = dim
        self.wq = [tf.Variable(init((d, dim)), name=f"q{i}") for i, d in enumerate(teacher_dims)]
        self.wk = [tf.Variable(init((d, dim)), name=f"k{i}") for i, d in enumerate(student_dims)]

    def __call__(self, t_pooled: Sequence[tf.Tensor], s_pooled: Sequence[tf.Tensor]) -> tf.Tensor:
        q = tf.stack([tf.matmul(g, w) for g, w in zip(t_pooled, self.wq, strict=True)], 1)
        k = tf.stack([tf.matmul(g, w) for g, w in zip(s_pooled, self.wk, strict=True)], 1)
        return tf.nn.softmax(tf.matmul(q, k, transpose_b=True) / self.dim ** 0.5, axis=-1)


def _masked_energy(f: tf.Tensor, mask: tf.Tensor) -> tf.Tensor:
    """L2-normalized ``mean_c f^2`` over unmasked steps: ``[B, T, C] -> [B, T]``."""
    m = tf.reduce_mean(tf.square(f), -1) * mask
    return m / tf.maximum(tf.norm(m, axis=-1, keepdims=True), 1e-8)


def _masked_mean(f: tf.Tensor, mask: tf.Tensor) -> tf.Tensor:
    return tf.reduce_sum(f * mask[..., None], 1) / tf.maximum(tf.reduce_sum(mask, 1, keepdims=True), 1.0)


def afd_loss(ids: tf.Tensor, s_emb: tf.Tensor, s_h: tf.Tensor, t_maps: tf.Tensor,
             t_pooled: Sequence[tf.Tensor], pairs: PairAttention) -> tuple[tf.Tensor, tf.Tensor]:
    """``(loss, alpha [B, 3, 2])`` for student features and padded teacher maps ``[B, 3, T]``."""
    mask = tf.cast(tf.not_equal(ids, 0), s_emb.dtype)
    s_maps = tf.stack([_masked_energy(s_emb, mask), _masked_energy(s_h, mask)], 1)  # [B, 2, T]
    diff = t_maps[:, :, None, :] - s_maps[:, None, :, :]  # [B, 3, 2, T]
    dist = tf.reduce_sum(tf.square(diff), -1)
    alpha = pairs(t_pooled, [_masked_mean(s_emb, mask), _masked_mean(s_h, mask)])
    return tf.reduce_mean(tf.reduce_sum(alpha * dist, [1, 2])), alpha


def pad_maps(maps: Sequence[np.ndarray], width: int) -> np.ndarray:
    out = np.zeros((len(maps), len(TEACHER_MAPS), width), np.float32)
    for i, m in enumerate(maps):
        w = min(width, m.shape[1])
        out[i, :, :w] = m[:, :w]
    return out
