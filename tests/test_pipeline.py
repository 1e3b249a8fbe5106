"""End to end on a slice of real reviews: the smoke preset, reuse, the stream switch and the predict
CLI (a killed ``pipeline.all`` resuming: tests/test_resume.py)."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest

from pipeline import all as pipeline_all
from pipeline import predict

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def smoke_run(real_slice, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("smoke") / "run"
    rc = pipeline_all.main(["--data", str(real_slice["amazon"]), "--heldout",
                            str(real_slice["heldout"]), "--preset", "smoke", "--out", str(out)])
    assert rc == 0
    return out


def _three_star_train(folder: Path) -> list[str]:
    """The review strings of the 3-star rows of ``folder``'s JSON-lines files in the training split."""
    out = []
    for f in sorted(folder.glob("*.jsonl.gz")):
        for line in gzip.open(f, "rt", encoding="utf-8"):
            row = json.loads(line)
            s = f"{row.get('title') or ''} {row['text']}".strip()
            if row.get("rating") == 3 and int(hashlib.md5(s.encode()).hexdigest()[:8], 16) % 10 >= 2:
                out.append(s)
    return out


def test_smoke_run_writes_every_stage_and_report(smoke_run: Path, real_slice) -> None:
    for stage in ("data", "tokenizer", "teacher", "teacher_eval", "peer_tfidf",
                  "student_tokenizer", "student", "student_eval", "teacher_targets", "student_kd",
                  "student_kd_eval", "student_afd", "student_afd_eval", "student_pruned",
                  "prune_eval", "qat", "qat_eval", "int8", "int8_eval", "firmware_export"):
        assert json.loads((smoke_run / stage / "stage.json").read_text())["stage"] == stage
    metrics = json.loads((smoke_run / "teacher_eval" / "metrics.json").read_text())
    test = metrics["test"]
    assert test["n"] > 300
    # A few thousand reviews and three epochs: the teacher must beat chance clearly.
    assert test["roc_auc"] > 0.75 and test["accuracy"] > 0.65
    assert set(metrics["heldout"]) == {"uci_amazon_cells", "li2018_amazon_sent"}
    report = (smoke_run / "report.md").read_text()
    assert "BiGRU teacher" in report and "TF-IDF" in report and "uci_amazon_cells" in report
    assert "Stopword removal" in report
    assert "Baseline / Distilled / Pruned / Quantized" in report and "Lottery Ticket rounds" in report
    assert "## Run time" in report and f"Machine: {os.cpu_count()} CPU cores" in report
    assert "### Balanced accuracy, %" in report  # held-out sets: one table per metric
    pruning = json.loads((smoke_run / "student_pruned" / "pruning.json").read_text())
    assert [r["round"] for r in pruning["rounds"]] == [0, 1]
    assert pruning["rounds"][-1]["flash"]["saved"] >= 0.25  # structured: int8 flash bytes saved
    # The AFD student continues the KD run for its last epoch; both keep the KD run's epoch-1
    # weights, the Lottery ticket's rewind point (no retraining to find it).
    kd = json.loads((smoke_run / "student_kd" / "history.json").read_text())["history"]
    afd_stage = json.loads((smoke_run / "student_afd" / "stage.json").read_text())
    afd = json.loads((smoke_run / "student_afd" / "history.json").read_text())["history"]
    assert afd_stage["summary"]["branched_from_epoch"] == 1 and len(afd) == len(kd) == 2
    assert afd[0] == kd[0] and afd[1]["val_loss"] != kd[1]["val_loss"]
    # ... and is the model of its own AFD epoch, not the KD run's best checkpoint
    assert afd_stage["summary"]["best_epoch"] == 2
    assert afd_stage["summary"]["val_loss"] == afd[1]["val_loss"]
    assert (smoke_run / "student_kd" / "rewind.weights.h5").is_file()
    assert (smoke_run / "student_afd" / "rewind.weights.h5").is_file()
    assert pruning["rewind"]["source"].endswith("rewind.weights.h5")
    for png in (smoke_run / "roc.png", smoke_run / "teacher_eval" / "confusion.png"):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # The students' soft targets are the BiGRU + TF-IDF mix; crops are labelled with the same mix.
    import numpy as np

    targets = smoke_run / "teacher_targets"
    ens = json.loads((targets / "ensemble.json").read_text())
    z, z_bigru = np.load(targets / "teacher_logits.npy"), np.load(targets / "bigru_logits.npy")
    rows = [json.loads(line) for line in (targets / "texts.jsonl").open(encoding="utf-8")]
    # the training reviews and one crop of each (the smoke preset's augment=1), then the raw
    # slice's 3-star reviews of the training split (md5 bucket >= 2, distill.unlabeled) and a crop
    # of each: every row but the reviews labelled by the teacher
    n = json.loads((smoke_run / "data" / "stats.json").read_text())["splits"]["train"]["n"]
    three = _three_star_train(real_slice["amazon"])
    assert three and len(rows) == len(z) == len(z_bigru) == 2 * n + 2 * len(three)
    assert [t for t, _ in rows[2 * n:2 * n + len(three)]] == three
    summary = json.loads((targets / "stage.json").read_text())["summary"]
    assert (summary["reviews"], summary["unlabeled"]) == (n, len(three))
    assert f"; {len(three):,} 3★ training reviews, which the labelled data leaves out" in report
    assert np.allclose([y for _, y in rows[n:]], 1 / (1 + np.exp(-z[n:].astype(np.float64))))
    assert ens["weight"] == 0.0 or not np.allclose(z, z_bigru)
    # The teacher exposes its attention weights for distillation.
    from pipeline.nn.models import feature_model, load_model

    fm = feature_model(load_model(smoke_run / "teacher" / "model.keras"))
    prob, attn, feats = fm(__import__("numpy").array([[5, 6, 7, 0, 0]], dtype="int32"))
    assert attn.shape == (1, 5) and abs(float(attn.numpy().sum()) - 1) < 1e-5
    assert float(attn.numpy()[0, 3:].max()) == 0.0  # padding gets no attention
    assert feats.shape[:2] == (1, 5)


