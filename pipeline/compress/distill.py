"""Knowledge distillation from the BiGRU teacher into the device student (custom training loop).

The student learns from the labels and from the teacher's temperature-softened output:

    loss = (1 - alpha) * BCE(y, sigmoid(z_s)) + alpha * T^2 * KL(sigmoid(z_t / T) || sigmoid(z_s / T))

with ``z_t``, ``z_s`` the teacher's and student's logits (binary KL: both Bernoulli). The teacher
and the student use different tokenizers, so only per-review quantities are matched here; the
teacher's logits are computed once on the training split with the teacher's own tokenizer.
The step is a ``tf.GradientTape`` loop plugged into :func:`pipeline.nn.train.fit`, which keeps the
batching, early stopping and resumable checkpoints of the other training stages.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import shutil
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import tensorflow as tf
import tf_keras as keras

import pipeline  # noqa: F401
from pipeline.compress.afd import (
    PairAttention,
    TeacherFeatures,
    afd_loss,
    pad_maps,
    student_feature_model,
    teacher_features,
)
from pipeline.compress.ensemble import sigmoid
from pipeline.config import (
    DistillConfig,
    HashedTfidfConfig,
    StudentConfig,
    TfidfConfig,
    TrainConfig,
)
from pipeline.nn.models import logits_model
from pipeline.nn.train import IDS_SPEC, LABELS_SPEC, StepFactory, TrainStep
from pipeline.text.ragged import Ragged, RaggedFile
from pipeline.text.records import IdRecords
from pipeline.text.tokenizer import split_apart

log = logging.getLogger(__name__)


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


def kd_step(teacher_logits: np.ndarray, cfg: DistillConfig,
            features: TeacherFeatures | None = None) -> StepFactory:
    """A training step for :func:`pipeline.nn.train.fit` that distils ``teacher_logits[idx]``.

    With ``features`` and ``cfg.afd_weight > 0`` the loss adds ``afd_weight * L_afd``
    (:func:`pipeline.compress.afd.afd_loss`); the layer-pair attention has its own Adam optimizer.
    """
    teacher_logits = np.asarray(teacher_logits, np.float32)
    use_afd = features is not None and cfg.afd_weight > 0

    def factory(model: keras.Model, optimizer: keras.optimizers.Optimizer) -> TrainStep:
        weights = model.trainable_variables
        if use_afd:
            feats = student_feature_model(model)
            s_dims = [int(o.shape[-1]) for o in feats.outputs[1:]]
            pairs = PairAttention([p.shape[1] for p in features.pooled], s_dims, cfg.afd_dim)
            pair_vars = list(pairs.trainable_variables)
            pair_opt = keras.optimizers.Adam(1e-3)
        else:
            student_logits = logits_model(model)

        # traced once for every batch shape (pipeline.nn.train.IDS_SPEC), its variables made first
        optimizer.build(weights)
        if use_afd:
            pair_opt.build(pair_vars)
        pooled_specs = [tf.TensorSpec([None, int(p.shape[1])], tf.float32)
                        for p in features.pooled] if use_afd else []

        @tf.function(input_signature=[IDS_SPEC, LABELS_SPEC, LABELS_SPEC,
                                      tf.TensorSpec([None, None, None], tf.float32), pooled_specs])
        def step(x, y, z_t, t_maps, t_pooled):
            with tf.GradientTape() as tape:
                if use_afd:
                    z_s, emb, h = feats(x, training=True)
                    afd, _ = afd_loss(x, emb, h, t_maps, t_pooled, pairs)
                    loss = kd_loss(y, z_s, z_t, cfg) + cfg.afd_weight * afd
                else:
                    z_s = student_logits(x, training=True)
                    loss = kd_loss(y, z_s, z_t, cfg)
            if use_afd:
                grads = tape.gradient(loss, weights + pair_vars)
                optimizer.apply_gradients(zip(grads[: len(weights)], weights, strict=True))
                pair_opt.apply_gradients(zip(grads[len(weights):], pair_vars, strict=True))
            else:
                optimizer.apply_gradients(zip(tape.gradient(loss, weights), weights, strict=True))
            correct = tf.reduce_sum(tf.cast(tf.equal(z_s >= 0, y >= 0.5), tf.float32))
            return loss, correct

        totals = {"loss": 0.0, "correct": 0.0, "n": 0}

        def run(x: np.ndarray, y: np.ndarray, idx: np.ndarray, first: bool) -> tuple[float, float]:
            if first:
                totals.update(loss=0.0, correct=0.0, n=0)
            if use_afd:
                t_maps = pad_maps([features.maps[i] for i in idx], x.shape[1])
                t_pooled = [p[idx].astype(np.float32) for p in features.pooled]
            else:
                t_maps, t_pooled = np.zeros((len(idx), 0, 0), np.float32), []
            loss, correct = step(np.asarray(x, np.int32), y.astype(np.float32), teacher_logits[idx],
                                 t_maps, t_pooled)
            totals["loss"] += float(loss) * len(idx)
            totals["correct"] += float(correct)
            totals["n"] += len(idx)
            return totals["loss"] / totals["n"], totals["correct"] / totals["n"]

        if use_afd:  # saved and restored with the model by fit: a resumed run continues them
            run.checkpoint = {"afd_pairs": pairs, "afd_optimizer": pair_opt}  # type: ignore[attr-defined]
        return run

    return factory


def publisher_style(text: str) -> str:
    """``text`` as some corpora's publishers wrote reviews: lowercased, each apostrophe replaced by a
    space (``didn t``) and punctuation set apart by spaces (``great , but``): normalization spec
    v2's own rule (:func:`pipeline.text.tokenizer.split_apart`), so v2 reads both alike."""
    return " ".join(split_apart(text.lower().replace("\u2019", " ")).split())


SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\s*\n\s*")


def sentences(text: str) -> list[str]:
    """``text`` split after ``.``, ``!`` or ``?`` followed by white space, and at line breaks."""
    return [s for s in SENTENCE_END.split(text.strip()) if s.strip()]


def iter_crops(texts: Iterable[str], seed: int, lo: float, hi: float,
               min_words: int = 8, style: float = 0.0, sentence_run: int = 0) -> Iterator[str]:
    """One random contiguous run of ``lo..hi`` of each text's words (texts under ``min_words``
    kept), in order, from one generator seeded ``seed``; with ``style`` > 0, that share of them
    (drawn from a second generator: the crops stay the same) rewritten by :func:`publisher_style`.
    With ``sentence_run`` > 0, a text of two or more sentences (:func:`sentences`) gives a random
    run of 1 to ``sentence_run`` of its whole sentences instead (fewer than all of them).

    Crops are new, shorter reviews for the teacher to label (augmentation for distillation, as in
    Tang et al. 2019): they teach the student the teacher's view of partial evidence, and styled
    crops its view of the same words in another corpus's tokenization; sentence crops, of single
    sentences as several held-out sets are.
    """
    rng, styler = np.random.default_rng(seed), np.random.default_rng([seed, 1])
    for t in texts:
        words = t.split()
        n = len(words)
        sents = sentences(t) if sentence_run > 0 else []
        if len(sents) >= 2:
            k = int(rng.integers(1, min(sentence_run, len(sents) - 1) + 1))
            start = int(rng.integers(0, len(sents) - k + 1))
            t = " ".join(" ".join(sents[start : start + k]).split())
        elif n >= min_words:
            length = int(rng.integers(max(4, int(lo * n)), max(5, int(hi * n)) + 1))
            start = int(rng.integers(0, n - length + 1))
            t = " ".join(words[start : start + length])
        yield publisher_style(t) if style > 0 and styler.random() < style else t


def crop_texts(texts: Iterable[str], seed: int, lo: float, hi: float,
               min_words: int = 8, style: float = 0.0, sentence_run: int = 0) -> list[str]:
    """:func:`iter_crops` as a list."""
    return list(iter_crops(texts, seed, lo, hi, min_words, style, sentence_run))


TARGET_TEXTS, TARGET_LOGITS, TARGET_FEATURES = "texts.jsonl", "teacher_logits.npy", "features"
TARGET_RECORDS = "records"  # data.stream: the student's ids and soft labels in TFRecord shards
FEATURES_VERSION = 2  # 2: a folder read row by row (afd.TeacherFeatures); 1: features.npz


def distillation_texts(data_dir: Path, dcfg: DistillConfig, seed: int,
                       unlabeled: Path | None = None) -> Iterator[str]:
    """The training reviews, then ``dcfg.augment`` rounds of crops of them (round ``k`` seeded
    ``seed * 1000 + k``; the last ``dcfg.sentence_crops`` rounds, or all, crop whole sentences), read
    from ``train.jsonl`` once per round; then the texts of the ``unlabeled`` file
    (:func:`unlabeled_texts`) and the same rounds of crops of them (seeded ``seed * 1000 + 500 + k``)."""
    from pipeline.data import iter_jsonl

    for path, seed0 in ((Path(data_dir) / "train.jsonl", seed * 1000), (unlabeled, seed * 1000 + 500)):
        if path is not None:
            yield from (t for t, _ in iter_jsonl(path))
            yield from _crop_rounds(lambda p=path: (t for t, _ in iter_jsonl(p)), dcfg, seed0)


