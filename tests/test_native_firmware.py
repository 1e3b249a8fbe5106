"""The firmware itself, built natively (firmware/host/CMakeLists.txt) from firmware/src and the
esp-tflite-micro / esp-nn sources in ../shared/vendor, and for riscv32 (zig) under qemu-riscv32.

- its answers on real test reviews equal the TFLM Python interpreter's (``--runtime tflm``)
  exactly: label, float32 probability, token count;
- its console (``pipeline.device.native.FirmwareDevice``, what ``pipeline.console --sim`` drives)
  prints what the ctypes twin prints;
- the riscv32 build under QEMU answers byte for byte like the native one.

The TFLM objects are compiled once per machine (build/firmware/, reused across sessions).
"""

from __future__ import annotations

import json
import os
import pty
import re
import select
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from pipeline.device import native as N
from pipeline.device.bench import bench as native_bench

ROOT = Path(__file__).resolve().parents[1]
RELEASE = ROOT / "models" / "release"
SHARED = ROOT.parent / "shared"
PARITY_REVIEWS = 2000  # test-split reviews of ../shared/data/amazon checked against TFLM
LONG = 2048  # bytes: the console's old line limit (it now tokenizes as the bytes arrive)

_native_missing = N.missing_tools("native")
_vendor_missing = not (N.DEFAULT_TFLM_DIR.is_dir() and N.DEFAULT_ESP_NN_DIR.is_dir())
pytestmark = [
    pytest.mark.skipif(bool(_native_missing), reason=f"native build needs {_native_missing}"),
    pytest.mark.skipif(_vendor_missing, reason=f"TFLM/esp-nn sources not found in {SHARED / 'vendor'}"),
]


@pytest.fixture(scope="session")
def native_release() -> N.Build:
    return N.build(RELEASE, "native")


@pytest.fixture(scope="session")
def riscv32_release() -> N.Build:
    missing = N.missing_tools("riscv32")
    if missing:
        pytest.skip(f"riscv32 build needs {', '.join(missing)} (.ci/run installs them)")
    return N.build(RELEASE, "riscv32")


def _test_reviews(n: int) -> list[str]:
    """The first ``n`` test-split reviews of ../shared/data/amazon, half from each file, plus
    every test review longer than LONG bytes among the rows read."""
    from pipeline import data

    folder = SHARED / "data" / "amazon"
    if not folder.is_dir():
        pytest.skip(f"real review data not found at {folder} (see README: Data)")
    files = sorted(p for p in folder.iterdir() if p.is_file())
    out: list[str] = []
    for i, path in enumerate(files):
        want = n // len(files) + (1 if i < n % len(files) else 0)
        got = 0
        for text, _ in data.iter_reviews(path):
            if data.split_of(text) != "test":
                continue
            out.append(text)
            got += 1
            if got >= want:
                break
    return out


@pytest.fixture(scope="session")
def parity_reviews() -> list[str]:
    return _test_reviews(PARITY_REVIEWS)


def _tflm_reference(texts: list[str]) -> tuple[np.ndarray, list[int], list[int]]:
    from pipeline.device.runtime import load_tflm_predictor
    from pipeline.text.tokenizer import Tokenizer

    tok = Tokenizer.load(RELEASE)
    full = tok.encode_batch(texts)
    ids = [tok.truncate(r) for r in full]
    return load_tflm_predictor(RELEASE, "tflm")(ids), [len(r) for r in ids], [len(r) for r in full]


# ---------------------------------------------------------------- the build


