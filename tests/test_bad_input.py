"""Bad input as a new user finds it: each case ends with a message naming the file and what to do,
keeps every valid row it can, or both; never a traceback."""

from __future__ import annotations

import bz2
import json
import lzma
import random
from pathlib import Path

import pytest

from pipeline import predict
from pipeline.config import DataConfig
from pipeline.data import DataError, EmptyDatasetError, build_dataset, iter_records, iter_reviews, readers

RELEASE = Path(__file__).resolve().parents[1] / "models" / "release"
GOOD = {"rating": 5, "text": "great, love it"}
BAD = {"rating": 1, "text": "awful, it broke"}


def put(path: Path, content: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content.encode("utf-8") if isinstance(content, str) else content)
    return path


def jl(*rows: dict) -> str:
    return "".join(json.dumps(r) + "\n" for r in rows)


def lines_of(path: Path) -> list[tuple[str, int | None, int]]:
    return [(r.text, r.label, r.line) for r in iter_records(path)]


def predict_err(capsys: pytest.CaptureFixture, path: Path) -> str:
    rc = predict.main([str(RELEASE), str(path), "--runtime", "tflm"])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err
    return err


# ---------------------------------------------------------------------------- rows kept


def test_deeply_nested_json_line_is_malformed_and_the_rest_kept(tmp_path: Path, capsys) -> None:
    deep = '{"a": ' * 100_000 + "1" + "}" * 100_000
    f = put(tmp_path / "deep.jsonl", json.dumps(GOOD) + "\n" + deep + "\n" + json.dumps(BAD) + "\n")
    stats: list = []
    assert [(r.label, r.line) for r in iter_records(f, stats=stats)] == [(1, 1), (0, 3)]
    assert stats[0].malformed == 1
    assert predict.main([str(RELEASE), str(f), "--runtime", "tflm", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["n"] == 2


def test_fasttext_tab_after_label(tmp_path: Path) -> None:
    f = put(tmp_path / "ft.txt", "__label__2\tgreat, love it\n__label__1\t awful\n")
    assert lines_of(f) == [("great, love it", 1, 1), ("awful", 0, 2)]


@pytest.mark.parametrize(("name", "content", "want"), [
    ("cr.jsonl", json.dumps(GOOD) + "\r" + json.dumps(BAD) + "\r",
     [("great, love it", 1, 1), ("awful, it broke", 0, 2)]),
    ("cr.txt", "__label__2 great\r__label__1 awful\r", [("great", 1, 1), ("awful", 0, 2)]),
    ("cr.csv", '"2","t","great"\r"1","t","awful"\r', [("t great", 1, 1), ("t awful", 0, 2)]),
    ("crlf.jsonl", json.dumps(GOOD) + "\r\n" + json.dumps(BAD) + "\r\n",
     [("great, love it", 1, 1), ("awful, it broke", 0, 2)]),
])
def test_cr_only_and_crlf_line_ends(tmp_path: Path, name: str, content: str, want: list) -> None:
    assert lines_of(put(tmp_path / name, content)) == want


@pytest.mark.parametrize(("name", "body"), [
    ("c.jsonl", jl(GOOD, BAD)),
    ("c.txt", "__label__2 great\n__label__1 awful\n"),
    ("c.csv", '"2","t","great"\n"1","t","awful"\n'),
])
def test_leading_comment_lines_are_skipped(tmp_path: Path, name: str, body: str) -> None:
    f = put(tmp_path / name, "# exported 2024-05-01\n#\n# two reviews\n\n" + body)
    stats: list = []
    rows = list(iter_records(f, stats=stats))
    assert [r.line for r in rows] == [5, 6] and [r.label for r in rows] == [1, 0]
    assert stats[0].malformed == 0


def test_unclosed_csv_quote_loses_only_its_own_row(tmp_path: Path) -> None:
    f = put(tmp_path / "q.csv", '"2","Good","works well\n"1","Bad","awful broke"\n'
                                '"2","Fine","ok, with a\nreal newline"\n"1","x","y"\n')
    stats: list = []
    got = [(r.text, r.line) for r in iter_records(f, stats=stats)]
    assert got == [("Bad awful broke", 2), ("Fine ok, with a\nreal newline", 3), ("x y", 5)]
    assert stats[0].malformed == 1


# ---------------------------------------------------------------------------- clear messages


@pytest.mark.parametrize(("name", "content", "says"), [
    ("u16.jsonl", jl(GOOD, BAD).encode("utf-16"), "convert it to UTF-8"),
    ("u16le.jsonl", jl(GOOD, BAD).encode("utf-16-le"), "convert it to UTF-8"),
    ("r.jsonl.bz2", bz2.compress(jl(GOOD).encode()), "bunzip2"),
    ("r.jsonl.xz", lzma.compress(jl(GOOD).encode()), "unxz"),
    ("r.bin", bytes(random.Random(0).randrange(256) for _ in range(4000)), "binary file"),
    ("arr.json", json.dumps([GOOD, BAD], indent=2), "JSON array"),
])
def test_unreadable_kinds_say_what_to_do_in_data_and_predict(
    tmp_path: Path, capsys, name: str, content: str | bytes, says: str
) -> None:
    f = put(tmp_path / name, content)
    with pytest.raises(DataError) as err:
        list(iter_reviews(f))
    msg = str(err.value)
    assert name in msg and says in msg
    if "u16" in name:
        assert "UTF-16" in msg
    assert f"error: {msg}" in predict_err(capsys, f)  # one message source


def test_predict_folder_with_an_unreadable_file(tmp_path: Path, capsys, monkeypatch) -> None:
    put(tmp_path / "in" / "a.jsonl", jl({"text": "fine"}))
    put(tmp_path / "in" / "b.jsonl", jl({"text": "locked"}))
    real_open = open

    def guarded(path, *args, **kwargs):
        if Path(path).name == "b.jsonl":
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(readers, "open", guarded, raising=False)
    err = predict_err(capsys, tmp_path / "in")
    assert "b.jsonl" in err and "make the file readable" in err


def test_error_lists_formats_one_per_line_and_three_star_hint_is_typeable(tmp_path: Path) -> None:
    f = put(tmp_path / "mid.jsonl", jl({"rating": 3, "text": "meh"}))
    with pytest.raises(EmptyDatasetError) as err:
        list(iter_reviews(f))
    msg = str(err.value)
    assert "`--set data.three_star=negative`" in msg and "{" not in msg
    assert max(len(ln) for ln in msg.splitlines()) < 200


# ---------------------------------------------------------------------------- the data stage


def reviews(n: int, one_class: bool = False) -> str:
    return jl(*({"text": f"review number {i}", "label": 1 if one_class else i % 2}
                for i in range(n)))


@pytest.mark.parametrize("n", [10, 40])
def test_too_few_reviews_stop_the_data_stage(tmp_path: Path, n: int) -> None:
    put(tmp_path / "in" / "r.jsonl", reviews(n))
    with pytest.raises(DataError) as err:
        build_dataset(tmp_path / "in", tmp_path / "out", DataConfig())
    msg = str(err.value)
    assert "too few reviews" in msg and "at least 200 reviews" in msg and str(tmp_path / "in") in msg
    assert not (tmp_path / "out").exists()


def test_one_huge_review_stops_the_data_stage(tmp_path: Path) -> None:
    put(tmp_path / "big.jsonl", json.dumps({"text": "word " * 2_000_000, "label": 1}))
    with pytest.raises(DataError, match="big.jsonl"):
        build_dataset(tmp_path / "big.jsonl", tmp_path / "out", DataConfig())


def test_one_class_stops_the_data_stage(tmp_path: Path) -> None:
    put(tmp_path / "pos.jsonl", reviews(400, one_class=True)
        + jl(*({"rating": 3, "text": f"so-so {i}"} for i in range(5))))
    with pytest.raises(DataError) as err:
        build_dataset(tmp_path / "pos.jsonl", tmp_path / "out", DataConfig())
    msg = str(err.value)
    assert "every usable review is positive (400 positive, 0 negative)" in msg
    assert "`--set data.three_star=negative`" in msg


def test_enough_reviews_pass_the_data_stage(tmp_path: Path) -> None:
    put(tmp_path / "r.jsonl", reviews(400))
    stats = build_dataset(tmp_path / "r.jsonl", tmp_path / "out", DataConfig())
    assert min(s["n"] for s in stats["splits"].values()) >= 10
