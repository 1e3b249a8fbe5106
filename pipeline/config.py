"""The one typed configuration of the pipeline, its presets, and ``section.field=value`` overrides.

The ground floor of the package: plain frozen dataclasses, one per section, and nothing from the
rest of ``pipeline`` (no TensorFlow either). Every stage takes its section as an argument; a stage
key is the ``asdict`` of the sections it uses.
"""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from dataclasses import dataclass, field, replace
from typing import Any, Literal, Union, get_args, get_origin

ThreeStar = Literal["drop", "negative", "positive"]
Strategy = Literal["default", "mirrored", "multiworker"]
THREE_STAR_POLICIES: tuple[str, ...] = get_args(ThreeStar)
STRATEGIES: tuple[str, ...] = get_args(Strategy)


def check_three_star(three_star: str) -> None:
    if three_star not in THREE_STAR_POLICIES:
        raise ValueError(
            f"three_star must be one of {', '.join(THREE_STAR_POLICIES)}, not {three_star!r}"
        )


# ----------------------------------------------------------------------------- field types


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def choices(cls: type, name: str) -> tuple[Any, ...] | None:
    """The allowed values of field ``name`` of section ``cls`` (a ``Literal`` type), else None."""
    tp = _hints(cls)[name]
    return get_args(tp) if get_origin(tp) is Literal else None


class _Section:
    """Base of the sections: every ``Literal`` field is checked against its choices."""

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            allowed = choices(type(self), f.name)
            value = getattr(self, f.name)
            if allowed is not None and value not in allowed:
                raise ValueError(
                    f"{f.name} must be one of {', '.join(map(str, allowed))}, not {value!r}"
                )


# ----------------------------------------------------------------------------- sections


@dataclass(frozen=True)
class DataConfig(_Section):
    """How reviews become a labelled dataset."""

    three_star: ThreeStar = "drop"  # "drop" | "negative" | "positive"; 1-2★ -> 0 and 4-5★ -> 1 always
    balance: bool = False  # down-sample the majority class to the minority count, per split
    max_reviews: int | None = None  # keep this many reviews (smallest md5 key) after dedup
    seed: int = 13
    # every stage in memory that does not grow with the reviews: the TF-IDF peer and the teacher
    # ensemble's TF-IDF half become the hashed, out-of-core model (``hashed_peer``; README,
    # "Streaming"). Not part of the data stage's key: the splits do not depend on it.
    stream: bool = False

    def split_key(self) -> dict[str, Any]:
        """The fields the splits depend on (all but ``stream``): the data stage's key."""
        return {k: v for k, v in dataclasses.asdict(self).items() if k != "stream"}

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.max_reviews is not None and self.max_reviews < 1:
            raise ValueError(
                f"max_reviews must be a positive integer or None, not {self.max_reviews}"
            )


@dataclass(frozen=True)
class TokenizerConfig(_Section):
    """How text becomes fixed-length id sequences."""

    vocab_size: int = 16000
    seq_len: int = 512
    truncate: Literal["head", "tail"] = "head"  # head keeps the first seq_len ids, tail the last
    stopwords: bool = False
    # normalization spec (pipeline/text/tokenizer.py): 2 also sets punctuation apart and splits at
    # apostrophes, so text in some corpora's publishers' style reads as the original
    normalization: Literal[1, 2] = 1
    character_coverage: float = 0.9995
    max_train_sentences: int = 2_000_000  # SentencePiece's input_sentence_size
    # the tokenizer stage feeds the BPE at most this many training reviews (a seeded md5 sample
    # when there are more), so its memory stays bounded whatever the number of reviews
    sample_reviews: int = 200_000
    seed: int = 13

    def key(self) -> dict[str, Any]:
        """The tokenizer stage's key: every field, ``normalization`` only when not 1 (so runs from
        before the field keep their keys)."""
        d = dataclasses.asdict(self)
        return d if self.normalization != 1 else {k: v for k, v in d.items() if k != "normalization"}


@dataclass(frozen=True)
class TeacherConfig(_Section):
    """Shape of the teacher network."""

    embed_dim: int = 128
    units: int = 96
    attn_units: int = 64
    dense_units: int = 64
    dropout: float = 0.5
    embed_dropout: float = 0.3
    max_pool: bool = True  # concatenate a masked max over time to the attention pooling
    init_embeddings: Literal["random", "ppmi"] = "random"  # ppmi: SVD of the train split's PPMI