def test_native_build_links_the_vendored_tflm(native_release: N.Build) -> None:
    for k in N.KERNELS:
        proc = subprocess.run([*native_release.command(k), "info"], capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
        info = dict(line.split(" ", 1) for line in proc.stdout.splitlines())
        assert info["kernels"] == k and info["model"] == "ok"
        defines = (native_release.src / "model_config.h").read_text()
        assert f"#define SENT_STEP_ARENA_BYTES_64BIT {info['step_arena_bytes']}" in defines
        assert 0 < int(info["step_arena_used"]) <= int(info["step_arena_bytes"])
    # only the kernels the op resolver registers were compiled
    objs = {p.name for p in native_release.tree.rglob("*.cc.o") if "kernels" in str(p)}
    assert "conv.cc.o" not in objs and "fully_connected.cc.o" in objs
    assert not (ROOT / "firmware" / "host" / "stubs").exists()


def test_probe_finds_too_small_arenas(native_release: N.Build) -> None:
    cmd = native_release.command("esp_nn")
    ok = subprocess.run([*cmd, "probe", "16128", "2464"], capture_output=True, text=True)
    assert ok.returncode == 0 and ok.stdout.startswith("ok "), ok.stdout + ok.stderr
    bad = subprocess.run([*cmd, "probe", "256", "2464"], capture_output=True, text=True)  # any release
    assert bad.returncode == 1 and "step: AllocateTensors failed" in bad.stdout


# ---------------------------------------------------------------- parity with the TFLM interpreter


def test_firmware_equals_tflm_interpreter_on_test_reviews(native_release: N.Build,
                                                          parity_reviews: list[str]) -> None:
    texts = parity_reviews
    assert len(texts) >= PARITY_REVIEWS
    ref_p, ref_tokens, ref_total = _tflm_reference(texts)
    max_tokens = int(re.search(r"#define SENT_MAX_TOKENS (\d+)",
                               (native_release.src / "model_config.h").read_text()).group(1))
    for k in N.KERNELS:
        pred = N.predict(RELEASE, texts, "native", k)
        long = np.array([len(t.encode()) > LONG for t in texts])
        # ref_tokens: the ids predict feeds the model (already cut to the first max_tokens)
        same = (pred.p == ref_p) & (pred.tokens == np.array(ref_tokens))
        same &= pred.tokens_total == np.array(ref_total)
        assert (pred.tokens == np.minimum(pred.tokens_total, max_tokens)).all()
        labels = np.array(pred.label) == np.where(ref_p >= 0.5, "positive", "negative")
        assert labels[same].all()
        short_bad = np.flatnonzero(~same & ~long)
        assert short_bad.size == 0, (
            f"{k}: {short_bad.size} reviews of <= {LONG} bytes differ, e.g. #{short_bad[0]}: "
            f"{pred.p[short_bad[0]]!r} vs {ref_p[short_bad[0]]!r}")
        assert long.sum() > 0  # the slice holds reviews longer than the old 2,048-byte line
        long_bad = np.flatnonzero(~same & long)
        assert long_bad.size == 0, f"{k}: {long_bad.size} of {int(long.sum())} long reviews differ"


@pytest.mark.parametrize("bits", [4, 2])
def test_packed_embedding_release_equals_tflm_interpreter(tmp_path_factory, bits: int) -> None:
    """A release with a 4-bit or 2-bit step table (the C unpacking in gru_step.c) answers in the
    native firmware exactly as ``--runtime tflm`` (the NumPy spec of the custom operator)."""
    from test_firmware import synthetic_reviews, tiny_release_dir

    from pipeline.report.predictors import load_predictor

    release = tiny_release_dir(tmp_path_factory, embedding_bits=bits)
    quant = json.loads((release / "quant.json").read_text())
    assert quant["step"]["custom_op"]["embedding_bits"] == bits
    texts = [t for t, _ in synthetic_reviews(60, seed=9)] + ["great", "awful, broke"]
    ref = np.asarray(load_predictor(release, "tflm")(texts), np.float32).reshape(-1)
    for k in N.KERNELS:
        pred = N.predict(release, texts, "native", k)
        np.testing.assert_array_equal(pred.p, ref, err_msg=k)
    assert len(set(ref.tolist())) > 5  # the answers differ between reviews


def test_firmware_console_prints_what_the_sim_prints(tmp_path_factory) -> None:
    """FirmwareDevice (the executable) against the ctypes twin on the tiny release."""
    from test_firmware import synthetic_reviews, tiny_release_dir

    from pipeline.device.console import SimDevice

    release = tiny_release_dir(tmp_path_factory)
    lines = [t.encode() + b"\n" for t, _ in synthetic_reviews(20, seed=5)]
    lines += [b"help\n", b"\n", b"bad \xff\xfe utf8\r\n", b"junk\x15real words\n", b"\x01\x02\n",
              "Naïve café — “quoted” 😀\n".encode(), "\x00\u200b\n".encode(), "😀👍🏽\r".encode(), b"\n",
              b"great\rawful\r\n", b"dropped\x03", b"quit now\n", b"QUIT\n"]

    def norm(b: bytes) -> bytes:  # timings differ; the banner names the same release folder
        return re.sub(rb"ms=\d+", b"ms=N", b)

    sim = SimDevice(release, echo=True, crlf=True)
    with N.FirmwareDevice(release, echo=True, crlf=True) as dev:
        assert norm(dev.start()) == norm(sim.start())
        for line in lines:
            assert norm(dev.feed(line)) == norm(sim.feed(line)), line
        info = dev.feed(b"info\n")
        assert b"host build (x86-64) of the firmware: esp-tflite-micro with esp_nn" in info
        r = dev.classify(b"great product, love it")
        s = sim.classify(b"great product, love it")
        assert (r.label, r.p, r.tokens, r.tokens_total) == (s.label, s.p, s.tokens, s.tokens_total)
        for raw in (b"\x00\x01", "😀".encode(), b"ok \xff"):  # the no-verdict reason comes through
            r, s = dev.classify(raw), sim.classify(raw)
            assert (r.label, r.p, r.tokens, r.reason) == (s.label, s.p, s.tokens, s.reason), raw
        assert dev.classify(b"\x00").reason == "no words to judge"
        # quit ends the session (the process exits), after the output of its record
        quit_script = b"great\nexit\nnever\n"
        assert not dev.ended and norm(dev.feed(quit_script)) == norm(sim.feed(quit_script))
        assert dev.ended and sim.ended and dev.feed(b"more\n") == b""
        assert dev._proc.wait(timeout=30) == 0


# run in the child: the pseudo-terminal on fd 0 becomes its controlling terminal (a new session,
# from start_new_session), SIGINT gets its default action back (a runner started in the
# background ignores it), then the command runs
_OWN_TERMINAL = ("import fcntl, os, signal, sys, termios; signal.signal(signal.SIGINT, signal.SIG_DFL); "
                 "fcntl.ioctl(0, termios.TIOCSCTTY, 0); os.execvp(sys.argv[1], sys.argv[1:])")


def _in_a_terminal(cmd: list[str], keys: list[tuple[bytes, bytes]],
                   timeout: float = 120) -> tuple[bytes, int]:
    """Run ``cmd`` with a pseudo-terminal as its controlling terminal (so Ctrl-C typed there is a
    SIGINT to it, as in a real one); for each (keys, wait_for): type keys, read until wait_for.
    Returns everything the terminal showed and the exit status."""
    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-c", _OWN_TERMINAL, *cmd], stdin=slave, stdout=slave,
                            stderr=slave, cwd=ROOT, start_new_session=True, close_fds=True)
    os.close(slave)
    seen = bytearray()

    def read_until(want: bytes, start: int) -> None:
        deadline = time.monotonic() + timeout
        while want not in seen[start:]:
            left = deadline - time.monotonic()
            assert left > 0, f"no {want!r} in {bytes(seen)!r}"
            if select.select([master], [], [], min(left, 1.0))[0]:
                try:
                    seen.extend(os.read(master, 4096))
                except OSError:  # the other side closed
                    assert want in seen[start:], f"no {want!r} in {bytes(seen)!r}"

    try:
        read_until(b"> ", 0)  # the banner's prompt
        for typed, wait_for in keys:
            start = len(seen)
            os.write(master, typed)
            read_until(wait_for, start)
        rc = proc.wait(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
    return bytes(seen), rc


@pytest.mark.parametrize("front", ["pipeline.console", "sent_host"])
def test_ctrl_c_in_a_terminal_drops_the_line_and_quit_ends(front: str, native_release: N.Build) -> None:
    """Ctrl-C typed in a terminal drops the line and prompts again (the help's promise), both in
    ``pipeline.console --sim`` (whose firmware process must not die of the terminal's SIGINT) and
    in ``sent_host console``; CR (Enter in a raw terminal) and LF end a line; ``quit`` then ends
    the session with status 0."""
    cmd = ([sys.executable, "-m", "pipeline.console", str(RELEASE), "--sim"] if front == "pipeline.console"
           else [*native_release.command(), "console"])
    reply = re.compile(rb"(positive|negative) \d\.\d{4} tokens=\d+ ms=\d+")
    seen, rc = _in_a_terminal(cmd, [(b"great product, love it\n", b"\r\n> "),
                                    (b"terrible, broke after a day", b"day"),
                                    (b"\x03", b"\r\n> "),
                                    (b"works well\r", b"\r\n> "),
                                    (b"quit\n", b"bye\r\n")])
    assert rc == 0, seen
    assert len(reply.findall(seen)) == 2, seen  # the line Ctrl-C dropped got no answer
    dropped = seen[seen.index(b"after a day"):seen.index(b"works well")]
    assert b"^C" in dropped and b"\r\n> " in dropped and b"tokens=" not in dropped, seen
    assert seen.endswith(b"quit\r\nbye\r\n"), seen


def test_predict_runtime_firmware_prints_what_tflm_prints(tmp_path: Path, capsys) -> None:
    path = tmp_path / "r.jsonl"
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in
                            ["Great little speaker, works as described", "Broke after a day."]))
    from pipeline import predict

    assert predict.main([str(RELEASE), str(path), "--runtime", "firmware"]) == 0
    firmware = capsys.readouterr().out
    assert [line.split("\t")[1] for line in firmware.splitlines()] == ["positive", "negative"]
    assert predict.main([str(RELEASE), str(path), "--runtime", "tflm"]) == 0
    assert capsys.readouterr().out == firmware


