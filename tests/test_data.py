"""Tests for pipeline.data: formats, bad input, splits and the real data."""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import os
import random
from pathlib import Path

import pytest

from pipeline.config import DataConfig
from pipeline.data import (
    FORMATS,
    DataError,
    EmptyDatasetError,
    FileStats,
    UnknownFormatError,
    build_dataset,
    detect_format,
    iter_reviews,
    iter_three_star,
    load_splits,
    read_jsonl,
    readers,
    review_string,
    split_of,
    splits,
    write_jsonl,
)

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def put(path: Path, content: str | bytes, gz: bool = False) -> Path:
    """Write ``content`` to ``path`` (gzip-compressed when ``gz``) and return the path."""
    raw = content.encode("utf-8") if isinstance(content, str) else content
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(raw) if gz else raw)
    return path


def jl(*rows: dict) -> str:
    return "".join(json.dumps(r) + "\n" for r in rows)


def read_all(path: Path, three_star: str = "drop") -> tuple[list[tuple[str, int]], list[FileStats]]:
    stats: list[FileStats] = []
    return list(iter_reviews(path, three_star=three_star, stats=stats)), stats


SAMPLES = {
    "amazon2023": jl(
        {"rating": 5.0, "title": "Great", "text": "works well"},
        {"rating": 1.0, "title": "", "text": "broke at once"},
        {"rating": 2, "text": "meh, no title key"},
    ),
    "mcauley": jl(
        {"overall": 4.0, "summary": "Nice", "reviewText": "good strings"},
        {"overall": 2.0, "summary": "Bad", "reviewText": "snapped"},
        {"overall": 5.0, "reviewText": "no summary"},
    ),
    "labeled_jsonl": jl(
        {"text": "lovely", "label": 1},
        {"text": "awful", "label": 0, "rating": 1.0},
        {"text": "label wins", "label": 0, "rating": 5.0},
    ),
    "polarity_csv": (
        '"2","Great","works well"\n'
        '"1","","broke at once"\n'
        '"1","Bad, really","said ""never"" again"\n'
    ),
    "fasttext": "__label__2 works well\n__label__1 broke at once\n__label__1  padded text  \n",
}
EXPECTED = {
    "amazon2023": [("Great works well", 1), ("broke at once", 0), ("meh, no title key", 0)],
    "mcauley": [("Nice good strings", 1), ("Bad snapped", 0), ("no summary", 1)],
    "labeled_jsonl": [("lovely", 1), ("awful", 0), ("label wins", 0)],
    "polarity_csv": [
        ("Great works well", 1),
        ("broke at once", 0),
        ('Bad, really said "never" again', 0),
    ],
    "fasttext": [("works well", 1), ("broke at once", 0), ("padded text", 0)],
}
# Misleading names: the format must come from the content.
NAMES = {
    "amazon2023": "reviews.csv",
    "mcauley": "x.txt",
    "labeled_jsonl": "labels.csv.gz",
    "polarity_csv": "x.txt",
    "fasttext": "data.json",
}


# ---------------------------------------------------------------------------- formats


@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gzip"])
@pytest.mark.parametrize("fmt", FORMATS)
def test_each_format_detected_by_content_and_read(tmp_path: Path, fmt: str, gz: bool) -> None:
    path = put(tmp_path / NAMES[fmt], SAMPLES[fmt], gz=gz)
    assert detect_format(path) == fmt
    rows, stats = read_all(path)
    assert rows == EXPECTED[fmt]
    assert stats == [FileStats(path=str(path), fmt=fmt, rows=3, used=3)]


