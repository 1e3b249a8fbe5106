"""The firmware console: host sanitizer build, the host twin (``pipeline.console --sim``), the
serial client, and equality of its replies with ``pipeline.predict --runtime tflm``.

Uses the tiny int8 release of test_firmware.py (no ../shared/data needed).
"""

from __future__ import annotations

import io
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from test_firmware import synthetic_reviews, tiny_release_dir

if shutil.which("gcc") is None:
    pytest.skip("gcc not found: the console tests build C on the host", allow_module_level=True)

from pipeline.console import main as console_main
from pipeline.device import console as C  # noqa: E402 (after the skip)
from pipeline.text.ctok import SANITIZE, WARNINGS  # noqa: E402
from pipeline.text.tokenizer import NO_WORDS, ONLY_UNKNOWN  # noqa: E402

REPLY = re.compile(rb"(positive|negative) (\d\.\d{4}) tokens=(\d+) ms=(\d+)")
# predict's "unknown<TAB>REASON" as the console prints it (at a line start or after a prompt)
UNKNOWN = re.compile(rb"(?:^|> )unknown (.+?)\r?\n", re.M)
NO_WORDS_REPLY = f"unknown {NO_WORDS}\n> ".encode()
ONLY_UNKNOWN_REPLY = f"unknown {ONLY_UNKNOWN}\n> ".encode()
EDIT = 256  # CONSOLE_EDIT_BYTES: Backspace reaches back this far; older bytes are tokenized
RELEASE = Path(__file__).resolve().parents[1] / "models" / "release"