@dataclass(frozen=True)
class StudentConfig(_Section):
    """Shape of the device student: small embedding, small BiGRU, masked mean pooling."""

    # 40 dims (with 8 KD epochs) lifted the int8 student's validation accuracy 92.67 -> 92.94% at
    # 52,040 riscv32 instructions per token (32 dims: 47,268; reports/run-2026-12-03-e40)
    embed_dim: int = 40
    units: int = 32
    dropout: float = 0.2
    embed_dropout: float = 0.1


@dataclass(frozen=True)
class TrainConfig(_Section):
    """Optimisation settings shared by the training stages."""

    batch_size: int = 128
    max_epochs: int = 10
    patience: int = 2
    learning_rate: float = 2e-3
    lr_decay_on_plateau: float = 0.5
    # "cosine": within the run the rate also follows (1 + cos(pi * epochs done / max_epochs)) / 2,
    # batch by batch (resumes exactly: it depends on the epoch and batch index only)
    lr_schedule: Literal["plateau", "cosine"] = "plateau"
    clipnorm: float = 1.0
    bucket_batches: int = 32
    ema: float = 0.0  # >0: evaluate and keep an exponential moving average of the weights
    token_dropout: float = 0.0  # share of training tokens replaced by <unk> (word dropout)
    seed: int = 13


@dataclass(frozen=True)
class DistillConfig(_Section):
    """Knowledge-distillation loss settings."""

    temperature: float = 2.0
    # weight of the soft (teacher) term; 1 - alpha for the labels. KD student on full16's stages
    # (2026-12-04, README "Results"), validation loss / accuracy with 2 crops: alpha 0.85 0.1829 /
    # 92.86%, 0.7 0.1809 / 93.00%, 0.5 0.1787 / 93.09%, 0.3 0.1771 / 93.14%; with 4 crops: 0.7
    # 0.1777 / 93.13%, 0.5 0.1760 / 93.15%. On full19's stages with 4 crops (2026-12-05, a03 / a015):
    # 0.5 0.1773 / 93.09% -> 0.3 0.1756 / 93.22% -> 0.15 0.1746 / 93.36%; int8 release 93.17% ->
    # 93.24% -> 93.26% validation (a015: 93.31% test)
    alpha: float = 0.15
    afd_weight: float = 1.0  # weight of attention-based feature distillation in the AFD stage
    afd_dim: int = 32  # query/key width of AFD's attention over layer pairs
    # the AFD student continues the KD one for its last afd_epochs epochs (0: trained from scratch)
    afd_epochs: int = 1
    # teacher-labelled crops per training review (0: the training split only); 4 rather than 2:
    # see alpha (4 crops and 4 epochs, the same number of steps as 2 crops and 7: 0.1822 / 92.97%);
    # 5 since 2026-12-06, the fifth a third sentence crop (see sentence_crops)
    augment: int = 5
    crop_min: float = 0.2  # a crop keeps a random run of this share ...
    crop_max: float = 0.7  # ... to this share of the review's words
    # share of crops rewritten as some held-out corpora's publishers wrote them (lowercased,
    # apostrophes dropped, punctuation spaced: distill.publisher_style); 0: none. 0.5 on full19's
    # stages (s50, reports/sentences): int8 93.27% validation / 93.19% test against 93.26 / 93.31
    # without (a015)
    crop_style: float = 0.0
    # of the augment rounds, the last sentence_crops (all, if there are fewer) crop a run of 1 to
    # sentence_run whole sentences (distill.sentences) instead of a share of the words. 2 since
    # 2026-12-05: on full19's stages (t2 vs a015, README "Two more on 2026-12-05") KD validation
    # loss 0.1729 vs 0.1746, int8 release 93.36% vs 93.26% validation (93.12% vs 93.31% test).
    # Shorter word crops instead (crop 0.1..0.5, c15): KD 0.1764 / 93.13%. A fifth round, of
    # sentences (augment 5, sentence_crops 3; u5 on u3's stages, 2026-12-06, README "A third
    # sentence crop"): KD validation loss 0.1725 -> 0.1708, int8 release 93.39% -> 93.47%
    sentence_crops: int = 3
    sentence_run: int = 2
    # the distillation targets: the BiGRU teacher alone, or mixed with a cross-fitted TF-IDF + LR
    # (settings of ``peer``; mix weight chosen on validation; pipeline.compress.ensemble)
    ensemble: Literal["none", "tfidf"] = "tfidf"
    ensemble_folds: int = 2
    # unlabeled text for distillation: "three_star", the training split's 3-star reviews that
    # data.three_star="drop" leaves out of the labelled data (none under the other policies, which
    # label them) and ``augment`` rounds of crops of them, learnt from the teacher's soft labels
    # only. On full25's stages (u3, 2026-12-06, README "Unlabeled 3★ reviews"; 1,797 reviews,
    # 8,985 texts beside 500,670): KD validation 93.28 -> 93.40%, int8 release 93.24 -> 93.39%
    unlabeled: Literal["none", "three_star"] = "three_star"
    # BiGRU teachers whose mean logit is the teacher signal: the teacher stage's and teachers - 1
    # more of the same settings and tokenizer, trained with train.seed + 1, ... (stages teacher_2,
    # ...). 2 on u3's stages (u4, 2026-12-06, README "A second teacher seed"): BiGRU validation
    # 92.56 -> 92.86%, the mix 93.44 -> 93.45% (ROC-AUC 0.9786 -> 0.9794); KD student 93.40 ->
    # 93.38%, int8 release 93.39 -> 93.37% validation (93.08 -> 93.37% test). 2 since 2026-12-07:
    # on u5's recipe (u6) the int8 release 93.45% validation with QAT at 1e-4, and with QAT at 3e-4
    # (u6q, README "QAT at 3e-4 on the two-teacher student") 93.57% vs u5's 93.47%
    teachers: int = 2

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.teachers < 1:
            raise ValueError(f"distill.teachers must be at least 1, not {self.teachers}")
        if self.sentence_crops < 0 or self.sentence_run < 1:
            raise ValueError(f"sentence_crops must be at least 0 and sentence_run at least 1, not "
                             f"{self.sentence_crops} and {self.sentence_run}")


