"""The one typed configuration of the pipeline, its presets, and ``section.field=value`` overrides."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field, replace
from typing import Any

from pipeline.data import DataConfig
from pipeline.distill import DistillConfig
from pipeline.distribute import DistributeConfig
from pipeline.fasttext_peer import FastTextConfig
from pipeline.models import StudentConfig, TeacherConfig
from pipeline.peers import TfidfConfig
from pipeline.prune import PruneConfig
from pipeline.tokenizer import TokenizerConfig
from pipeline.train import TrainConfig


@dataclass(frozen=True)
class Config:
    """Everything a run depends on. Stages fingerprint the sections they use."""

    data: DataConfig = field(default_factory=DataConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    peer: TfidfConfig = field(default_factory=TfidfConfig)
    fasttext: FastTextConfig = field(default_factory=FastTextConfig)
    student_tokenizer: TokenizerConfig = field(
        default_factory=lambda: TokenizerConfig(vocab_size=4000, seq_len=256))
    student: StudentConfig = field(default_factory=StudentConfig)
    student_train: TrainConfig = field(default_factory=TrainConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    prune: PruneConfig = field(default_factory=PruneConfig)
    qat_train: TrainConfig = field(default_factory=lambda: TrainConfig(
        max_epochs=2, patience=1, learning_rate=2e-4))
    # Tokens per review from QAT on (the release): the students train on the first
    # student_tokenizer.seq_len tokens (faster), QAT fine-tunes and the device runs on this many.
    release_tokens: int = 512
    distribute: DistributeConfig = field(default_factory=DistributeConfig)
    calibration_reviews: int = 500
    preset: str = "full"


def preset(name: str) -> Config:
    """``full`` (the default, the reported run) or ``smoke`` (a few thousand reviews, minutes)."""
    base = Config()
    if name == "full":
        return base
    if name == "smoke":
        return replace(
            base,
            preset="smoke",
            data=replace(base.data, max_reviews=4000),
            tokenizer=replace(base.tokenizer, vocab_size=1000, seq_len=128),
            teacher=replace(base.teacher, embed_dim=32, units=24, attn_units=16, dense_units=16),
            train=replace(base.train, max_epochs=3, batch_size=32),
            student_tokenizer=replace(base.student_tokenizer, vocab_size=500, seq_len=128),
            student=replace(base.student, embed_dim=16, units=16),
            student_train=replace(base.student_train, max_epochs=2, batch_size=32),
            distill=replace(base.distill, augment=1),
            prune=replace(base.prune, retrain_epochs=1),
            qat_train=replace(base.qat_train, max_epochs=1, batch_size=32),
            fasttext=replace(base.fasttext, epochs=(5,), lrs=(0.25,), bucket=200_000,
                             quant_cutoff=20_000),
            release_tokens=160,
            calibration_reviews=100,
        )
    raise ValueError(f"unknown preset {name!r}: use 'smoke' or 'full'")


def _coerce(value: str, current: Any) -> Any:
    if isinstance(current, bool):
        if value.lower() in ("1", "true", "yes", "on"):
            return True
        if value.lower() in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"expected a boolean, got {value!r}")
    if value.lower() in ("none", "null"):
        return None
    if isinstance(current, int):
        return int(value)
    if isinstance(current, float):
        return float(value)
    if current is None:
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    return value


def override(cfg: Config, assignments: list[str]) -> Config:
    """Apply ``section.field=value`` strings, e.g. ``teacher.units=64`` or ``data.balance=false``."""
    for a in assignments:
        path, sep, value = a.partition("=")
        section, dot, name = path.strip().partition(".")
        if not sep or not dot:
            raise ValueError(f"override {a!r}: expected section.field=value")
        sub = getattr(cfg, section, None)
        if sub is None or not dataclasses.is_dataclass(sub):
            raise ValueError(f"override {a!r}: unknown section {section!r}")
        if name not in {f.name for f in dataclasses.fields(sub)}:
            raise ValueError(f"override {a!r}: {section} has no field {name!r}")
        cfg = replace(cfg, **{section: replace(sub, **{name: _coerce(value, getattr(sub, name))})})
    return cfg


def to_dict(cfg: Config) -> dict:
    return dataclasses.asdict(cfg)