def _crop_rounds(texts: Callable[[], Iterator[str]], dcfg: DistillConfig, seed0: int) -> Iterator[str]:
    for k in range(dcfg.augment):
        run = dcfg.sentence_run if k >= dcfg.augment - dcfg.sentence_crops else 0
        yield from iter_crops(texts(), seed0 + k, dcfg.crop_min, dcfg.crop_max,
                              style=dcfg.crop_style, sentence_run=run)


def unlabeled_texts(data_path: Path, unlabeled: str, path: Path) -> Path | None:
    """Write the unlabeled distillation texts (``Config.distill_unlabeled``) to ``path``, JSON lines
    without labels, and return it (None for ``"none"``): for ``"three_star"``, the 3★ reviews of the
    raw files at ``data_path`` that fall in the training split (:func:`pipeline.data.split_of`),
    each once, in file order. Memory holds a digest per text, not the texts."""
    from pipeline.data import iter_three_star, split_of, write_jsonl

    if unlabeled == "none":
        return None
    seen: set[bytes] = set()

    def rows() -> Iterator[tuple[str, None]]:
        for s in iter_three_star(data_path):
            key = hashlib.md5(s.encode("utf-8")).digest()
            if key not in seen and split_of(s) == "train":
                seen.add(key)
                yield s, None

    write_jsonl(Path(path), rows())
    log.info("distill: %d unlabeled 3-star training reviews", len(seen))
    return Path(path)