@dataclass(frozen=True)
class PruneConfig(_Section):
    """Lottery Ticket schedule: round ``r`` reaches ``min(target, 1 - (1 - rate)^r)`` of the mode's target.

    ``structured`` prunes whole vocabulary rows, embedding dims and GRU unit pairs until that share of
    the model arrays' flash bytes is saved (``target_flash_saving``; the embedding table counted at
    ``quant.embedding_bits``, as the release stores it), then shrinks the student;
    ``unstructured`` prunes single weights to that share of the prunable weights (``target_sparsity``).
    """

    mode: Literal["structured", "unstructured"] = "structured"
    rounds: int = 1  # one round of the full-size budget (each round costs retrain_epochs epochs)
    rate: float = 0.3  # share of what is left (flash bytes, or weights) removed per round
    target_flash_saving: float = 0.5  # structured: share of the dense model arrays' bytes saved
    target_sparsity: float = 0.64  # unstructured: share of the prunable weights set to zero
    # late rewinding: surviving weights go back to their values after this epoch of the distilled
    # student's run; rewind_epoch + retrain_epochs = distill_train.max_epochs gives the ticket the
    # dense student's training length, and the retraining continues its learning-rate schedule
    # (prune.retrain_config). Neither schedule makes the 30% ticket (2,916 of 8,000 rows dropped)
    # as accurate as the dense student (93.00% validation with 8 epochs): rewind to epoch 4 + one
    # epoch from the initial rate 91.96% (reports/run-2026-12-03-e40), rewind to 7 of 8 + the
    # end-of-run rate 91.53%; with 7 epochs, rewind to 6 + the end-of-run rate 91.72% vs the dense
    # 92.97% (reports/full, run of 2026-12-03 at 0f94244).
    rewind_epoch: int = 6
    retrain_epochs: int = 1  # max epochs per round (early stopping as in TrainConfig.patience)
    keep: Literal["deepest_accurate", "last"] = "deepest_accurate"  # deepest round >= dense val acc