# ---------------------------------------------------------------- riscv32 under QEMU


def test_riscv32_answers_equal_native(native_release: N.Build, riscv32_release: N.Build,
                                      parity_reviews: list[str]) -> None:
    texts = [t for t in parity_reviews if len(t.encode()) <= LONG][:24]
    texts += ["", "\x01\x02", "Naïve café — “quoted” 😀 " * 3, "works great \udcff".encode(
        "utf-8", "surrogateescape").decode("utf-8", "replace")]
    for k in N.KERNELS:
        a = subprocess.run([*native_release.command(k), "batch"], capture_output=True,
                           input=N._records(t.encode() for t in texts))
        b = subprocess.run([*riscv32_release.command(k), "batch"], capture_output=True,
                           input=N._records(t.encode() for t in texts), timeout=600)
        assert a.returncode == b.returncode == 0, b.stderr
        assert b.stdout == a.stdout and len(a.stdout.splitlines()) == len(texts)
    info = subprocess.run([*riscv32_release.command("esp_nn"), "info"], capture_output=True,
                          text=True)
    assert "arch riscv32" in info.stdout


def test_bench_agreement_mode_compares_both_builds_with_tflm(native_release: N.Build,
                                                             riscv32_release: N.Build,
                                                             parity_reviews: list[str],
                                                             tmp_path: Path) -> None:
    """``pipeline.bench --agreement``: every review through both builds and ``--runtime tflm``."""
    from pipeline.bench import main as bench_main

    data = tmp_path / "data"
    data.mkdir()
    rows = [(t, 1) for t in parity_reviews[:40]] + [("", 0), ("works great, love it", 1)]
    (data / "test.jsonl").write_text("".join(json.dumps({"text": t, "label": y}) + "\n"
                                             for t, y in rows), encoding="utf-8")
    out = tmp_path / "agreement.json"
    assert bench_main([str(RELEASE), "--agreement", "--data", str(data), "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["identical"] is True and res["targets"] == ["native", "riscv32"]
    assert res["sets"]["test"]["reviews"] == len(rows)
    assert res["sets"]["test"]["riscv32"] == {"p_differs": 0, "label_differs": 0, "first": []}
    assert res["command"].startswith("python -m pipeline.bench") and "--agreement" in res["command"]


# ---------------------------------------------------------------- build hygiene (item 6)


def test_manifest_pins_esp_nn_and_idf_matches_the_drivers() -> None:
    manifest = (ROOT / "firmware" / "src" / "idf_component.yml").read_text()
    assert re.search(r'^\s+espressif/esp-nn: "==1\.2\.3"$', manifest, re.M)
    assert re.search(r'^\s+idf: ">=5\.3"$', manifest, re.M)
    assert "esp_driver_uart" in (ROOT / "firmware" / "src" / "CMakeLists.txt").read_text()


def test_main_refuses_a_console_it_cannot_serve() -> None:
    main = (ROOT / "firmware" / "src" / "main.c").read_text()
    assert "UART_NUM_0" not in main  # no silent fallback
    assert re.search(r"#if !defined\(CONFIG_ESP_CONSOLE_UART\)", main)
    assert main.count("#error") >= 2


def test_bench_counts_instructions_arena_and_code_size(tmp_path_factory) -> None:
    """The benchmark's pieces on the tiny release (8 units), riscv32 under QEMU."""
    from test_firmware import tiny_release_dir

    missing = N.missing_tools("riscv32")
    if missing:
        pytest.skip(f"riscv32 build needs {', '.join(missing)} (.ci/run installs them)")
    release = tiny_release_dir(tmp_path_factory)
    res = native_bench(release, kernels=("esp_nn",), n_tokens=4)
    fig = res["kernels"]["esp_nn"]
    assert fig["tokenizer_per_token"] > 100 and fig["step_loop_per_token"] > 1000
    assert 0 < fig["head"] < fig["step_loop_per_token"]
    ops = fig["run_per_token_by_operator"]
    # the tiny release's step is the fused custom operator (pipeline/device/gru.py): it does the work
    assert max(ops, key=ops.get) == "TINYSENT_BIGRU (fused GRU step)", ops
    arena = res["arena_min_32bit"]["esp_nn"]
    assert arena["step"] % 16 == 0 and 0 < arena["head"] < arena["step"]
    b = N.build(release, "riscv32")
    probe = [*b.command("esp_nn"), "probe"]
    assert subprocess.run([*probe, str(arena["step"]), "4096"], capture_output=True).returncode == 0
    assert subprocess.run([*probe, str(arena["step"] - 16), "4096"],
                          capture_output=True).returncode == 1
    size = res["code_size"]["esp_nn"]
    assert size["model_arrays"]["rodata"] == sum(
        (release / f).stat().st_size for f in ("step.tflite", "head.tflite"))
    assert size["tflm_esp_nn"]["text"] > 20000 and size["firmware_code"]["text"] > 2000
    from pipeline.report.device import compare_markdown

    table = "\n".join(compare_markdown(res, res))
    assert "| step loop / token |" in table and "1.00x" in table
    assert "TINYSENT_BIGRU (fused GRU step)" in table