def teacher_targets(data_dir: Path, teacher_dir: Path, student_tok_dir: Path, out_dir: Path,
                    work_dir: Path, dcfg: DistillConfig, seed: int = 13,
                    peer_cfg: TfidfConfig | HashedTfidfConfig = TfidfConfig(),  # noqa: B008
                    records: bool = False, unlabeled: Path | None = None,
                    more_teachers: Sequence[Path] = ()) -> dict:
    """Stage: what the students learn from: the training reviews plus ``dcfg.augment`` crops of each,
    the teacher's logits on all of them (``more_teachers``, other seeds of it: the mean logit of all;
    ``dcfg.ensemble="tfidf"``: mixed with a cross-fitted TF-IDF + LR,
    :mod:`pipeline.compress.ensemble`), and the teacher's AFD maps on the student's tokens.
    The texts of the ``unlabeled`` file (:func:`unlabeled_texts`) and their crops follow, with soft
    labels only.

    ``texts.jsonl`` rows are ``[text, label]``; a crop's label is the teacher's probability. With
    ``records`` (``data.stream``) the rows are written once, as the student tokenizer's ids, to
    TFRecord shards (``records/``, :class:`pipeline.text.records.IdRecords`) that the distillation
    and pruning stages read as they are, instead of ``texts.jsonl``. The texts are generated again
    whenever they are read (:func:`distillation_texts`); apart from the ensemble's cross-fit, memory
    holds a few numbers per text.
    """
    from pipeline.data import iter_jsonl
    from pipeline.text.tokenizer import Tokenizer

    labels = np.array([float(y) for _, y in iter_jsonl(Path(data_dir) / "train.jsonl")])
    n_reviews = len(labels)
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    cache = work_dir / TARGET_FEATURES  # one teacher pass: resumable once it is written
    if cache.exists():
        z_t = np.load(work_dir / TARGET_LOGITS)
    else:
        log.info("distill: teacher pass over %d training reviews and %d rounds of crops",
                 n_reviews, dcfg.augment)
        tmp = work_dir / (TARGET_FEATURES + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        z_t = teacher_features(teacher_dir, Tokenizer.load(student_tok_dir),
                               distillation_texts(data_dir, dcfg, seed, unlabeled), tmp, work_dir / "spans",
                               more=more_teachers)
        np.save(work_dir / TARGET_LOGITS, z_t)
        tmp.replace(cache)
    out_dir = Path(out_dir)
    ensemble = None
    if dcfg.ensemble == "tfidf":
        z_t, ensemble = _ensemble_logits(data_dir, [teacher_dir, *more_teachers], dcfg, z_t, n_reviews,
                                         peer_cfg, seed, out_dir, work_dir, unlabeled)
    (work_dir / TARGET_FEATURES).replace(out_dir / TARGET_FEATURES)
    if ensemble is None:
        (work_dir / TARGET_LOGITS).replace(out_dir / TARGET_LOGITS)
    else:  # the students' soft targets are the mix; the BiGRU's own logits are kept beside them
        (work_dir / TARGET_LOGITS).replace(out_dir / BIGRU_LOGITS)
        np.save(out_dir / TARGET_LOGITS, z_t)
    crops = sigmoid(z_t[n_reviews:])
    rows = ((t, float(labels[j]) if j < n_reviews else float(crops[j - n_reviews]))
            for j, t in enumerate(distillation_texts(data_dir, dcfg, seed, unlabeled)))
    if records:
        from pipeline.nn.train import soft_labelled_ids

        soft_labelled_ids(Tokenizer.load(student_tok_dir), rows, out_dir / TARGET_RECORDS, True)
    else:
        with open(out_dir / TARGET_TEXTS, "w", encoding="utf-8") as f:
            for t, y in rows:
                f.write(json.dumps([t, y], ensure_ascii=False) + "\n")
    agree = float(np.mean((z_t[:n_reviews] >= 0) == (labels >= 0.5)))
    log.info("distill: teacher agrees with %.2f%% of training labels", 100 * agree)
    per_text = 1 + dcfg.augment  # each text and one crop of it per round
    n_unlabeled = len(z_t) // per_text - n_reviews
    return {"reviews": n_reviews, "crops": (per_text - 1) * n_reviews,
            "unlabeled": n_unlabeled, "unlabeled_texts": n_unlabeled * per_text,
            "teacher_train_agreement": agree, "ensemble": ensemble}


ENSEMBLE_JSON, BIGRU_LOGITS = "ensemble.json", "bigru_logits.npy"


def _ensemble_logits(data_dir: Path, teachers: Sequence[Path], dcfg: DistillConfig, z_t: np.ndarray,
                     n_reviews: int, peer_cfg: TfidfConfig | HashedTfidfConfig, seed: int, out_dir: Path,
                     work_dir: Path, unlabeled: Path | None = None) -> tuple[np.ndarray, dict]:
    """The BiGRU teachers' mean logits mixed with cross-fitted TF-IDF ones (weight chosen on
    validation); writes ``ensemble.json`` (validation and test metrics of the teacher, each of
    several teachers, TF-IDF and the mix). ``z_t``: the BiGRU teachers' (mean) logits of the
    ``n_reviews`` training reviews, then of their crops (then of the ``unlabeled`` texts and
    theirs: each scored by one fold's model, as a crop is).

    ``peer_cfg`` a :class:`HashedTfidfConfig` (``data.stream``): the hashed cross-fit, every text
    read as a stream (:func:`ensemble.crossfit_hashed`); else the in-memory one, which holds every
    distillation text."""
    from itertools import islice

    from pipeline.compress import ensemble as ens
    from pipeline.data import iter_jsonl, read_jsonl
    from pipeline.report.metrics import EVAL_CHUNK, compute_metrics, write_json
    from pipeline.report.predictors import load_predictor
    from pipeline.text.tokenizer import chunks

    predictors = [load_predictor(d, "keras") for d in teachers]

    def each_teacher(texts: list[str]) -> np.ndarray:  # [teachers, texts] logits
        return np.stack([ens.logit(p(texts)) for p in predictors])

    split = {s: Path(data_dir) / f"{s}.jsonl" for s in ("train", "val", "test")}
    if isinstance(peer_cfg, HashedTfidfConfig):
        fit = ens.crossfit_hashed(
            iter_jsonl(split["train"]),
            islice(distillation_texts(data_dir, dcfg, seed, unlabeled), n_reviews, None),
            {s: (t for t, _ in iter_jsonl(split[s])) for s in ("val", "test")},
            peer_cfg, Path(work_dir) / "crossfit", dcfg.ensemble_folds, seed)
        z_each, y = {}, {}
        for s in ("val", "test"):  # the teachers' logits and the labels in one streamed pass
            z_parts, y_parts = [np.zeros((len(teachers), 0))], [np.zeros(0, np.int64)]
            for part in chunks(iter_jsonl(split[s]), EVAL_CHUNK):
                z_parts.append(each_teacher([t for t, _ in part]))
                y_parts.append(np.array([int(v) for _, v in part], np.int64))
            z_each[s], y[s] = np.concatenate(z_parts, axis=1), np.concatenate(y_parts)
    else:
        rows = read_jsonl(split["train"])
        texts = list(distillation_texts(data_dir, dcfg, seed, unlabeled))
        sets = {s: read_jsonl(split[s]) for s in ("val", "test")}
        owner = np.arange(len(texts)) % len(rows)
        fit = ens.crossfit_tfidf([t for t, _ in rows], [int(y) for _, y in rows], texts, owner,
                                 {s: [t for t, _ in r] for s, r in sets.items()}, peer_cfg,
                                 dcfg.ensemble_folds, seed)
        z_each = {s: each_teacher([t for t, _ in r]) for s, r in sets.items()}
        y = {s: np.array([int(v) for _, v in r]) for s, r in sets.items()}
    z_sets = {s: z.mean(axis=0) for s, z in z_each.items()}  # the BiGRU half: the teachers' mean
    w, scores = ens.choose_weight(z_sets["val"], fit.sets["val"], y["val"])
    log.info("distill: teacher ensemble weight of TF-IDF %.2f (validation accuracy by weight %s)",
             w, scores)
    report = {"weight": w, "folds": dcfg.ensemble_folds, "val_accuracy_by_weight": scores,
              "tfidf": "hashed" if isinstance(peer_cfg, HashedTfidfConfig) else "vocabulary"}
    if len(teachers) > 1:
        report["teachers"] = [Path(d).name for d in teachers]
    for s in ("val", "test"):
        each = z_each[s] if len(teachers) > 1 else []
        for name, z in (("teacher", z_sets[s]), ("tfidf_crossfit", fit.sets[s]),
                        ("ensemble", ens.mix(z_sets[s], fit.sets[s], w)),
                        *((f"teacher_{k + 1}", z) for k, z in enumerate(each))):
            report.setdefault(s, {})[name] = compute_metrics(y[s], ens.sigmoid(z))
    write_json(out_dir / ENSEMBLE_JSON, report)
    return ens.mix(z_t, fit.train, w).astype(np.float32), {
        "weight": w, "val_accuracy": report["val"]["ensemble"]["accuracy"],
        "test_accuracy": report["test"]["ensemble"]["accuracy"]}


def iter_target_rows(targets_dir: Path) -> Iterator[tuple[str, float]]:
    """``(text, label)`` rows of :func:`teacher_targets` (reviews, then crops), in index order,
    read one line at a time (``texts.jsonl``; see :func:`target_rows`)."""
    with open(Path(targets_dir) / TARGET_TEXTS, encoding="utf-8") as f:
        for line in f:
            text, y = json.loads(line)
            yield text, y


def target_rows(targets_dir: Path) -> IdRecords | Iterator[tuple[str, float]]:
    """What :func:`teacher_targets` wrote for the students to train on: its TFRecord shards of
    student ids (``records/``, when written with ``records``), else :func:`iter_target_rows`."""
    folder = Path(targets_dir) / TARGET_RECORDS
    return IdRecords(folder) if folder.exists() else iter_target_rows(targets_dir)


def target_ids(targets_dir: Path, tok, work_dir: Path,
               records: bool = False) -> tuple[IdRecords | Ragged | RaggedFile, np.ndarray]:
    """``(ids, soft labels)`` of the distillation rows for training: the targets' own shards if
    :func:`teacher_targets` wrote them (written with ``tok``, the student tokenizer), else
    ``texts.jsonl`` tokenized by ``tok`` into ``work_dir`` (``records``: as shards)."""
    from pipeline.nn.train import soft_labelled_ids, train_ids_path

    rows = target_rows(targets_dir)
    if isinstance(rows, IdRecords):
        return rows, rows.labels()
    Path(work_dir).mkdir(parents=True, exist_ok=True)
    return soft_labelled_ids(tok, rows, train_ids_path(work_dir, records), records)


REWIND_WEIGHTS, BRANCH = "rewind.weights.h5", "branch"


def distill_student(
    data_dir: Path, targets_dir: Path, tok_dir: Path, out_dir: Path, work_dir: Path,
    model_cfg: StudentConfig, cfg: TrainConfig, dcfg: DistillConfig, afd: bool = False,
    rewind_epoch: int = 1, branch_from: Path | None = None, records: bool = False,
) -> dict:
    """Stage: train the student on :func:`teacher_targets` with KD (``afd``: + feature distillation).

    The KD run keeps its weights after ``rewind_epoch`` (``rewind.weights.h5``, the Lottery ticket's
    rewind point) and, when ``dcfg.afd_epochs`` > 0, its whole training state after epoch
    ``cfg.max_epochs - dcfg.afd_epochs`` (``branch/``). The AFD student with ``branch_from`` (the KD
    student's folder) resumes that state and trains the last ``afd_epochs`` epochs with the AFD loss
    added: the two students share their first epochs, so AFD costs only the epochs it changes.
    ``records`` (``data.stream``): the training ids are read from TFRecord shards with ``tf.data``
    (:class:`pipeline.text.records.IdRecords`): the targets' own (:func:`target_ids`).
    """
    from pipeline.nn.models import build_student
    from pipeline.nn.train import fit_and_save, labelled_ids, set_determinism
    from pipeline.text.tokenizer import Tokenizer

    targets_dir, work_dir, out_dir = Path(targets_dir), Path(work_dir), Path(out_dir)
    z_t = np.load(targets_dir / TARGET_LOGITS)
    features = TeacherFeatures.load(targets_dir / TARGET_FEATURES) if afd else None
    set_determinism(cfg.seed)
    tok = Tokenizer.load(tok_dir)
    splits = labelled_ids(data_dir, tok, names=("val",))
    work_dir.mkdir(parents=True, exist_ok=True)
    splits["train"] = target_ids(targets_dir, tok, work_dir, records)
    model = build_student(tok.vocab_size, model_cfg)
    kind = "student-kd-afd" if afd else "student-kd"
    step_cfg = dcfg if afd else replace(dcfg, afd_weight=0.0)
    branch_epoch = cfg.max_epochs - dcfg.afd_epochs if dcfg.afd_epochs > 0 else 0
    work_dir.mkdir(parents=True, exist_ok=True)
    branched = None
    if branch_from is not None and (Path(branch_from) / BRANCH / "state.json").exists():
        branched = Path(branch_from)
        if not (work_dir / "state.json").exists():  # a fresh start: continue the KD run's state
            for f in (branched / BRANCH).iterdir():
                if f.name != "state.json":
                    shutil.copy2(f, work_dir / f.name)
            # ... but as a run of its own: its result is its best AFD epoch, and the KD run's early
            # stopping does not stop it (v1 kept the KD run's best: when the AFD epoch did not beat
            # it, or KD had stopped early, the "AFD student" was a KD checkpoint). state.json is
            # written last, by a rename: a kill before it makes the next attempt start over.
            state = json.loads((branched / BRANCH / "state.json").read_text())
            state.update(best_loss=None, best_epoch=0, wait=0)
            tmp = work_dir / "state.json.tmp"
            tmp.write_text(json.dumps(state, indent=2))
            tmp.replace(work_dir / "state.json")
        log.info("%s: continuing the KD student after epoch %d with AFD", kind, branch_epoch)
    elif branch_from is not None:
        log.info("%s: the KD run has no branch point (it stopped before epoch %d): trained from "
                 "scratch", kind, branch_epoch)

    def on_epoch_end(epoch: int) -> None:
        if epoch == rewind_epoch:
            model.save_weights(str(work_dir / REWIND_WEIGHTS))
        if epoch == branch_epoch and not afd:
            kept = work_dir / BRANCH
            shutil.rmtree(kept, ignore_errors=True)
            kept.mkdir()
            for f in [*work_dir.glob(f"ckpt-{epoch}.*"), work_dir / "best.weights.h5"]:
                shutil.copy2(f, kept / f.name)
            shutil.copy2(work_dir / "state.json.tmp", kept / "state.json")  # fit's state of this epoch

    summary = fit_and_save(model, tok, splits, cfg, work_dir, out_dir, kind,
                           make_step=kd_step(z_t, step_cfg, features), on_epoch_end=on_epoch_end)
    for rewind in (work_dir / REWIND_WEIGHTS, *([branched / REWIND_WEIGHTS] if branched else [])):
        if rewind.exists():  # this run's own, else the shared trajectory's (epoch <= the branch)
            shutil.copy2(rewind, out_dir / REWIND_WEIGHTS)
            break
    if (work_dir / BRANCH).exists():
        shutil.copytree(work_dir / BRANCH, out_dir / BRANCH)
    return {**summary, "branched_from_epoch": branch_epoch if branched else None}