@dataclass(frozen=True)
class QuantConfig(_Section):
    """The device's integer formats (``pipeline.device.gru``) and the QAT stage's PTQ vs QAT table.

    ``embedding_bits`` is the release's embedding table: 4 (per-row 4-bit codes rescaled to int8 by
    the operator, V*E/2 + V bytes), 2 (per-row 2-bit codes, V*E/4 + V bytes) or 8 (int8, V*E
    bytes); QAT fake-quantizes the table at it.
    """

    # 2 bits since 2026-12-05: with 6,000 pieces the 2-bit configuration (v6e, README "A 2-bit
    # table", reports/candidate-v6e) beat the published 8,000-piece 4-bit release on validation
    # (int8 93.17% vs 93.13%) at 54% of the flash
    embedding_bits: Literal[2, 4, 8] = 2
    compare_reviews: int = 2000  # validation reviews of the device-path PTQ vs QAT table (0: none)
    # QAT's recurrence: "keras" (Keras' GRU; states rounded on output only) or "spec" (SpecGRUCell:
    # the SIG / TANH tables and the state rounding inside the recurrence simulated too). On the
    # release's student (QAT onward re-run, 2026-12-03) "spec" gave int8 validation 92.96% vs 92.97%:
    # the remaining int8 flips sit at the decision boundary, so "keras" stays the default
    qat_cell: Literal["keras", "spec"] = "keras"


@dataclass(frozen=True)
class TfidfConfig(_Section):
    """Hyper-parameters of the TF-IDF + LR peer."""

    ngram_max: int = 2
    min_df: int = 2
    max_features: int | None = 500_000
    sublinear_tf: bool = True
    C: float = 4.0
    seed: int = 13


@dataclass(frozen=True)
class HashedTfidfConfig(_Section):
    """The streaming path's TF-IDF + LR peer (``pipeline.report.hashed_peer``): hashed n-grams,
    SGD logistic regression, one chunk of reviews in memory at a time."""

    ngram_max: int = 2
    hash_bits: int = 21  # 2^21 columns
    alpha: float = 1e-6  # L2 penalty per review (trial runs on the pool's validation split,
    # outside the repository: 1e-6 beat 2e-6, 5e-6 and 1e-5)
    epochs: int = 8
    chunk: int = 10_000  # reviews per SGD step batch (and per transform)
    seed: int = 13


@dataclass(frozen=True)
class FastTextConfig(_Section):
    """Hyper-parameters of the fastText peer (``epochs`` x ``lrs`` is the validation grid)."""

    word_ngrams: int = 2
    dim: int = 10
    bucket: int = 1_000_000
    min_count: int = 1
    epochs: tuple[int, ...] = (5,)  # 10 epochs never won on validation (reports/full, 2026-12-01)
    lrs: tuple[float, ...] = (0.1, 0.25)
    threads: int = 1  # >1 is faster but not deterministic (Hogwild updates)
    quant_cutoff: int = 100_000  # rows of the input matrix kept by the quantized model
    quant_dsub: int = 2
    seed: int = 13


@dataclass(frozen=True)
class DistributeConfig(_Section):
    """How the training stages place their work (``--set distribute.strategy=mirrored``)."""

    strategy: Strategy = "default"  # multiworker: the cluster comes from TF_CONFIG


@dataclass(frozen=True)
class StreamConfig(_Section):
    """Settings of the streaming path (the tokenizer's come from ``TokenizerConfig``)."""

    three_star: ThreeStar = "drop"
    spill_buckets: int = 256  # memory holds one bucket: about reviews / spill_buckets strings
    shards: int = 8  # TFRecord files per split
    tokenizer_sample: int = 100_000  # training reviews the BPE is trained on, at most
    encode_batch: int = 512
    repeat: int = 1  # measurement aid: read the input N times, copy k > 0 marked " [copy k]"
    seed: int = 13


# ----------------------------------------------------------------------------- the run