def test_publish_copies_reports_but_no_data_or_models(smoke_run: Path, tmp_path: Path) -> None:
    from pipeline.report.report import publish_report

    files = publish_report(smoke_run, tmp_path / "pub")
    names = {p.relative_to(tmp_path / "pub").as_posix() for p in files}
    assert {"report.md", "roc.png", "teacher_eval/metrics.json", "peer_tfidf/metrics.json",
            "data/stats.json", "teacher/history.json"} <= names
    assert not [n for n in names if n.endswith((".jsonl", ".keras", ".model", ".h5"))]


def test_predict_cli_matches_report(smoke_run: Path, capsys) -> None:
    rc = predict.main([str(smoke_run / "teacher"), str(smoke_run / "data" / "test.jsonl"), "--json"])
    assert rc == 0
    got = json.loads(capsys.readouterr().out)
    want = json.loads((smoke_run / "teacher_eval" / "metrics.json").read_text())["test"]
    for k in ("n", "accuracy", "balanced_accuracy", "precision", "recall", "f1", "roc_auc"):
        assert got[k] == pytest.approx(want[k], abs=1e-9), k


def _check_qat_output(run: Path) -> None:
    """``qat/model.keras`` holds the table as the device stores it (QAT's weights or, when QAT did
    not help, the start's), the float table lies beside it, and the release's step table holds that
    float table's codes."""
    import numpy as np
    import tensorflow as tf

    from pipeline.compress.qat import fake_embedding
    from pipeline.device import gru
    from pipeline.device.convert import LATENT_TABLE
    from pipeline.nn.models import load_model

    summary = json.loads((run / "qat" / "stage.json").read_text())["summary"]
    latent = run / "qat" / LATENT_TABLE
    assert summary["kept"] in ("qat", "start") and latent.exists()
    bits = summary["embedding_bits"]
    float_table = np.load(latent)
    device_table = fake_embedding(tf.constant(float_table), bits).numpy()
    saved = load_model(run / "qat" / "model.keras").get_layer("embedding").get_weights()[0]
    np.testing.assert_array_equal(saved, device_table)
    assert not np.array_equal(saved, float_table)
    quant = json.loads((run / "int8" / "quant.json").read_text())
    rows = np.arange(len(float_table))
    if quant.get("id_map") is not None:
        rows = np.asarray(quant["id_map"])
    p = gru.read_step_flatbuffer((run / "int8" / "step.tflite").read_bytes())
    step_table = gru.embedding_rows(p, rows)[:, :float_table.shape[1]] * p.emb_scale
    # id 0 (padding) never reaches the step: with an id map it shares the zero row (compact_rows)
    np.testing.assert_allclose(step_table[1:], device_table[1:],
                               atol=1e-5 * np.abs(device_table).max())
    assert summary["saved_with_device_table"]["val_accuracy"] > 0.5


