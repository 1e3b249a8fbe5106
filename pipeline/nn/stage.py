"""The training stages of the teacher and the labels-only student: one device, or a strategy.

Each builds its network (:mod:`pipeline.nn.models`), trains it with :func:`pipeline.nn.train.fit`
(or, under a ``tf.distribute`` strategy, :func:`pipeline.nn.distribute.train_distributed`) and
writes a self-contained model directory.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pipeline  # noqa: F401  (selects tf_keras before TensorFlow loads)
from pipeline.config import StudentConfig, TeacherConfig, TrainConfig
from pipeline.nn.models import build_student, build_teacher
from pipeline.nn.train import fit_and_save, labelled_ids, ppmi_embeddings, set_determinism
from pipeline.text.tokenizer import Tokenizer

log = logging.getLogger(__name__)


def _train_distributed(data_dir: Path, tok_dir: Path, out_dir: Path, work_dir: Path, kind: str,
                       model_cfg, cfg: TrainConfig, strategy, records: bool = False) -> dict:
    """A training stage under a ``tf.distribute`` strategy (:mod:`pipeline.nn.distribute`).
    ``records`` (``data.stream``): the splits become a stream folder of TFRecord shards in the work
    folder (:func:`pipeline.data.stream.splits_to_shards`, at least one file a worker) and each
    worker's input pipeline reads its own files."""
    from pipeline.config import StreamConfig
    from pipeline.data.stream import splits_to_shards
    from pipeline.nn.distribute import train_distributed, worker_info

    shards = None
    if records:
        workers = worker_info(strategy)[1]
        shards = splits_to_shards(data_dir, Tokenizer.load(tok_dir), Path(work_dir) / "shards",
                                  max(StreamConfig.shards, workers))
    model, state = train_distributed(data_dir, tok_dir, out_dir, kind, model_cfg, cfg, strategy,
                                     work_dir, shards=shards)
    return {"best_epoch": state["best_epoch"], "val_loss": state["best_loss"],
            "params": int(model.count_params()), "replicas": state["replicas"],
            "global_batch": state["global_batch"]}


def train_teacher(
    data_dir: Path, tok_dir: Path, out_dir: Path, work_dir: Path,
    model_cfg: TeacherConfig, cfg: TrainConfig, strategy=None, records: bool = False,
) -> dict:
    """Stage: train the BiGRU teacher; ``out_dir`` becomes a self-contained model directory.

    With a ``tf.distribute`` ``strategy`` (``pipeline.nn.distribute.strategy_from_name``) it trains
    with ``pipeline.nn.distribute.fit_distributed``: ``cfg.batch_size`` reviews per replica.
    ``records`` (``data.stream``): the training split goes through TFRecord shards and ``tf.data``
    (:class:`pipeline.text.records.IdRecords`; under a strategy, a stream folder whose shard files
    each worker reads its own share of: :func:`_train_distributed`).
    """
    if strategy is not None:
        if model_cfg.init_embeddings != "random":
            raise ValueError("init_embeddings='ppmi' is not supported with a distribution strategy")
        return _train_distributed(data_dir, tok_dir, out_dir, work_dir, "teacher", model_cfg, cfg,
                                  strategy, records)
    set_determinism(cfg.seed)
    tok = Tokenizer.load(tok_dir)
    splits = labelled_ids(data_dir, tok, work_dir=work_dir, records=records)
    model = build_teacher(tok.vocab_size, model_cfg)
    if model_cfg.init_embeddings == "ppmi":
        if records:
            raise ValueError("init_embeddings='ppmi' reads every training review: not with data.stream")
        log.info("teacher: initialising embeddings from PPMI-SVD of the training split")
        emb = ppmi_embeddings(splits["train"][0], tok.vocab_size, model_cfg.embed_dim,
                              seed=cfg.seed)
        model.get_layer("embedding").set_weights([emb])
    return fit_and_save(model, tok, splits, cfg, work_dir, out_dir, "teacher")


def train_student(
    data_dir: Path, tok_dir: Path, out_dir: Path, work_dir: Path,
    model_cfg: StudentConfig, cfg: TrainConfig, strategy=None, records: bool = False,
) -> dict:
    """Stage: train the device student on labels only (the ablation's first row); ``records``:
    as :func:`train_teacher`."""
    if strategy is not None:
        return _train_distributed(data_dir, tok_dir, out_dir, work_dir, "student", model_cfg, cfg,
                                  strategy, records)
    set_determinism(cfg.seed)
    tok = Tokenizer.load(tok_dir)
    model = build_student(tok.vocab_size, model_cfg)
    return fit_and_save(model, tok, labelled_ids(data_dir, tok, work_dir=work_dir, records=records), cfg,
                        work_dir, out_dir, "student")