def test_folder_with_mixed_formats_sorted_recursive_skips_hidden_and_readme(
    tmp_path: Path,
) -> None:
    put(tmp_path / "b" / "z.gz", SAMPLES["polarity_csv"], gz=True)
    put(tmp_path / "a.jsonl", SAMPLES["amazon2023"])
    put(tmp_path / "c.txt", SAMPLES["fasttext"])
    put(tmp_path / "b" / "m.json", SAMPLES["mcauley"])
    put(tmp_path / ".hidden.jsonl", "not a review file")
    put(tmp_path / ".cache" / "x.jsonl", "not a review file")
    put(tmp_path / "README.md", "# about this data")
    rows, stats = read_all(tmp_path)
    assert [Path(fs.path).relative_to(tmp_path).as_posix() for fs in stats] == [
        "a.jsonl",
        "b/m.json",
        "b/z.gz",
        "c.txt",
    ]
    assert [fs.fmt for fs in stats] == ["amazon2023", "mcauley", "polarity_csv", "fasttext"]
    assert rows == (
        EXPECTED["amazon2023"]
        + EXPECTED["mcauley"]
        + EXPECTED["polarity_csv"]
        + EXPECTED["fasttext"]
    )


def test_mixed_json_keys_in_one_file_decided_per_row(tmp_path: Path) -> None:
    path = put(
        tmp_path / "mixed.jsonl",
        "{not json\n"
        + jl(
            {"rating": 4.0, "title": "", "text": "amazon style"},
            {"overall": 1.0, "summary": "s", "reviewText": "mcauley style"},
            {"text": "labeled", "label": 1},
        ),
    )
    assert detect_format(path) == "amazon2023"  # the first parseable object decides
    rows, stats = read_all(path)
    assert rows == [("amazon style", 1), ("s mcauley style", 0), ("labeled", 1)]
    assert (stats[0].rows, stats[0].malformed) == (4, 1)


@pytest.mark.parametrize(
    ("policy", "expected", "neutral"),
    [
        ("drop", [("one", 0), ("two", 0), ("four", 1), ("five", 1)], 1),
        ("negative", [("one", 0), ("two", 0), ("three", 0), ("four", 1), ("five", 1)], 0),
        ("positive", [("one", 0), ("two", 0), ("three", 1), ("four", 1), ("five", 1)], 0),
    ],
)
def test_three_star_policies(
    tmp_path: Path, policy: str, expected: list[tuple[str, int]], neutral: int
) -> None:
    words = ["one", "two", "three", "four", "five"]
    path = put(
        tmp_path / "r.jsonl",
        jl(*({"rating": float(i + 1), "text": w} for i, w in enumerate(words))),
    )
    rows, stats = read_all(path, policy)
    assert rows == expected
    assert stats[0].dropped_neutral == neutral
    assert stats[0].used == len(expected)


def test_three_star_texts_are_the_dropped_rows_of_every_file(tmp_path: Path) -> None:
    put(tmp_path / "a.jsonl", jl({"rating": 3.0, "title": "Meh", "text": "fine I guess"},
                                 {"rating": 5.0, "text": "great"}, {"rating": 3.0, "text": ""},
                                 {"rating": 3, "text": "so-so", "label": 1}))
    put(tmp_path / "b.csv", '"1","","bad"\n')
    put(tmp_path / "c.jsonl", jl({"overall": 3.0, "reviewText": "okay"}))
    assert list(iter_three_star(tmp_path)) == ["Meh fine I guess", "okay"]  # a label wins; "" is malformed
    assert list(iter_three_star(tmp_path / "b.csv")) == []


def test_labeled_jsonl_label_wins_and_falls_back_to_rating(tmp_path: Path) -> None:
    path = put(
        tmp_path / "h.jsonl",
        jl(
            {"text": "label says no", "label": 0, "rating": 5.0},
            {"text": "no label, 3 stars", "rating": 3.0},
            {"text": "no label, 4 stars", "rating": 4.0},
        ),
    )
    rows, stats = read_all(path)
    assert rows == [("label says no", 0), ("no label, 4 stars", 1)]
    assert stats[0].dropped_neutral == 1