def test_int8_student_runs_in_tflm_and_predict_matches_report(smoke_run: Path, capsys) -> None:
    int8 = json.loads((smoke_run / "int8_eval" / "metrics.json").read_text())
    student = json.loads((smoke_run / "qat_eval" / "metrics.json").read_text())
    assert int8["runtime"] == "tflm" and int8["test"]["n"] == student["test"]["n"]
    assert abs(int8["test"]["accuracy"] - student["test"]["accuracy"]) < 0.03
    assert int8["test"]["agreement"] > 0.95  # int8 in TFLM vs the float student it came from
    device = int8["model"]["device"]
    assert device["flash_bytes"] == sum(int8["model_files_bytes"].values())
    assert 0 < device["arena_bytes"] <= 16 * 1024
    if (smoke_run / "qat" / "masks.npz").exists():  # QAT kept the ticket's zeros
        import numpy as np

        from pipeline.compress.prune import load_masks, prunable_weights
        from pipeline.nn.models import load_model

        masks = load_masks(smoke_run / "qat" / "masks.npz")
        qat = load_model(smoke_run / "qat" / "model.keras")
        for name, var in prunable_weights(qat).items():
            assert not np.any(var.numpy()[masks[name] == 0]), name
    _check_qat_output(smoke_run)
    assert "On the device" in (smoke_run / "report.md").read_text()
    rc = predict.main([str(smoke_run / "int8"), str(smoke_run / "data" / "test.jsonl"),
                       "--runtime", "tflm", "--json"])
    assert rc == 0
    got = json.loads(capsys.readouterr().out)
    for k in ("n", "accuracy", "roc_auc"):
        assert got[k] == pytest.approx(int8["test"][k], abs=1e-9), k


