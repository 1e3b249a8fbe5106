"""`python -m pipeline.predict` as a script sees it (the committed int8 release, --runtime tflm: no
TensorFlow), and the console CLI's arguments."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline import console, predict
from pipeline.report.predictors import RUNTIMES, ModelDirError, check_model_dir, default_runtime
from pipeline.text.tokenizer import NO_WORDS, ONLY_UNKNOWN, Tokenizer, no_verdict_reason

ROOT = Path(__file__).resolve().parents[1]
RELEASE = ROOT / "models" / "release"

GOOD = "Love it, works great and the price was right!"
BAD = "Terrible, broke after a day. Do not buy."


def run(capsys: pytest.CaptureFixture, *args: str | Path) -> tuple[int, str, str]:
    rc = predict.main([str(RELEASE), *map(str, args), "--runtime", "tflm"])
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return rc, out, err


def unlabeled(path: Path, *lines: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(ln + "\n" for ln in lines), encoding="utf-8")
    return path


def test_json_lines_carry_line_numbers_past_a_malformed_row(tmp_path: Path) -> None:
    f = unlabeled(tmp_path / "new.jsonl", json.dumps({"text": BAD}), '{"text": broken',
                  "", json.dumps({"text": GOOD}))
    # the command as a user types it: no --runtime (a release folder runs in tflm by default)
    proc = subprocess.run([sys.executable, "-m", "pipeline.predict", str(RELEASE), str(f), "--json"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(ln) for ln in proc.stdout.splitlines()]
    assert [r["line"] for r in rows] == [1, 4]
    assert [r["label"] for r in rows] == ["negative", "positive"]
    assert all(set(r) == {"line", "label", "p_positive"} for r in rows)
    assert rows[0]["p_positive"] < 0.5 <= rows[1]["p_positive"]
    assert "new.jsonl" in proc.stderr and "malformed=1" in proc.stderr and "line 2" in proc.stderr


def test_tensorflow_start_up_noise_is_silenced(tmp_path: Path) -> None:
    """--runtime tflite loads TensorFlow and tf.lite: no CUDA, absl, oneDNN or deprecation lines."""
    f = unlabeled(tmp_path / "new.jsonl", json.dumps({"text": GOOD}))
    proc = subprocess.run([sys.executable, "-m", "pipeline.predict", str(RELEASE), str(f),
                           "--runtime", "tflite"], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("1\tpositive\t")
    for noise in ("cuda", "cuInit", "absl::InitializeLog", "oneDNN", "deprecated", "WARNING"):
        assert noise not in proc.stderr, proc.stderr


def test_plain_output_has_the_line_first(tmp_path: Path, capsys) -> None:
    f = unlabeled(tmp_path / "new.jsonl", "not json", json.dumps({"text": GOOD}))
    rc, out, _ = run(capsys, f)
    assert rc == 0
    line, label, p = out.strip().split("\t")
    assert (line, label) == ("2", "positive") and 0.5 <= float(p) <= 1


def test_folder_of_unlabeled_json_lines(tmp_path: Path, capsys) -> None:
    unlabeled(tmp_path / "in" / "b.jsonl", json.dumps({"text": GOOD}))
    unlabeled(tmp_path / "in" / "a" / "x.jsonl", "{", json.dumps({"text": BAD}),
              json.dumps({"text": GOOD}))
    unlabeled(tmp_path / "in" / "README.md", "# notes")
    rc, out, _ = run(capsys, tmp_path / "in", "--json")
    assert rc == 0
    rows = [json.loads(ln) for ln in out.splitlines()]
    assert [(Path(r["file"]).relative_to(tmp_path / "in").as_posix(), r["line"], r["label"])
            for r in rows] == [("a/x.jsonl", 2, "negative"), ("a/x.jsonl", 3, "positive"),
                               ("b.jsonl", 1, "positive")]
    rc, out, _ = run(capsys, tmp_path / "in")
    assert [ln.split("\t")[:3] for ln in out.splitlines()] == [
        [r["file"], str(r["line"]), r["label"]] for r in rows]


def test_labels_give_one_metrics_object(tmp_path: Path, capsys) -> None:
    f = unlabeled(tmp_path / "l.jsonl", json.dumps({"text": GOOD, "label": 1}),
                  json.dumps({"text": BAD, "label": 0}), json.dumps({"text": "😀😀", "label": 1}),
                  json.dumps({"text": "\u0000\u200b", "label": 0}))
    rc, out, err = run(capsys, f, "--json")
    assert rc == 0
    m = json.loads(out)
    assert m["n"] == 2 and m["accuracy"] == 1.0 and m["excluded"] == 2
    assert "2 review(s) left out of the metrics" in err
    assert NO_WORDS in err and ONLY_UNKNOWN in err


def test_reviews_with_nothing_to_judge_say_why(tmp_path: Path, capsys) -> None:
    f = unlabeled(tmp_path / "u.jsonl", json.dumps({"text": "\u0000"}),
                  json.dumps({"text": "\u200b\u200d"}), json.dumps({"text": "🎉 😀"}),
                  json.dumps({"text": "\ufffd\ufffd"}), json.dumps({"text": GOOD}))
    rc, out, _ = run(capsys, f, "--json")
    assert rc == 0
    rows = [json.loads(ln) for ln in out.splitlines()]
    assert [(r["line"], r["label"], r.get("reason")) for r in rows] == [
        (1, "unknown", NO_WORDS), (2, "unknown", NO_WORDS), (3, "unknown", ONLY_UNKNOWN),
        (4, "unknown", ONLY_UNKNOWN), (5, "positive", None)]
    assert all(r["p_positive"] is None for r in rows[:4])
    rc, out, _ = run(capsys, f)
    assert out.splitlines()[0] == f"1\tunknown\t{NO_WORDS}"


def test_no_verdict_rule() -> None:
    tok = Tokenizer.load(RELEASE)
    space = tok.space_id
    assert no_verdict_reason([], space) == NO_WORDS
    assert no_verdict_reason([space], space) == NO_WORDS
    assert no_verdict_reason([space, 1, space, 1], space) == ONLY_UNKNOWN
    assert no_verdict_reason([space, 1, 57], space) is None
    assert tok.no_verdict_reason(tok.encode("ok 😀")) is None


def test_three_star_rows_are_counted_out_loud(tmp_path: Path, capsys) -> None:
    f = unlabeled(tmp_path / "r.jsonl", json.dumps({"rating": 5, "text": GOOD}),
                  json.dumps({"rating": 3, "text": "it is ok"}),
                  json.dumps({"rating": 1, "text": BAD}))
    rc, out, err = run(capsys, f, "--json")
    assert rc == 0 and json.loads(out)["n"] == 2
    assert "note: 1 3-star review(s) left out" in err and "--three-star" in err
    rc, out, err = run(capsys, f, "--json", "--three-star", "negative")
    assert rc == 0 and json.loads(out)["n"] == 3 and "3-star" not in err
    only3 = unlabeled(tmp_path / "three.jsonl", json.dumps({"rating": 3, "text": "meh"}))
    rc, _, err = run(capsys, only3)
    assert rc == 2 and "three.jsonl" in err and "`--three-star negative`" in err


def test_wrong_model_dir_reported_before_input(tmp_path: Path, capsys) -> None:
    rc = predict.main([str(tmp_path / "no_model"), str(tmp_path / "no_input.jsonl")])
    err = capsys.readouterr().err
    assert rc == 2 and "not a model directory" in err and "no_input" not in err
    rc = predict.main([str(RELEASE), str(tmp_path / "no_input.jsonl"), "--runtime", "keras"])
    err = capsys.readouterr().err
    assert rc == 2 and "no 'keras' model" in err and "no_input" not in err


def test_default_runtime_follows_the_folder(tmp_path: Path) -> None:
    assert default_runtime(RELEASE) == "tflm"
    keras_dir = tmp_path / "teacher"
    keras_dir.mkdir()
    (keras_dir / "model.json").write_text(json.dumps({"runtimes": {"keras": "model.keras"}}))
    assert default_runtime(keras_dir) == "keras"
    assert default_runtime(tmp_path / "nowhere") == "keras"  # check_model_dir then says why
    with pytest.raises(ModelDirError, match="not a model directory"):
        check_model_dir(tmp_path / "nowhere", default_runtime(tmp_path / "nowhere"))


def test_every_argument_has_help() -> None:
    for action in predict._parser()._actions:
        assert action.help, action.dest


def test_help_lists_every_runtime_and_what_a_release_folder_needs(capsys) -> None:
    with pytest.raises(SystemExit) as e:
        predict.main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert list(predict.RUNTIME_HELP) and set(predict.RUNTIME_HELP) == set(RUNTIMES)
    assert "{" + ",".join(RUNTIMES) + "}" in out  # the usage's choices
    listed = out[out.index("runtimes (--runtime):"):]
    for name in RUNTIMES:
        assert f"\n  {name} " in listed, name
    assert "models/release" in listed and "needs --runtime tflm or\nfirmware" in listed
    # what the help promises holds for the committed release folder
    for runtime in ("tflm", "firmware"):
        check_model_dir(RELEASE, runtime)
    with pytest.raises(ModelDirError, match="offers: .*tflm.*firmware"):
        check_model_dir(RELEASE, "keras")


def test_console_port_needs_no_model_dir(monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    calls = []
    monkeypatch.setattr(console, "run_port", lambda *a: calls.append(a[:2]) or 0)
    assert console.main(["--port", "/dev/ttyFAKE"]) == 0
    assert calls == [("/dev/ttyFAKE", 115200)]
    with pytest.raises(SystemExit) as e:
        console.main(["--sim"])
    assert e.value.code == 2 and "--sim needs MODEL_DIR" in capsys.readouterr().err