def test_polarity_csv_decodes_backslash_n_and_keeps_real_newlines(tmp_path: Path) -> None:
    content = (
        '"2","Title\\nline two","first\\nsecond, with comma"\n'
        '"1","","real\nnewline inside quotes"\n'
        "2,unquoted,plain text\n"
    )
    path = put(tmp_path / "p.csv", content)
    rows, _ = read_all(path)
    assert rows == [
        ("Title\nline two first\nsecond, with comma", 1),
        ("real\nnewline inside quotes", 0),
        ("unquoted plain text", 1),
    ]


def test_review_string() -> None:
    assert review_string("", "  text ") == "text"
    assert review_string("Title", "text") == "Title text"
    assert review_string(" ", "") == ""


# ---------------------------------------------------------------------------- bad input


def test_malformed_rows_counted_others_kept_and_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    content = (
        jl({"rating": 5.0, "text": "good one"})
        + "{bad json\n"
        + "\n"  # empty lines are skipped silently
        + jl(
            {"rating": 5.0},  # missing text
            {"rating": 5.0, "text": "   "},  # empty text
            {"rating": 7.0, "text": "out of range"},
            {"rating": "five", "text": "not a number"},
            {"rating": 4.5, "text": "half star"},
            {"rating": True, "text": "bool rating"},
            {"text": "bad label", "label": 2},
            {"text": "no label, no rating"},
            {"rating": 1.0, "title": 3, "text": "non-string title"},
        )
        + "[1, 2]\n"
        + jl({"rating": 1.0, "text": "bad one"})
    )
    path = put(tmp_path / "r.jsonl", content)
    caplog.set_level(logging.INFO, logger="pipeline.data.readers")
    rows, stats = read_all(path)
    assert rows == [("good one", 1), ("bad one", 0)]
    assert stats[0] == FileStats(path=str(path), fmt="amazon2023", rows=13, used=2, malformed=11)
    summaries = [r for r in caplog.records if r.name == "pipeline.data.readers"]
    assert len(summaries) == 1
    assert summaries[0].levelno == logging.WARNING
    assert (
        summaries[0]
        .getMessage()
        .startswith("r.jsonl: format=amazon2023 rows=13 used=2 neutral_dropped=0 malformed=11")
    )


def test_byte_order_mark_is_ignored(tmp_path: Path) -> None:
    for fmt in ("amazon2023", "polarity_csv", "fasttext"):
        path = put(tmp_path / fmt, "\ufeff" + SAMPLES[fmt])
        rows, stats = read_all(path)
        assert rows == EXPECTED[fmt]
        assert stats[0].malformed == 0


def test_malformed_csv_and_fasttext_rows(tmp_path: Path) -> None:
    csv_path = put(
        tmp_path / "p.csv",
        '"2","","fine"\n"1","only two"\n"3","","bad class"\n"1","a","b","c"\n"2","title",""\n'
        '"1","","also fine"\n',
    )
    rows, stats = read_all(csv_path)
    assert rows == [("fine", 1), ("also fine", 0)]
    assert (stats[0].rows, stats[0].used, stats[0].malformed) == (6, 2, 4)

    ft_path = put(
        tmp_path / "f.txt",
        "__label__2 fine\n__label__3 bad label\n__label__1\nno label here\n\n__label__1 ok\n",
    )
    rows, stats = read_all(ft_path)
    assert rows == [("fine", 1), ("ok", 0)]
    assert (stats[0].rows, stats[0].used, stats[0].malformed) == (5, 2, 3)


