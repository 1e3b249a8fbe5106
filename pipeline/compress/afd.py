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

import json
import logging
import os
import shutil
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf
import tf_keras as keras

import pipeline  # noqa: F401
from pipeline.compress.ensemble import logit
from pipeline.parallel import side_worker
from pipeline.progress import Progress
from pipeline.text.ragged import FileReader, Ragged, RaggedWriter, Rows, offsets_of

log = logging.getLogger(__name__)

TEACHER_MAPS = ("embedding", "bigru", "attention")
STUDENT_MAPS = ("embedding", "bigru")


class MapRows(Rows):
    """Row ``i``: the teacher's maps of text ``i`` on its student tokens, float16 ``[3, T_s]``,
    read from ``path`` (the ``[3, T_s]`` blocks one after the other) with ``os.pread``."""

    def __init__(self, path: Path, lengths: np.ndarray) -> None:
        self.offsets = offsets_of(np.asarray(lengths, np.int64))
        self._file = FileReader(path)

    def _read(self, a: int, b: int) -> np.ndarray:
        k = len(TEACHER_MAPS)
        return np.frombuffer(self._file.read(k * (b - a) * 2, k * a * 2), np.float16).reshape(k, b - a)


class PooledRows:
    """A float16 ``[n, d]`` matrix in a file, rows read with ``os.pread``: ``rows[idx]`` is
    ``[len(idx), d]`` for an index array (the numpy array's indexing, without the array)."""

    def __init__(self, path: Path, n: int, d: int) -> None:
        self.shape = (n, d)
        self._file = FileReader(path)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, idx) -> np.ndarray:
        d = self.shape[1]
        rows = [self._file.read(2 * d, 2 * d * int(i)) for i in np.asarray(idx).reshape(-1)]
        return np.frombuffer(b"".join(rows), np.float16).reshape(-1, d)


