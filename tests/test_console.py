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

REPLY = re.compile(rb"(positive|negative) (\d\.\d{4}) tokens=(\d+) ms=(\d+)")
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
    assert len(REPLY.findall(out.encode())) == 7
    # the same bytes in other chunkings, with echo and CR LF: same replies
    for args in (["--chunk", "7"], ["--chunk", "4096", "--echo", "--crlf"]):
        other = _run_driver(exe, SCRIPT, *args)
        assert REPLY.findall(other.encode()) == REPLY.findall(out.encode())
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
    out = _run_driver(C.build_driver(release), b"\n".join(reviews) + b"\n")
    got = REPLY.findall(out.encode())
    assert len(got) == len(reviews)
    for raw, (label, p, n, _) in zip(reviews, got, strict=True):
        ids = tok.ids([_typed(raw).decode("utf-8", "replace")])[0]
        want = np.float32(step_loop_int8(step, head, ids, meta))
        assert (label.decode(), p.decode(), int(n)) == (
            "positive" if want >= 0.5 else "negative", f"{want:.4f}", len(ids)), raw


# ---------------------------------------------------------------- the host twin


def test_sim_protocol(dev: C.SimDevice) -> None:
    banner = dev.start()
    assert banner.startswith(b"tinysent: review sentiment on ") and banner.endswith(b"\n> ")
    assert dev.feed(b"help\n").endswith(b"Editing: Backspace deletes a character, Ctrl-U clears "
                                        b"the line, Ctrl-C drops it.\n> ")
    info = dev.feed(b"info\n").decode()
    for key in ("model: ", "vocab: ", "arena: ", "flash: ", "runtime: host simulation"):
        assert "\n" + key in "\n" + info, key
    assert dev.feed(b"\n") == b"> " and dev.feed(b" \t \r\n") == b"> "
    assert dev.feed(b"\x01\x02\x03") == b"\n> "  # Ctrl-C drops the line
    for bad in (b"\x01\x02\x1b\x7f\n", b"\xff\xfe\xfd\xc3\n", b"\x00\x00 great\n"):
        reply = dev.feed(bad)
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
    # and the printed lines: predict's "label<TAB>P" == the console's "label P"
    path = tmp_path / "typed.jsonl"
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    assert predict.main([str(release), str(path), "--runtime", "tflm"]) == 0
    want = [tuple(line.split("\t")[1:]) for line in capsys.readouterr().out.splitlines()]
    typed = [r for r in reviews if b"\x7f" not in r and r.strip(b" \t")]
    got = [REPLY.search(dev.feed(r + b"\n")).groups()[:2] for r in typed]
    want_typed = [w for r, w in zip(reviews, want, strict=True) if r in typed]
    # predict answers "unknown" for a review with nothing to judge; the console does not apply that
    # rule yet (it prints the model's probability), so those reviews are compared on predict's side
    # only: they must be exactly the ones the Python rule flags
    judged = [i for i, w in enumerate(want_typed) if w[0] != "unknown"]
    assert [(got[i][0].decode(), got[i][1].decode()) for i in judged] == [want_typed[i] for i in judged]
    assert all(tok.no_verdict_reason(tok.ids([typed[i].decode("utf-8", "replace")])[0])
               for i in range(len(typed)) if i not in judged)
    assert {label for label, _ in want} >= {"positive", "negative"}  # both labels occur


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


# ---------------------------------------------------------------- the serial client


class FakeSerial:
    """A board on a serial line: the simulated device with echo and CR LF, as the firmware runs."""

    def __init__(self, release: Path) -> None:
        self.dev = C.SimDevice(release, echo=True, crlf=True)
        self.dev.start()  # the boot banner went out before the client connected
        self.pending = bytearray()
        self.closed = False

    def write(self, data: bytes) -> int:
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
             b"\xff\xfe broke \x01 returned it\nfirst\rsecond\n   \n")
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