@pytest.fixture(scope="module")
def release(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_release_dir(tmp_path_factory)


@pytest.fixture(scope="module")
def dev(release: Path) -> C.SimDevice:
    return C.SimDevice(release)


def _overlong() -> bytes:
    """3000 bytes (the old 2048-byte cut fell inside a 2-byte UTF-8 character): read whole now."""
    return b"great " * 341 + b"x" + "é".encode() + b" broke" * 160


def _reviews() -> list[bytes]:
    rows = [t.encode() for t, _ in synthetic_reviews(40, seed=7)]
    rows += [
        "Naïve café review — “quoted” … ÉCOLE 😀👍🏽".encode(),
        b"works great \xff\xfe\xc3 then broke \xed\xa0\x80 \xf0\x9f",  # invalid UTF-8
        b"great\x01\x02\x07 product\x00 love\x7fit",  # controls (DEL is an edit key: see below)
        b"\x01\x02",  # no tokens at all
        b"the seller " * 30 + b"terrible",  # more than seq_len (16) tokens
        b"\t tab and spaces around \t",
        # nothing to judge: no tokens (NUL, zero-width, controls), or <unk> only (emoji, bad bytes)
        b"\x00\x00\x00", "\u200b\u200d\ufeff\u2060".encode(), b" \x00 \x07 ",
        "😀👍🏽".encode(), b"\xff\xfe\xc3", "\u2603 \u2603\u2603".encode(),
    ]
    return rows


def _typed(raw: bytes) -> bytes:
    """What the console keeps of a typed line (0x7F/0x08 delete the previous character)."""
    out = bytearray()
    for b in raw:
        if b in (0x7F, 0x08):
            if out:
                out.pop()
        else:
            out.append(b)
    return bytes(out)


# ---------------------------------------------------------------- sanitizer build


SCRIPT = (b"help\n" b"info\r\n" b"\n" b"   \t \n" b"\x01\x02\x1b\n" b"bad \xff\xfe\xc0\xaf utf8\n"
          + _overlong() + b"\r\n" b"goodX\x7f\x08d\n" b"\x1b[A\x1b[1;5C\x1bOPabc\n"
          b"junk\x15real words\n" b"junk\x03" b"help \n" b"\rlast line\r")


def _run_driver(exe: Path, data: bytes, *args: str) -> str:
    proc = subprocess.run([exe, *args], input=data, capture_output=True, timeout=300,
                          env={"ASAN_OPTIONS": "abort_on_error=0:detect_leaks=1",
                               "UBSAN_OPTIONS": "print_stacktrace=1"})
    err = proc.stderr.decode(errors="replace")
    assert proc.returncode == 0 and "runtime error" not in err and "Sanitizer" not in err, err[-3000:]
    return proc.stdout.decode("utf-8", "replace")


def test_console_builds_with_sanitizers_and_survives_bad_input(release: Path) -> None:
    exe = C.build_driver(release, sanitize=True)
    out = _run_driver(exe, SCRIPT, "--chunk", "1")
    assert out.startswith("tinysent: review sentiment on ")
    assert "Commands: help (this text), info" in out and "arena: " in out and "flash: " in out
    assert "runtime: host driver, fake model" in out
    assert out.count("Commands: help") == 2  # "help " with a trailing space is the command too
    assert "note: line cut" not in out  # 3000 bytes, read whole
    assert re.search(r"note: \d+ tokens, the model reads the first 16", out)
    assert "console RAM: " in out
    assert len(REPLY.findall(out.encode())) == 6
    assert UNKNOWN.findall(out.encode()) == [NO_WORDS.encode()]  # "\x01\x02\x1b": no tokens
    # the same bytes in other chunkings, with echo and CR LF: same replies
    for args in (["--chunk", "7"], ["--chunk", "4096", "--echo", "--crlf"]):
        other = _run_driver(exe, SCRIPT, *args)
        assert REPLY.findall(other.encode()) == REPLY.findall(out.encode())
        assert UNKNOWN.findall(other.encode()) == UNKNOWN.findall(out.encode())
    echo = _run_driver(exe, b"ab\x7fc\x15xy\x01\n", "--echo", "--crlf")
    assert "ab\b \bc\b \b\b \bxy?\r\n" in echo
    rng = np.random.default_rng(5)
    noise = rng.integers(0, 256, 200_000, dtype=np.uint8).tobytes()
    _run_driver(exe, noise + b"\n" + bytes(range(256)) * 40 + b"\n", "--echo", "--crlf")


def _unsplittable(release: Path) -> bytes:
    """Two characters xy such that xy and yx are both inside pieces of the release's vocabulary."""
    from pipeline.text.tokenizer import Tokenizer

    sp = Tokenizer.load(release).sp
    pieces = [sp.id_to_piece(i) for i in range(sp.get_piece_size())]
    for p in pieces:
        if len(p) == 2 and "\u2581" not in p and any(p[::-1] in q for q in pieces):
            return p.encode()
    raise AssertionError("no such pair in the vocabulary")


def _reply(out: str) -> list[tuple[bytes, ...]]:
    return [m[:3] for m in REPLY.findall(out.encode())]


def test_console_long_lines_and_editing_under_sanitizers(release: Path) -> None:
    """Lines of any length in bounded RAM: the reply to a long line is the reply to its text,
    Backspace reaches back EDIT bytes, Ctrl-U clears even a long line, a huge word is survived."""
    exe = C.build_driver(release, sanitize=True)
    rng = np.random.default_rng(3)
    words = [b"great", b"the", b"seller", b"broke", "caf\u00e9".encode(), b"\xff", b"was"]
    long_line = b" ".join(words[i] for i in rng.integers(0, len(words), 40_000))  # ~190 KB
    plain = _run_driver(exe, long_line + b"\n", "--chunk", "4096")
    assert len(_reply(plain)) == 1
    for args in (["--chunk", "1"], ["--chunk", "13", "--echo", "--crlf"]):
        assert _reply(_run_driver(exe, long_line + b"\r\n", *args)) == _reply(plain)
    # Backspace: 300 x, 300 DEL (only the last EDIT bytes go), then text
    typed = b"x" * 300 + b"\x7f" * 300 + b" great\n"
    want = _run_driver(exe, b"x" * (300 - EDIT) + b" great\n")
    assert _reply(_run_driver(exe, typed)) == _reply(want)
    # Ctrl-U on a line longer than EDIT clears all of it; with echo it starts a fresh line
    out = _run_driver(exe, b"y" * 300 + b"\x15the case is great\n", "--echo", "--crlf")
    assert "^U\r\n> the case is great" in out
    assert _reply(out) == _reply(_run_driver(exe, b"the case is great\n"))
    # Ctrl-C after a long line drops it
    assert len(_reply(_run_driver(exe, b"z " * 5000 + b"\x03help\n"))) == 0
    # a 200 KB word without an exact split point (its character pairs are inside pieces): a
    # note, a reply, no crash
    out = _run_driver(exe, _unsplittable(release) * 100_000 + b"\nok\n", "--chunk", "4096")
    assert len(_reply(out)) == 2 and "split(s) inside a word longer than 253 bytes" in out
    # spaces only, however many, are an empty line; "help" after 300 spaces is the command
    out = _run_driver(exe, b" \t" * 300 + b"\n" + b" " * 300 + b"help\n")
    assert len(_reply(out)) == 0 and out.count("Commands: help") == 1


def test_sanitizer_flags_are_the_strict_ones() -> None:
    assert {"-Wall", "-Wextra", "-Werror"} <= set(WARNINGS)
    assert "-fsanitize=address,undefined" in SANITIZE


def test_loop_equals_python_reference(release: Path) -> None:
    """C step loop (fake model, sanitizers on) == quantize.step_loop_int8 on the same fake model."""
    from pipeline.device.loop import step_loop_int8
    from pipeline.text.tokenizer import Tokenizer

    meta = json.loads((release / "quant.json").read_text())
    units, tok = meta["units"], Tokenizer.load(release)

    def step(tokens: np.ndarray, hf: np.ndarray, hb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        j = np.arange(units)
        f = (int(tokens[0, 0]) * 31 + j * 7 + (hf.astype(np.int64) + 128) * 3) % 256 - 128
        b = (int(tokens[0, 1]) * 17 + j * 5 + (hb.astype(np.int64) + 128) * 5) % 256 - 128
        return f.astype(np.int8), b.astype(np.int8)

    def head(pooled: np.ndarray) -> np.ndarray:
        j = np.arange(2 * units)
        return np.array([[int(((pooled.astype(np.int64) + 128) * (j + 1)).sum()) % 256 - 128]])

    reviews = [r for r in _reviews() if r.strip(b" \t")]
    exe = C.build_driver(release)
    for raw in reviews:
        ids = tok.ids([_typed(raw).decode("utf-8", "replace")])[0]
        out = _run_driver(exe, raw + b"\n").encode()
        out = out[out.index(b"\n> ") + 3:]  # after the banner
        reason = tok.no_verdict_reason(ids)
        if reason is not None:  # predict's answer, and the model does not run
            assert out == f"unknown {reason}\n> ".encode(), raw
            continue
        label, p, n, _ = REPLY.search(out).groups()
        want = np.float32(step_loop_int8(step, head, ids, meta))
        assert (label.decode(), p.decode(), int(n)) == (
            "positive" if want >= 0.5 else "negative", f"{want:.4f}", len(ids)), raw


# ---------------------------------------------------------------- the host twin


def test_sim_protocol(dev: C.SimDevice) -> None:
    banner = dev.start()
    assert banner.startswith(b"tinysent: review sentiment on ") and banner.endswith(b"\n> ")
    help_text = dev.feed(b"help\n")
    assert b"Editing: Backspace deletes a character, Ctrl-U clears the line, Ctrl-C drops it" in help_text
    assert b"\n  quit or exit (end the session" in help_text and b"English only" in help_text
    assert f"  unknown {NO_WORDS} ".encode() in help_text
    assert f"  unknown {ONLY_UNKNOWN}\n".encode() in help_text
    assert b"Enter may be CR, LF or CR LF" in help_text and help_text.endswith(b").\n> ")
    info = dev.feed(b"info\n").decode()
    for key in ("model: ", "vocab: ", "arena: ", "flash: ", "runtime: host simulation"):
        assert "\n" + key in "\n" + info, key
    assert dev.feed(b"\n") == b"> " and dev.feed(b" \t \r\n") == b"> "
    assert dev.feed(b"\x01\x02\x03") == b"\n> "  # Ctrl-C drops the line
    assert dev.feed(b"\x01\x02\x1b\x7f\n") == NO_WORDS_REPLY  # no tokens: predict's answer
    assert dev.feed(b"\xff\xfe\xfd\xc3\n") == ONLY_UNKNOWN_REPLY  # invalid bytes only: <unk>
    reply = dev.feed(b"\x00\x00 great\n")
    assert REPLY.match(reply) and reply.endswith(b"\n> "), reply
    long_reply = dev.feed(_overlong() + b"\n").split(b"\n")
    assert long_reply[0].startswith(b"note: ") and b"the model reads the first 16" in long_reply[0]
    assert REPLY.fullmatch(long_reply[1]) and long_reply[2] == b"> "
    # a line split anywhere, CR LF, and editing keys give the same reply as the plain line
    plain = REPLY.match(dev.feed(b"the case is great but slow\n")).groups()[:3]
    parts = [b"the ca", b"se is gr", b"eat but slowX\x7f\r", b"\n"]
    assert REPLY.match(b"".join(dev.feed(p) for p in parts)).groups()[:3] == plain
    assert REPLY.match(dev.feed(b"\x1b[Athe case is \x1b[Dgreat but slow\n")).groups()[:3] == plain


def test_sim_equals_predict_tflm(release: Path, dev: C.SimDevice, tmp_path: Path, capsys) -> None:
    from pipeline import predict
    from pipeline.report.predictors import load_predictor
    from pipeline.text.tokenizer import Tokenizer

    reviews = _reviews() + [_overlong(), b"the seller " * 3000 + b"great"]
    texts = [r.decode("utf-8", "replace") for r in reviews]
    p_tflm = load_predictor(release, "tflm")(texts)
    tok = Tokenizer.load(release)
    for raw, text, p in zip(reviews, texts, p_tflm, strict=True):
        r = dev.classify(raw)
        assert r.p == float(p) and r.label == ("positive" if p >= 0.5 else "negative"), raw
        assert r.tokens == len(tok.ids([text])[0]) and r.tokens_total == len(tok.encode(text))
        assert r.reason == tok.no_verdict_reason(tok.ids([text])[0]), raw  # the C rule
    # and the printed lines: predict's "label<TAB>P" == the console's "label P"
    path = tmp_path / "typed.jsonl"
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    assert predict.main([str(release), str(path), "--runtime", "tflm"]) == 0
    want = [tuple(line.split("\t")[1:]) for line in capsys.readouterr().out.splitlines()]
    typed = [r for r in reviews if b"\x7f" not in r and r.strip(b" \t")]
    got = [_answer(dev.feed(r + b"\n")) for r in typed]
    want_typed = [w for r, w in zip(reviews, want, strict=True) if r in typed]
    # every review, judged or not: predict's "unknown<TAB>REASON" is the console's "unknown REASON"
    assert got == want_typed
    assert {label for label, _ in want} >= {"positive", "negative", "unknown"}  # all labels occur
    assert {w[1] for w in want if w[0] == "unknown"} == {NO_WORDS, ONLY_UNKNOWN}  # both reasons


def _answer(reply: bytes) -> tuple[str, str]:
    """The console's answer to one review as predict's columns: (label, P or reason)."""
    m = REPLY.search(reply)
    if m is not None:
        return m[1].decode(), m[2].decode()
    m = UNKNOWN.search(reply)
    assert m is not None, reply
    return "unknown", m[1].decode()


def test_sim_line_ends_give_one_answer_per_review(release: Path) -> None:
    """Enter as CR (PuTTY, screen, picocom), CR LF (pio device monitor) or LF: one answer per
    review, the same answers, never an extra prompt; also when CR and LF arrive apart."""
    reviews = [b"the case is great", b"awful, broke after a week", b"\x00\x00", "😀".encode()]
    answers = {}
    for eol in (b"\n", b"\r\n", b"\r"):
        dev = C.SimDevice(release)
        dev.start()
        out = dev.feed(eol.join(reviews) + eol)
        answers[eol] = re.sub(rb"ms=\d+", b"ms=N", out)
        assert out.count(b"> ") == len(reviews), (eol, out)
        # byte by byte (a CR LF split across two reads is still one line end)
        split = b"".join(dev.feed(bytes([b])) for b in eol.join(reviews) + eol)
        assert re.sub(rb"ms=\d+", b"ms=N", split) == answers[eol]
    assert answers[b"\n"] == answers[b"\r\n"] == answers[b"\r"]
    assert answers[b"\n"].count(b" tokens=") == 2 and len(UNKNOWN.findall(answers[b"\n"])) == 2
    # on a serial line (echo, CR LF out): a CR LF Enter is one new line, not two
    board = C.SimDevice(release, echo=True, crlf=True, can_quit=False)
    board.start()
    out = board.feed(b"great\r\n") + board.feed(b"\r") + board.feed(b"\n")
    assert re.fullmatch(rb"great\r\n(positive|negative) \d\.\d{4} tokens=\d+ ms=\d+\r\n> \r\n> ", out), out
    # a CR LF LF is a line end and an empty line: a bare prompt, no second answer
    assert board.feed(b"great\r\n\n").count(b"tokens=") == 1


def test_sim_ctrl_c_drops_the_line(release: Path) -> None:
    dev = C.SimDevice(release)
    dev.start()
    plain = _answer(dev.feed(b"great product\n"))
    assert dev.feed(b"terrible awful\x03") == b"\n> "  # dropped: no answer, a new prompt
    assert _answer(dev.feed(b"great product\n")) == plain
    assert _answer(dev.feed(b"terrible\x03great product\n")) == plain  # only what follows counts
    assert dev.feed(b"\x03") == b"\n> " and dev.feed(b"\x03\r\n") == b"\n> > "
    board = C.SimDevice(release, echo=True, crlf=True, can_quit=False)
    board.start()
    assert board.feed(b"awful\x03") == b"awful^C\r\n> "


def test_sim_quit(release: Path) -> None:
    dev = C.SimDevice(release)  # a host session: quit ends it
    dev.start()
    assert dev.feed(b"quit now\n").startswith((b"positive", b"negative"))  # a review, not quit
    assert dev.feed(b"QUIT\n").startswith((b"positive", b"negative"))  # commands are lower case
    assert not dev.ended
    assert dev.feed(b" \texit \r\nnever read\n") == b"bye\n" and dev.ended
    assert dev.feed(b"great\n") == b""  # nothing after the end
    dev = C.SimDevice(release)
    dev.start()
    assert dev.feed(b"quit") == b"" and dev.feed(b"\r") == b"bye\n" and dev.ended
    board = C.SimDevice(release, can_quit=False)  # the board: nothing to quit to, it goes on
    board.start()
    out = board.feed(b"quit\n")
    assert b"nothing to quit" in out and b"pio device monitor: Ctrl-C" in out and out.endswith(b"\n> ")
    assert not board.ended and REPLY.match(board.feed(b"great\n"))


def test_driver_quit_under_sanitizers(release: Path) -> None:
    exe = C.build_driver(release, sanitize=True)
    out = _run_driver(exe, b"great\nquit\nawful\n", "--chunk", "1")
    assert out.endswith("> bye\n") and len(_reply(out)) == 1  # the bytes after quit are not read
    board = _run_driver(exe, b"great\nquit\nawful\n", "--board", "--echo", "--crlf")
    assert "nothing to quit" in board and len(_reply(board)) == 2 and board.endswith("> ")


def test_sim_long_lines_in_pieces(dev: C.SimDevice) -> None:
    """A long line fed in random pieces gets classify's reply on the same bytes."""
    rng = np.random.default_rng(11)
    for raw in [_overlong(), b"the seller " * 3000 + b"great", "caf\u00e9 \u2581x".encode() * 900,
                bytes(rng.integers(0, 256, 20_000, dtype=np.uint8)).translate(
                    None, b"\r\n\x03\x08\x15\x1b\x7f")]:
        r = dev.classify(raw)
        cuts = np.sort(rng.integers(0, len(raw), 60))
        pieces = [raw[a:b] for a, b in zip([0, *cuts], [*cuts, len(raw)], strict=True)]
        out = b"".join(dev.feed(p) for p in pieces) + dev.feed(b"\r\n")
        label, p, n = REPLY.search(out).groups()[:3]
        assert (label.decode(), p.decode(), int(n)) == (r.label, f"{r.p:.4f}", r.tokens), raw[:60]


@pytest.mark.skipif(not (RELEASE / "model.json").exists(), reason="models/release not here")
def test_release_sim_equals_predict_tflm_on_long_reviews(real_slice: dict[str, Path]) -> None:
    """models/release on real reviews, all long ones of the slice (> 2,048 bytes: cut before):
    the console's reply (a line, and console_classify) equals predict --runtime tflm."""
    from pipeline import data
    from pipeline.report.predictors import load_predictor
    from pipeline.text.tokenizer import Tokenizer

    texts = [t for t, _ in data.iter_reviews(real_slice["amazon"])]
    long = [t for t in texts if len(t.encode()) > 2048]
    rows = long[:150] + [t for t in texts if len(t.encode()) <= 2048][:100]
    assert len(long) >= 20
    p_tflm = load_predictor(RELEASE, "tflm")(rows)
    tok = Tokenizer.load(RELEASE)
    sim = C.SimDevice(RELEASE)
    for text, p in zip(rows, p_tflm, strict=True):
        raw = text.encode()
        r = sim.classify(raw)
        assert r.p == float(p) and r.tokens_total == len(tok.encode(text)), text[:80]
        line = raw.replace(b"\r", b" ").replace(b"\n", b" ")  # CR/LF are spaces to the tokenizer
        label, shown, n = REPLY.search(sim.feed(line + b"\n")).groups()[:3]
        assert (label.decode(), shown.decode(), int(n)) == (
            "positive" if p >= 0.5 else "negative", f"{p:.4f}", len(tok.ids([text])[0]))


def test_sim_with_pruned_rows_equals_predict_tflm(tmp_path_factory) -> None:
    """A release whose embedding table lost pruned rows: the C loop maps ids like Python does."""
    from pipeline.report.predictors import load_predictor

    pruned = tiny_release_dir(tmp_path_factory, prune_rows=True)
    dev = C.SimDevice(pruned)
    reviews = _reviews()
    texts = [r.decode("utf-8", "replace") for r in reviews]
    p_tflm = load_predictor(pruned, "tflm")(texts)
    for raw, p in zip(reviews, p_tflm, strict=True):
        assert dev.classify(raw).p == float(p), raw


def test_sim_cli(release: Path, monkeypatch, capsys) -> None:
    lines = b"help\nThe case is great, love it\n\nawful, broke after a week\n"
    stdin = io.TextIOWrapper(io.BytesIO(lines + b"no newline at the end"))
    stdout = io.TextIOWrapper(io.BytesIO(), write_through=True)
    monkeypatch.setattr(sys, "stdin", stdin)
    monkeypatch.setattr(sys, "stdout", stdout)
    assert console_main([str(release), "--sim"]) == 0
    out = stdout.buffer.getvalue()
    assert out.startswith(b"tinysent: ") and out.endswith(b"\n> \n")
    assert b"Editing: " in out and b"\n> > " in out  # help, then the empty line's bare prompt
    assert len(REPLY.findall(out)) == 3
    assert console_main([str(release.parent / "missing"), "--sim"]) == 1
    assert "error:" in capsys.readouterr().err


class _Terminal(io.BytesIO):
    """stdin typed in a terminal: lines, and Ctrl-C (SIGINT) while waiting for the line at ``ctrl_c``."""

    def __init__(self, lines: list[bytes], ctrl_c: set[int], tty: bool = True) -> None:
        super().__init__(b"".join(lines))
        self.ctrl_c, self.tty, self.calls = set(ctrl_c), tty, 0

    def readline(self, *args: object) -> bytes:
        self.calls += 1
        if self.calls in self.ctrl_c:
            raise KeyboardInterrupt
        return super().readline()

    def isatty(self) -> bool:
        return self.tty


def _cli(release: Path, stdin: io.BytesIO, monkeypatch) -> tuple[int, bytes, str]:
    stdout = io.TextIOWrapper(io.BytesIO(), write_through=True)
    stderr = io.TextIOWrapper(io.BytesIO(), write_through=True)
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(stdin))
    monkeypatch.setattr(sys, "stdout", stdout)
    monkeypatch.setattr(sys, "stderr", stderr)
    rc = console_main([str(release), "--sim"])
    return rc, stdout.buffer.getvalue(), stderr.buffer.getvalue().decode()


def test_sim_cli_quit_ctrl_c_and_cr(release: Path, monkeypatch) -> None:
    """pipeline.console --sim (the native firmware): quit ends it, Ctrl-C in a terminal drops the
    line and prompts again, a CR inside a line is a space, no-verdict reviews get predict's answer."""
    lines = [b"great product\n", b"awful\rbroke\n", b"\x00\x00\n", "😀\r\n".encode(), b"exit\n",
             b"never read\n"]
    rc, out, err = _cli(release, io.BytesIO(b"".join(lines)), monkeypatch)
    assert rc == 0 and out.endswith(b"\n> bye\n")  # no prompt, no answer after quit
    assert len(REPLY.findall(out)) == 2  # "awful\rbroke" is one review
    assert UNKNOWN.findall(out) == [NO_WORDS.encode(), ONLY_UNKNOWN.encode()]
    # Ctrl-C while the 2nd line is typed: the terminal dropped it; a fresh prompt, no answer
    term = _Terminal([b"great product\n", b"awful, broke\n"], ctrl_c={2})
    rc, out, err = _cli(release, term, monkeypatch)
    assert rc == 0 and len(REPLY.findall(out)) == 2 and out.endswith(b"\n> \n")
    assert re.search(rb"ms=\d+\n> \n> (positive|negative) ", out), out  # the device's "\n> "
    assert "Ctrl-C drops the line" in err  # stdin is a terminal: the hint
    # stdin not a terminal (a pipe): Ctrl-C stops the program, as before
    rc, out, err = _cli(release, _Terminal([b"great\n", b"awful\n"], ctrl_c={2}, tty=False), monkeypatch)
    assert rc == 130 and len(REPLY.findall(out)) == 1


# ---------------------------------------------------------------- the serial client


class FakeSerial:
    """A board on a serial line: the simulated device with echo and CR LF, as the firmware runs."""

    def __init__(self, release: Path) -> None:
        self.dev = C.SimDevice(release, echo=True, crlf=True, can_quit=False)
        self.dev.start()  # the boot banner went out before the client connected
        self.pending = bytearray()
        self.sent = bytearray()
        self.closed = False

    def write(self, data: bytes) -> int:
        self.sent += data
        self.pending += self.dev.feed(data)
        return len(data)

    @property
    def in_waiting(self) -> int:
        return len(self.pending)

    def read(self, n: int) -> bytes:
        out = bytes(self.pending[:n])
        del self.pending[:n]
        return out

    def close(self) -> None:
        self.closed = True


def test_port_client_shows_what_the_sim_shows(release: Path) -> None:
    lines = (b"help\ninfo\n\nthe case is great\n" + _overlong() + b"\n"
             b"\xff\xfe broke \x01 returned it\nfirst\rsecond\n   \n\x00\n\xf0\x9f\x98\x80\n"
             b" quit\t\r\nlost\n")
    fake = FakeSerial(release)
    port_out = io.BytesIO()
    assert C.run_port("/dev/fake", 115200, io.BytesIO(lines), port_out,
                      serial_factory=lambda port, baud: fake, timeout=10) == 0
    assert fake.closed
    sim_out = io.BytesIO()
    C.run_sim(release, io.BytesIO(lines), sim_out)

    def norm(b: bytes) -> bytes:
        b = re.sub(rb"ms=\d+", b"ms=N", b)
        b = re.sub(rb"runtime: .*", b"runtime: R", b)
        return b[b.index(b"> "):]

    port_text = port_out.getvalue()
    assert port_text.startswith(b"connected to /dev/fake at 115200 baud")
    assert norm(port_text) == norm(sim_out.getvalue())
    assert port_text.endswith(b"> bye\n") and b"lost" not in fake.sent  # quit ends the client
    assert UNKNOWN.findall(port_text) == [NO_WORDS.encode(), ONLY_UNKNOWN.encode()]
    assert len(REPLY.findall(port_text)) == 4  # "first\rsecond" is one review


def test_port_client_ctrl_c_drops_the_line(release: Path) -> None:
    fake = FakeSerial(release)
    out = io.BytesIO()
    term = _Terminal([b"great\n", b"awful\n"], ctrl_c={2})
    assert C.run_port("/dev/fake", 115200, term, out, serial_factory=lambda port, baud: fake,
                      timeout=10) == 0
    text = out.getvalue()
    assert len(REPLY.findall(text)) == 2 and b"\n> \n> " in text  # Ctrl-C: a fresh prompt


def test_strip_echo() -> None:
    assert C.strip_echo(b"great\r\npositive 0.9000 tokens=1 ms=2\r\n> ") == (
        b"positive 0.9000 tokens=1 ms=2\n> ")
    assert C.strip_echo(b"\r\n> ") == b"> "
    assert C.strip_echo(b"a\r\nnegative 0.1000 tokens=1 ms=2\r\n> b\r\n"
                        b"positive 0.9000 tokens=1 ms=2\r\n> ") == (
        b"negative 0.1000 tokens=1 ms=2\n> positive 0.9000 tokens=1 ms=2\n> ")


def test_port_needs_pyserial_message(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "serial", None)
    with pytest.raises(RuntimeError, match="pyserial"):
        C.run_port("/dev/ttyUSB0", 115200, io.BytesIO(), io.BytesIO())