class FeatureWriter:
    """Writes :class:`TeacherFeatures` into ``folder`` row by row in any order: ``lengths.npy``
    (student tokens per text), ``maps.bin`` and ``pooled_K.bin`` (files of their final size from
    the start; a row is one ``os.pwrite``), ``dims.json``."""

    def __init__(self, folder: Path, lengths: np.ndarray, dims: Sequence[int]) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.lengths = np.asarray(lengths, np.int64)
        self.offsets = offsets_of(self.lengths) * len(TEACHER_MAPS) * 2
        self.dims = [int(d) for d in dims]
        np.save(self.folder / "lengths.npy", self.lengths)
        (self.folder / "dims.json").write_text(json.dumps(self.dims))
        self._fds = []
        for name, size in (("maps.bin", int(self.offsets[-1])),
                           *((f"pooled_{k}.bin", 2 * d * len(self.lengths))
                             for k, d in enumerate(self.dims))):
            fd = os.open(self.folder / name, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
            os.ftruncate(fd, size)
            self._fds.append(fd)

    def put(self, i: int, maps: np.ndarray, pooled: Sequence[np.ndarray]) -> None:
        """Row ``i``: ``maps`` ``[3, lengths[i]]`` and one vector per pooled layer."""
        block = np.ascontiguousarray(maps, np.float16)
        if block.shape != (len(TEACHER_MAPS), self.lengths[i]):
            raise ValueError(f"row {i}: maps of shape {block.shape}, expected "
                             f"({len(TEACHER_MAPS)}, {self.lengths[i]})")
        os.pwrite(self._fds[0], block.tobytes(), int(self.offsets[i]))
        for fd, d, v in zip(self._fds[1:], self.dims, pooled, strict=True):
            os.pwrite(fd, np.asarray(v, np.float16).reshape(d).tobytes(), 2 * d * i)

    def close(self) -> None:
        for fd in self._fds:
            os.close(fd)
        self._fds = []

    def __enter__(self) -> FeatureWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass
class TeacherFeatures:
    """Per distillation text: teacher maps on student tokens ``[3, T_s]`` and averaged features.

    In memory (lists and arrays) or, from :meth:`load`, read from a folder row by row (memory
    holds the row offsets only, whatever the number of texts)."""

    maps: Sequence[np.ndarray]  # float16 [len(TEACHER_MAPS), T_s] per text, L2-normalized rows
    pooled: Sequence[Any]  # per teacher layer: float16 [n, D_layer] (an array or PooledRows)

    def save(self, folder: Path) -> None:
        """Write the folder :meth:`load` reads (replacing what ``folder`` held)."""
        folder = Path(folder)
        tmp = folder.with_name(folder.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        with FeatureWriter(tmp, np.array([m.shape[1] for m in self.maps], np.int64),
                           [p.shape[1] for p in self.pooled]) as writer:
            for i, m in enumerate(self.maps):
                writer.put(i, m, [p[i] for p in self.pooled])
        shutil.rmtree(folder, ignore_errors=True)
        tmp.replace(folder)

    @classmethod
    def load(cls, folder: Path) -> TeacherFeatures:
        folder = Path(folder)
        lengths = np.load(folder / "lengths.npy")
        dims = json.loads((folder / "dims.json").read_text())
        return cls(MapRows(folder / "maps.bin", lengths),
                   [PooledRows(folder / f"pooled_{k}.bin", len(lengths), d)
                    for k, d in enumerate(dims)])


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


def teacher_features(teacher_dir: Path, student_tok, texts: Iterable[str], folder: Path,
                     work: Path, batch_size: int = 128, chunk: int = 8192,
                     more: Sequence[Path] = ()) -> np.ndarray:
    """The teacher's logits on ``texts`` (``log(p / (1 - p))``); its maps on the student's tokens
    and time-averaged features go to ``folder`` (:class:`TeacherFeatures`). ``more``: the folders
    of further teachers of the same tokenizer (other seeds); the logits are then the mean of all
    the teachers' logits (the maps stay the first teacher's).

    One teacher pass (its own tokenizer and truncation), batched by length over all texts. Bounded
    memory: the texts are read once, ``chunk`` at a time, and both tokenizations with their byte
    spans wait in files of ``work``; memory holds a few numbers per text.
    """
    from pipeline.nn.models import load_model
    from pipeline.nn.train import pad_batch, predict_batch
    from pipeline.text.tokenizer import Tokenizer, chunks, encode_spans

    t_tok = Tokenizer.load(teacher_dir)
    seen = [(tok.cfg.normalization, tok.cfg.stopwords) for tok in (t_tok, student_tok)]
    if seen[0] != seen[1]:
        raise ValueError(f"the teacher's and the student's tokenizers preprocess text differently "
                         f"(normalization, stopwords: {seen[0]} vs {seen[1]}): the feature maps "
                         "move through one normalized text; set both tokenizer sections alike")
    for d in more:
        other = Tokenizer.load(d)
        if (other.model_proto, other.cfg) != (t_tok.model_proto, t_tok.cfg):
            raise ValueError(f"teacher {d} has another tokenizer than {teacher_dir}: their logits "
                             "are averaged over one tokenization")
    feats = teacher_feature_model(load_model(Path(teacher_dir) / "model.keras"))
    others = [load_model(Path(d) / "model.keras") for d in more]
    work = Path(work)
    work.mkdir(parents=True, exist_ok=True)
    writers = [RaggedWriter(work / f"{name}.bin") for name in ("t_ids", "t_spans", "s_spans")]
    id_type = Ragged.dtype_for(t_tok.vocab_size)
    with Progress(None, "teacher targets: tokenizing", "texts") as progress, side_worker() as pool:
        for part in chunks(texts, chunk):  # the student's tokenizer beside, in one worker process
            theirs = pool.submit(encode_spans, student_tok, part) if pool else None
            t_ids, t_spans = encode_spans(t_tok, part)
            _, s_spans = theirs.result() if theirs else encode_spans(student_tok, part)
            writers[0].append(Ragged.from_rows(t_ids, id_type))
            for w, spans in zip(writers[1:], (t_spans, s_spans), strict=True):
                w.append(Ragged.from_rows([s.reshape(-1) for s in spans], np.int32))
            progress.update(len(part))
    t_ids, t_spans, s_spans = (w.close() for w in writers)
    n = len(t_ids)
    dims = [int(o.shape[-1]) for o in (feats.outputs[0], feats.outputs[1], feats.outputs[3])]
    logits = np.zeros(n, np.float32)
    order = np.argsort(t_ids.lengths, kind="stable")
    with (FeatureWriter(folder, s_spans.lengths // 2, dims) as out,
          Progress(n, "teacher targets", "reviews") as progress):
        for start in range(0, n, batch_size):
            idx = order[start : start + batch_size]
            rows = [t_ids[i] for i in idx]
            x = pad_batch(rows)
            e, h, w, p, prob = predict_batch(feats, x)
            logits[idx] = np.mean([logit(q.reshape(-1)) for q in
                                   (prob, *(predict_batch(m, x) for m in others))], axis=0)
            energy = np.stack([np.mean(e**2, -1), np.mean(h**2, -1), w], 1)  # [B, 3, T]
            for r, i in enumerate(idx):
                L = len(rows[r])
                src = t_spans[i].astype(np.int64).reshape(-1, 2)
                dst = s_spans[i].astype(np.int64).reshape(-1, 2)
                out.put(i, l2_rows(align(energy[r, :, :L], src, dst)).astype(np.float16),
                        [e[r, :L].mean(0) if L else np.zeros(dims[0]),
                         h[r, :L].mean(0) if L else np.zeros(dims[1]), p[r]])
            progress.update(len(idx))
    for f in (t_ids, t_spans, s_spans):
        f.path.unlink()
    return logits


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