@dataclass(frozen=True)
class Config:
    """Everything a run depends on. Stages fingerprint the sections they use."""

    data: DataConfig = field(default_factory=DataConfig)
    # spec v2 since 2026-12-07 (n2, README "Normalization spec v2": KD student 93.57% validation
    # against 93.38% with v1, int8 93.58% against 93.57%, validation sentences 72.94% against
    # 72.30%); both tokenizer sections alike, as AFD requires
    tokenizer: TokenizerConfig = field(default_factory=lambda: TokenizerConfig(normalization=2))
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    # the teacher: validation loss is lowest after epoch 2 and rises after (it overfits)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(max_epochs=2))
    peer: TfidfConfig = field(default_factory=TfidfConfig)
    hashed_peer: HashedTfidfConfig = field(default_factory=HashedTfidfConfig)
    fasttext: FastTextConfig = field(default_factory=FastTextConfig)
    # A larger vocabulary costs flash, not instructions per token (the sweep: 2k -> 4k pieces gave
    # the labels-only student 0.8 points; the distilled 4k student levels off at 92.5% validation
    # whatever the epochs, EMA or alpha, runs of 2026-12-03). 6k pieces with a 2-bit table
    # (quant.embedding_bits) beat 8k pieces at 4 bits on validation at 54% of the flash (v6e,
    # README "A 2-bit table")
    student_tokenizer: TokenizerConfig = field(
        default_factory=lambda: TokenizerConfig(vocab_size=6000, seq_len=512, normalization=2))
    student: StudentConfig = field(default_factory=StudentConfig)
    # the labels-only student (the Baseline row; also the sweep's and pipeline.distribute's)
    student_train: TrainConfig = field(default_factory=lambda: TrainConfig(max_epochs=3))
    # the distilled students (KD, KD + AFD) and the Lottery ticket's retraining: with two crops per
    # review and 32 dims the KD student's validation accuracy levels off after epoch 4 (run of
    # 2026-12-02); with 40 dims 8 epochs beat 5 by 0.23 points (reports/run-2026-12-03-e40), and
    # of those 8 the 8th added nothing (validation 93.00% after 7, 92.99% after 8; the AFD student
    # kept epoch 7): 7 epochs, which also keeps the full run under an hour (issue 14). Word dropout
    # (10% of training tokens -> <unk>) lowered the KD student's validation loss 0.1841 -> 0.1809
    # and lifted its accuracy 92.94 -> 93.00% (20%: 0.1808, 92.91%; runs of 2026-12-04 on full14's
    # stages, README "Results")
    distill_train: TrainConfig = field(default_factory=lambda: TrainConfig(
        max_epochs=7, lr_schedule="cosine", token_dropout=0.1))
    distill: DistillConfig = field(default_factory=DistillConfig)
    prune: PruneConfig = field(default_factory=PruneConfig)
    # QAT at 2 bits: 1e-3 for up to 3 epochs lowered the device-path validation loss 0.18528 (PTQ)
    # -> 0.17413 (v6e); at 4 bits one epoch at 2e-4 had been enough. On t2's stages (2026-12-06,
    # README "Results") the int8 release's validation accuracy went 93.36 / 93.41 / 93.43% at
    # 1e-3 / 3e-4 / 1e-4 (1e-3 overfits in its first epoch): 1e-4. 3e-4 since 2026-12-07: on the
    # two-teacher student (u6 -> u6q) 93.45 -> 93.57%; on u5's one-teacher student 93.47 -> 93.41%
    # (u5q) and on u7's 93.26 -> 93.39% (u7q): which student QAT starts from decides; u6q is the
    # release
    qat_train: TrainConfig = field(default_factory=lambda: TrainConfig(
        max_epochs=3, patience=3, learning_rate=3e-4))
    quant: QuantConfig = field(default_factory=QuantConfig)
    # Tokens per review from QAT on (the release): QAT fine-tunes and the device runs on this many
    # (the students train on student_tokenizer.seq_len tokens). QAT onward re-runs of the release
    # (2026-12-03), int8 validation accuracy: 512 92.97%, 768 93.00%, 1024 92.98% (4% of validation
    # reviews are longer than 512 tokens): within 4 reviews, so 512 stays (less device time).
    release_tokens: int = 512
    distribute: DistributeConfig = field(default_factory=DistributeConfig)
    calibration_reviews: int = 500
    preset: Literal["full", "smoke"] = "full"

    def distill_unlabeled(self) -> str:
        """``distill.unlabeled`` where it adds text: ``"none"`` unless 3★ reviews are left out of the
        labelled data (``data.three_star="drop"``)."""
        return self.distill.unlabeled if self.data.three_star == "drop" else "none"


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
            distill_train=replace(base.distill_train, max_epochs=2, batch_size=32),
            # one teacher: a second (the smoke teacher trains in about 40 s here) would lengthen
            # every smoke run of the tests; tests/test_pipeline.py's streamed smoke run trains two
            distill=replace(base.distill, augment=1, teachers=1),
            prune=replace(base.prune, rewind_epoch=1, retrain_epochs=1),
            qat_train=replace(base.qat_train, max_epochs=1, batch_size=32),
            quant=replace(base.quant, compare_reviews=400),
            fasttext=replace(base.fasttext, epochs=(5,), lrs=(0.25,), bucket=200_000,
                             quant_cutoff=20_000),
            release_tokens=160,
            calibration_reviews=100,
        )
    raise ValueError(f"unknown preset {name!r}: use 'smoke' or 'full'")