def test_clean_file_logs_one_info_summary(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = put(tmp_path / "r.jsonl.gz", SAMPLES["amazon2023"], gz=True)
    caplog.set_level(logging.INFO, logger="pipeline.data.readers")
    read_all(path)
    msgs = [(r.levelno, r.getMessage()) for r in caplog.records if r.name == "pipeline.data.readers"]
    assert msgs == [
        (logging.INFO, "r.jsonl.gz: format=amazon2023 rows=3 used=3 neutral_dropped=0 malformed=0")
    ]


def test_undecodable_bytes_never_crash(tmp_path: Path) -> None:
    bad = b"\xff\xfe\xc3"
    put(tmp_path / "a.jsonl", b'{"rating": 5.0, "text": "bad ' + bad + b' bytes"}\n')
    put(tmp_path / "b.csv", b'"1","","bad ' + bad + b' bytes"\n', gz=True)
    put(tmp_path / "c.txt", b"__label__2 bad " + bad + b" bytes\n")
    put(tmp_path / "d.jsonl", b'{"text": "lone \\ud800 surrogate", "label": 1}\n')
    rows, stats = read_all(tmp_path)
    assert [y for _, y in rows] == [1, 0, 1, 1]
    assert all("\ufffd" in s for s, _ in rows[:3])
    assert sum(fs.malformed for fs in stats) == 0
    load_splits(tmp_path, DataConfig(balance=False))  # md5 of every s works
    out = tmp_path / "out"
    write_jsonl(out / "x.jsonl", rows)
    assert read_jsonl(out / "x.jsonl") == rows


def test_missing_path_raises_data_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope.jsonl"
    with pytest.raises(DataError, match="nope.jsonl"):
        list(iter_reviews(missing))
    with pytest.raises(DataError, match="nope.jsonl"):
        detect_format(missing)


def test_unreadable_file_raises_data_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = put(tmp_path / "locked.jsonl", SAMPLES["amazon2023"])

    def denied(*args: object, **kwargs: object) -> None:
        raise PermissionError(13, "Permission denied", str(args[0]))

    monkeypatch.setattr(readers, "open", denied, raising=False)
    with pytest.raises(DataError, match=r"locked\.jsonl.*permission denied"):
        list(iter_reviews(path))


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root can read anything")
def test_unreadable_file_chmod(tmp_path: Path) -> None:
    path = put(tmp_path / "locked.jsonl", SAMPLES["amazon2023"])
    path.chmod(0)
    try:
        with pytest.raises(DataError, match="locked.jsonl"):
            list(iter_reviews(path))
    finally:
        path.chmod(0o644)


def test_folder_without_data_files_raises(tmp_path: Path) -> None:
    put(tmp_path / "README.md", "# nothing here")
    put(tmp_path / ".hidden", "x")
    with pytest.raises(DataError, match="no data files") as err:
        list(iter_reviews(tmp_path))
    assert str(tmp_path) in str(err.value)


@pytest.mark.parametrize(
    ("content", "why"),
    [
        ("hello world\nthis is just prose\n", "hello world"),
        (jl({"id": 1, "body": "x"}), "JSON object"),
        (b"PK\x03\x04zipped stuff", "zip"),
    ],
    ids=["prose", "json-keys", "zip"],
)
def test_unknown_format_message(tmp_path: Path, content: str | bytes, why: str) -> None:
    path = put(tmp_path / "mystery.jsonl", content)
    with pytest.raises(UnknownFormatError) as err:
        list(iter_reviews(tmp_path))
    msg = str(err.value)
    assert "mystery.jsonl" in msg
    assert why in msg
    if why == "zip":  # the problem is clear: say what to do, not every format
        assert "unzip" in msg and "gzip" in msg
    else:
        for fmt in FORMATS:
            assert fmt in msg
        assert "README" in msg
        assert max(map(len, msg.splitlines())) < 200  # one format per line
    with pytest.raises(UnknownFormatError):
        detect_format(path)


@pytest.mark.parametrize(
    "content",
    [
        "",
        "\n  \n\n",
        "{bad\n" + jl({"rating": 9.0, "text": "x"}, {"rating": 5.0}, {"text": "y", "label": 5}),
        jl({"rating": 3.0, "text": "meh"}, {"rating": 3.0, "text": "so so"}),
    ],
    ids=["empty", "blank-lines", "all-malformed", "all-three-star"],
)
def test_zero_usable_rows_raises_empty_dataset(tmp_path: Path, content: str) -> None:
    path = put(tmp_path / "e.jsonl", content)
    with pytest.raises(EmptyDatasetError) as err:
        list(iter_reviews(path))
    assert "e.jsonl" in str(err.value)
    assert "README" in str(err.value)
    with pytest.raises(EmptyDatasetError):
        load_splits(tmp_path, DataConfig())


def test_all_malformed_fasttext_is_empty_dataset(tmp_path: Path) -> None:
    path = put(tmp_path / "f.txt", "__label__3 nope\n__label__9 nope\n")
    with pytest.raises(EmptyDatasetError, match="malformed=2"):
        list(iter_reviews(path))


def test_empty_file_in_folder_is_skipped_with_others_kept(tmp_path: Path) -> None:
    put(tmp_path / "a.jsonl", "")
    put(tmp_path / "b.jsonl", SAMPLES["labeled_jsonl"])
    rows, stats = read_all(tmp_path)
    assert rows == EXPECTED["labeled_jsonl"]
    assert [fs.fmt for fs in stats] == ["empty", "labeled_jsonl"]


def test_truncated_gzip_raises_data_error(tmp_path: Path) -> None:
    body = jl(*({"rating": 5.0, "text": f"review number {i} " * 5} for i in range(3000)))
    blob = gzip.compress(body.encode())
    path = put(tmp_path / "cut.jsonl.gz", blob[: len(blob) // 2])
    got: list[tuple[str, int]] = []
    with pytest.raises(DataError, match=r"cut\.jsonl\.gz.*truncated or corrupt") as err:
        for row in iter_reviews(path):
            got.append(row)
    assert 0 < len(got) < 3000
    assert "rows" in str(err.value)
    tiny = put(tmp_path / "tiny.gz", gzip.compress(b'{"rating": 5, "text": "x"}\n')[:12])
    with pytest.raises(DataError, match="tiny.gz"):
        list(iter_reviews(tiny))
    corrupt = put(tmp_path / "bad.gz", b"\x1f\x8b\x08\x00garbage that is not deflate at all")
    with pytest.raises(DataError, match="bad.gz"):
        list(iter_reviews(corrupt))


def test_bad_policy_rejected() -> None:
    with pytest.raises(ValueError, match="three_star"):
        DataConfig(three_star="neutral")
    with pytest.raises(ValueError, match="max_reviews"):
        DataConfig(max_reviews=0)


# ---------------------------------------------------------------------------- splits


def test_split_rule_against_hand_computed_md5() -> None:
    # md5("a") = 0cc175b9c0f1b6a831c399e269772661; 0x0cc175b9 = 214005177 -> bucket 7 -> train
    assert hashlib.md5(b"a").hexdigest() == "0cc175b9c0f1b6a831c399e269772661"
    assert int("0cc175b9", 16) == 214005177
    assert split_of("a") == "train"
    # md5("b") = 92eb5ffee6ae2fec3ad71c777531578f; 0x92eb5ffe = 2464899070 -> bucket 0 -> test
    assert int("92eb5ffe", 16) == 2464899070
    assert hashlib.md5(b"b").hexdigest().startswith("92eb5ffe")
    assert split_of("b") == "test"
    # md5("great product") = c0764179b12b...; 0xc0764179 = 3228975481 -> bucket 1 -> val
    assert int("c0764179", 16) == 3228975481
    assert hashlib.md5(b"great product").hexdigest().startswith("c0764179")
    assert split_of("great product") == "val"


def synthetic(n: int, pos_every: int = 3) -> list[tuple[str, int]]:
    """``n`` distinct reviews; one in ``pos_every`` negative, the rest positive."""
    return [(f"review {i} text", 0 if i % pos_every == 0 else 1) for i in range(n)]


def as_jsonl(rows: list[tuple[str, int]]) -> str:
    return jl(*({"text": s, "label": y} for s, y in rows))


def test_split_determinism_independent_of_input_order(tmp_path: Path) -> None:
    rows = synthetic(300)
    put(tmp_path / "in1" / "all.jsonl", as_jsonl(rows))
    shuffled = rows[:]
    random.Random(0).shuffle(shuffled)
    # a different split into files, in a different format, in a different order
    put(tmp_path / "in2" / "a.csv", "".join(f'"{y + 1}","","{s}"\n' for s, y in shuffled[:150]))
    put(tmp_path / "in2" / "b.jsonl.gz", as_jsonl(shuffled[150:]), gz=True)
    cfg = DataConfig(balance=True)
    s1 = build_dataset(tmp_path / "in1", tmp_path / "out1", cfg)
    s2 = build_dataset(tmp_path / "in2", tmp_path / "out2", cfg)
    for name in ("train", "val", "test"):
        b1 = (tmp_path / "out1" / f"{name}.jsonl").read_bytes()
        assert b1 == (tmp_path / "out2" / f"{name}.jsonl").read_bytes()
        assert s1["splits"][name] == s2["splits"][name]
        for s, _ in read_jsonl(tmp_path / "out1" / f"{name}.jsonl"):
            assert split_of(s) == name
    assert s1["splits"]["train"]["n"] > s1["splits"]["val"]["n"] > 0


def test_dedup_keeps_first_occurrence(tmp_path: Path) -> None:
    put(
        tmp_path / "d.jsonl",
        as_jsonl([("same text", 1), ("other", 0), ("same text", 0), ("other", 0)]),
    )
    splits, stats = load_splits(tmp_path, DataConfig(balance=False))
    got = dict(r for rows in splits.values() for r in rows)
    assert got == {"same text": 1, "other": 0}
    assert stats["totals"]["duplicates"] == 2
    assert stats["totals"]["duplicate_label_conflicts"] == 1
    assert stats["totals"]["unique"] == 2


def test_balance_within_each_split(tmp_path: Path) -> None:
    rows = synthetic(600)
    put(tmp_path / "d.jsonl", as_jsonl(rows))
    unbal, _ = load_splits(tmp_path, DataConfig(balance=False))
    bal, stats = load_splits(tmp_path, DataConfig(balance=True, seed=5))
    for name in ("train", "val", "test"):
        pos = [s for s, y in bal[name] if y == 1]
        neg = [s for s, y in bal[name] if y == 0]
        all_neg = [s for s, y in unbal[name] if y == 0]
        all_pos = [s for s, y in unbal[name] if y == 1]
        assert len(all_pos) > len(all_neg) > 0
        assert sorted(neg) == sorted(all_neg)  # the minority is kept whole
        key = lambda s: hashlib.md5(f"5:bal:{s}".encode()).hexdigest()  # noqa: E731
        assert sorted(pos) == sorted(sorted(all_pos, key=key)[: len(all_neg)])
        assert stats["splits"][name] == {
            "n": 2 * len(all_neg),
            "positives": len(all_neg),
            "negatives": len(all_neg),
            "before_balance": len(unbal[name]),
        }
        order = [hashlib.md5(f"5:order:{s}".encode()).hexdigest() for s, _ in bal[name]]
        assert order == sorted(order)


def test_max_reviews_cap(tmp_path: Path) -> None:
    rows = synthetic(200)
    put(tmp_path / "a" / "d.jsonl", as_jsonl(rows))
    put(tmp_path / "b" / "d.jsonl", as_jsonl(rows[::-1]))
    cfg = DataConfig(balance=False, max_reviews=50, seed=7)
    sa, stats = load_splits(tmp_path / "a", cfg)
    sb, _ = load_splits(tmp_path / "b", cfg)
    assert sa == sb
    kept = {s for split in sa.values() for s, _ in split}
    want = sorted((s for s, _ in rows), key=lambda s: hashlib.md5(f"7:{s}".encode()).hexdigest())
    assert kept == set(want[:50])
    assert stats["totals"]["capped"] == 150
    assert sum(v["n"] for v in stats["splits"].values()) == 50


def _reference_splits(rows: list[tuple[str, int]], cfg: DataConfig) -> dict:
    """The documented rules, in memory: first label wins, cap, md5 split, balance, order."""
    md5 = lambda tag, s: hashlib.md5(f"{tag}{s}".encode()).hexdigest()  # noqa: E731
    labels: dict[str, int] = {}
    for s, y in rows:
        labels.setdefault(s, y)
    items = sorted(labels.items(), key=lambda it: md5(f"{cfg.seed}:", it[0]))[: cfg.max_reviews]
    out = {}
    for name in ("train", "val", "test"):
        here = [it for it in items if split_of(it[0]) == name]
        pos, neg = [it for it in here if it[1]], [it for it in here if not it[1]]
        if cfg.balance:
            minority, majority = (pos, neg) if len(pos) <= len(neg) else (neg, pos)
            majority = sorted(majority, key=lambda it: md5(f"{cfg.seed}:bal:", it[0]))
            here = minority + majority[: len(minority)]
        out[name] = sorted(here, key=lambda it: md5(f"{cfg.seed}:order:", it[0]))
    return out


@pytest.mark.parametrize("cfg", [DataConfig(balance=False), DataConfig(balance=True, seed=4),
                                 DataConfig(balance=True, max_reviews=300)])
def test_streamed_splits_equal_the_rules_in_memory_for_any_bucket_count(tmp_path: Path,
                                                                         cfg: DataConfig) -> None:
    rows = synthetic(500)
    dups = [(s, 1 - y) for s, y in rows[::7]]  # duplicates with the other label: first one wins
    rows += dups
    random.Random(1).shuffle(rows)
    put(tmp_path / "in" / "d.jsonl", as_jsonl(rows))
    want = _reference_splits(rows, cfg)
    for buckets in (1, 3, 256):
        work = tmp_path / f"spill{buckets}"
        stats, got = splits.iter_splits(tmp_path / "in", cfg, work, buckets)
        by_split: dict[str, list] = {k: [] for k in want}
        for name, s, y in got():
            by_split[name].append((s, y))
        assert by_split == want, buckets
        assert {k: v["n"] for k, v in stats["splits"].items()} == {k: len(v) for k, v in want.items()}
        assert stats["totals"]["duplicates"] == len(dups)
        assert len(list(work.iterdir())) == buckets  # the spill: one file a bucket


def test_build_dataset_outputs_and_stats(tmp_path: Path) -> None:
    put(tmp_path / "in" / "r.jsonl", SAMPLES["amazon2023"] + jl({"rating": 3.0, "text": "mid"}))
    put(tmp_path / "in" / "p.csv", SAMPLES["polarity_csv"])
    cfg = DataConfig(balance=False)
    stats = build_dataset(tmp_path / "in", tmp_path / "out", cfg, min_split=0)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "stats.json",
        "test.jsonl",
        "train.jsonl",
        "val.jsonl",
    ]
    assert json.loads((tmp_path / "out" / "stats.json").read_text()) == stats
    assert stats["config"] == {
        "three_star": "drop",
        "balance": False,
        "max_reviews": None,
        "seed": 13,
    }
    assert stats["totals"] == {
        "rows": 7,
        "used": 6,
        "malformed": 0,
        "neutral_dropped": 1,
        "duplicates": 2,  # "Great works well" and "broke at once" are in both files
        "duplicate_label_conflicts": 0,
        "unique": 4,
        "capped": 0,
        "positives": 1,
        "negatives": 3,
    }
    assert [f["fmt"] for f in stats["files"]] == ["polarity_csv", "amazon2023"]
    total = sum(len(read_jsonl(tmp_path / "out" / f"{k}.jsonl")) for k in ("train", "val", "test"))
    assert total == 4


def test_write_jsonl_roundtrip_and_atomic(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "x.jsonl"
    rows = [("line one\nline two", 1), ('quote " and ü', 0)]
    write_jsonl(path, rows)
    assert read_jsonl(path) == rows
    before = path.read_bytes()

    def broken():
        yield ("new row", 1)
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        write_jsonl(path, broken())
    assert path.read_bytes() == before
    assert [p.name for p in path.parent.iterdir()] == ["x.jsonl"]  # no temp file left

    unlabeled = put(tmp_path / "u.jsonl", '{"text": "no label"}\n\n{"text": "b", "label": 1}\n')
    assert read_jsonl(unlabeled) == [("no label", None), ("b", 1)]
    bad = put(tmp_path / "bad.jsonl", '{"text": "ok"}\nnot json\n')
    with pytest.raises(DataError, match=r"bad\.jsonl:2"):
        read_jsonl(bad)


# ---------------------------------------------------------------------------- real data


def _need_shared() -> Path:
    if not (SHARED / "amazon").is_dir():
        pytest.skip(f"real data not found at {SHARED} (see README data section)")
    return SHARED


def test_real_data_slice(tmp_path: Path) -> None:
    shared = _need_shared()
    neutral = 0
    for src in sorted((shared / "amazon").glob("*.gz")):
        with gzip.open(src, "rt", encoding="utf-8", newline="") as f:
            lines = [line for _, line in zip(range(2000), f, strict=False)]
        neutral += sum('"rating": 3.0' in line for line in lines)
        # alternate plain / gzip slices, names that do not reveal the format
        put(tmp_path / "in" / f"{src.name.split('.')[0]}.dat", "".join(lines), gz="csv" in src.name)
    stats = build_dataset(tmp_path / "in", tmp_path / "out", DataConfig(balance=False))
    by_name = {Path(f["path"]).name: f for f in stats["files"]}
    assert by_name["reviews_rated.dat"]["fmt"] == "amazon2023"
    assert by_name["reviews_polarity.dat"]["fmt"] == "polarity_csv"
    for f in stats["files"]:
        assert f["rows"] == 2000
        assert f["malformed"] == 0
    assert stats["totals"]["neutral_dropped"] == neutral
    n = {k: v["n"] for k, v in stats["splits"].items()}
    assert (
        sum(n.values())
        == stats["totals"]["unique"]
        == 4000 - neutral - stats["totals"]["duplicates"]
    )
    assert 0.05 < n["test"] / sum(n.values()) < 0.15
    assert 0.05 < n["val"] / sum(n.values()) < 0.15


HELDOUT = {  # README: rows (positives / negatives); amazon_in_vfl has 77 3★ rows
    "li2018_amazon_sent.jsonl.gz": (3000, 1485, 1515),
    "uci_amazon_cells.jsonl.gz": (981, 489, 492),
    "vader_amazon_snippets.jsonl.gz": (3558, 2099, 1459),
    "huliu_sentences.jsonl.gz": (3774, 2404, 1370),
    "cr_sentences.jsonl.gz": (3760, 2396, 1364),
    "amazon_in_vfl.jsonl.gz": (1091, 726, 288),
    "aan_amazon_text_test.jsonl.gz": (101, 64, 37),
}


def test_real_heldout_folder_loads() -> None:
    folder = _need_shared() / "heldout"
    stats: list[FileStats] = []
    rows = list(iter_reviews(folder, stats=stats))
    assert {Path(fs.path).name for fs in stats} == set(HELDOUT)
    assert len(rows) == sum(pos + neg for _, pos, neg in HELDOUT.values())
    for fs in stats:
        n, pos, neg = HELDOUT[Path(fs.path).name]
        assert (fs.fmt, fs.rows, fs.used, fs.malformed) == ("labeled_jsonl", n, pos + neg, 0)
        assert fs.dropped_neutral == n - pos - neg
        labels = [y for _, y in iter_reviews(fs.path)]
        assert (sum(labels), len(labels) - sum(labels)) == (pos, neg)