def test_predict_cli_unlabeled_and_bad_input(smoke_run: Path, tmp_path: Path, capsys) -> None:
    f = tmp_path / "new.jsonl"
    f.write_text('{"text": "Terrible, broke after a day. Do not buy."}\n'
                 '{"text": "Love it, works great and the price was right!"}\nnot json\n')
    assert predict.main([str(smoke_run / "teacher"), str(f)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2 and all(ln.split("\t")[1] in ("positive", "negative") for ln in lines)
    bad = tmp_path / "bad.txt"
    bad.write_text("just some words\nwith no labels\n")
    assert predict.main([str(smoke_run / "teacher"), str(bad)]) == 2
    assert "error:" in capsys.readouterr().err
    assert predict.main([str(smoke_run / "data"), str(f)]) == 2  # not a model directory


def test_second_run_reuses_every_stage(smoke_run: Path, real_slice, caplog) -> None:
    caplog.set_level("INFO")
    before = {s: (smoke_run / s / "stage.json").read_text() for s in ("data", "teacher")}
    rc = pipeline_all.main(["--data", str(real_slice["amazon"]), "--heldout",
                            str(real_slice["heldout"]), "--preset", "smoke", "--out", str(smoke_run)])
    assert rc == 0
    for s in ("data", "tokenizer", "teacher", "teacher_eval", "peer_tfidf", "student",
              "teacher_targets", "student_kd", "student_afd", "student_pruned", "qat", "int8",
              "int8_eval", "firmware_export"):
        assert f"[{s}] up to date" in caplog.text
    assert {s: (smoke_run / s / "stage.json").read_text() for s in before} == before


def test_stream_switch_trains_from_tfrecord_shards_and_redoes_the_tfidf_peer(
        smoke_run: Path, real_slice, tmp_path: Path, caplog) -> None:
    """``--set data.stream=true`` keeps the stages it does not change (the splits and tokenizers do
    not depend on it), trains from TFRecord shards read with ``tf.data`` and redoes the TF-IDF
    peer and the teacher ensemble with the hashed, out-of-core model; with ``distill.teachers=2``
    a second teacher seed joins the teacher signal."""
    import numpy as np

    from pipeline.compress import distill
    from pipeline.data import iter_jsonl
    from pipeline.report import report
    from pipeline.text.records import IdRecords
    from pipeline.text.tokenizer import Tokenizer

    run = tmp_path / "run"
    shutil.copytree(smoke_run, run)
    caplog.set_level("INFO")
    rc = pipeline_all.main(["--data", str(real_slice["amazon"]), "--heldout",
                            str(real_slice["heldout"]), "--preset", "smoke", "--out", str(run),
                            "--set", "data.stream=true", "--set", "distill.teachers=2",
                            "--until", "qat"])
    assert rc == 0
    for s in ("data", "tokenizer", "peer_fasttext", "student_tokenizer"):
        assert f"[{s}] up to date" in caplog.text
    for s in ("teacher", "teacher_2", "peer_tfidf", "student", "teacher_targets", "student_kd",
              "student_afd", "student_pruned", "qat"):  # the last training stage (int8: test_smoke_run_...)
        assert f"[{s}] running" in caplog.text
    # every training stage read its training split from TFRecord shards
    train_n = json.loads((run / "data" / "stats.json").read_text())["splits"]["train"]["n"]
    texts_n = len(np.load(run / "teacher_targets" / distill.TARGET_LOGITS))
    assert caplog.text.count(f" {train_n} rows in 8 TFRecord shards") == 4  # 2 teachers, student, QAT
    # the teacher targets (reviews and crops) are written once, as the student's ids: KD, AFD and
    # the ticket read those shards; the ids are the in-memory run's texts tokenized
    assert caplog.text.count(f" {texts_n} rows in 8 TFRecord shards") == 1
    targets = IdRecords(run / "teacher_targets" / distill.TARGET_RECORDS)
    assert not (run / "teacher_targets" / distill.TARGET_TEXTS).exists()
    texts = [t for t, _ in distill.iter_target_rows(smoke_run / "teacher_targets")]
    tok = Tokenizer.load(run / "student_tokenizer")
    assert [r.tolist() for r in targets.head(texts_n)] == [list(r) for r in tok.ids(texts)]
    train_labels = [float(y) for _, y in iter_jsonl(run / "data" / "train.jsonl")]
    assert targets.labels()[:train_n].tolist() == train_labels  # the reviews' own labels first
    peer = json.loads((run / "peer_tfidf" / "metrics.json").read_text())
    stats = json.loads((run / "data" / "stats.json").read_text())
    assert peer["hashed"] and peer["stopwords_kept"]["test"]["n"] == stats["splits"]["test"]["n"]
    assert set(peer["stopwords_kept"]["heldout"]) == {"uci_amazon_cells", "li2018_amazon_sent"}
    ens = json.loads((run / "teacher_targets" / distill.ENSEMBLE_JSON).read_text())
    assert ens["tfidf"] == "hashed" and ens["teachers"] == ["teacher", "teacher_2"]
    assert {"teacher", "teacher_1", "teacher_2"} <= set(ens["val"])
    # the BiGRU half of the signal is the two seeds' mean logit
    from pipeline.compress.ensemble import logit
    from pipeline.report.predictors import load_predictor

    z = [logit(load_predictor(run / t)(texts[:40])) for t in ("teacher", "teacher_2")]
    assert not np.allclose(z[0], z[1], atol=1e-3)
    bigru = np.load(run / "teacher_targets" / distill.BIGRU_LOGITS)[:40]
    np.testing.assert_allclose(bigru, (z[0] + z[1]) / 2, atol=1e-4)
    shapes = [np.load(d / "teacher_targets" / distill.TARGET_LOGITS).shape for d in (smoke_run, run)]
    assert shapes[0] == shapes[1]
    text = report.write_report(run, "test").read_text()
    assert peer["name"] in text and "Stopword removal" not in text