def parse_value(value: str, tp: Any) -> Any:
    """Parse the string ``value`` as type ``tp`` (a field's type hint); ValueError says why."""
    origin, args = get_origin(tp), get_args(tp)
    if origin is Literal:
        for a in args:
            if value == str(a):
                return a
        raise ValueError(f"expected one of {', '.join(map(str, args))}, not {value!r}")
    if origin in (Union, types.UnionType):
        if type(None) in args and value.strip().lower() in ("none", "null"):
            return None
        rest = [a for a in args if a is not type(None)]
        if len(rest) != 1:
            raise ValueError(f"cannot parse {value!r} as {tp}")
        return parse_value(value, rest[0])
    if origin is tuple:
        parts = [v.strip() for v in value.split(",") if v.strip()]
        if not parts:
            raise ValueError(f"expected comma-separated values, e.g. 5,10, not {value!r}")
        elem = args[0] if len(args) == 2 and args[1] is Ellipsis else None
        if elem is None:
            raise ValueError(f"cannot parse {value!r} as {tp}")
        return tuple(parse_value(v, elem) for v in parts)
    if tp is bool:
        if value.strip().lower() in ("1", "true", "yes", "on"):
            return True
        if value.strip().lower() in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"expected true or false, not {value!r}")
    if tp in (int, float):
        try:
            return tp(value)
        except ValueError:
            raise ValueError(f"expected {'an integer' if tp is int else 'a number'}, not {value!r}") from None
    if tp is str:
        return value
    raise ValueError(f"cannot parse {value!r} as {tp}")


def override(cfg: Config, assignments: list[str]) -> Config:
    """Apply ``section.field=value`` strings, e.g. ``teacher.units=64`` or ``data.balance=false``, and
    ``field=value`` for the top-level fields (``release_tokens=768``).

    Values are parsed by the field's type: tuples as comma-separated lists (``fasttext.epochs=5,10``),
    ``Literal`` fields must name one of their choices, ``none`` clears an optional field.
    """
    top = {f.name for f in dataclasses.fields(cfg)  # "preset" names a whole configuration: --preset
           if not dataclasses.is_dataclass(getattr(cfg, f.name)) and f.name != "preset"}
    for a in assignments:
        path, sep, value = a.partition("=")
        section, dot, name = path.strip().partition(".")
        if sep and not dot and section in top:  # a top-level field: release_tokens=768
            try:
                cfg = replace(cfg, **{section: parse_value(value.strip(), _hints(type(cfg))[section])})
            except ValueError as e:
                raise ValueError(f"override {a!r}: {e}") from None
            continue
        if not sep or not dot:
            raise ValueError(f"override {a!r}: expected section.field=value or one of "
                             f"{', '.join(sorted(top))}=value")
        sub = getattr(cfg, section, None)
        if sub is None or not dataclasses.is_dataclass(sub):
            raise ValueError(f"override {a!r}: unknown section {section!r}")
        if name not in {f.name for f in dataclasses.fields(sub)}:
            raise ValueError(f"override {a!r}: {section} has no field {name!r}")
        try:
            new = replace(sub, **{name: parse_value(value.strip(), _hints(type(sub))[name])})
        except ValueError as e:
            raise ValueError(f"override {a!r}: {e}") from None
        cfg = replace(cfg, **{section: new})
    return cfg


def to_dict(cfg: Config) -> dict:
    return dataclasses.asdict(cfg)
