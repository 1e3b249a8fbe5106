"""Firmware export (pipeline.export.export_firmware) and the PlatformIO project in firmware/.

A tiny int8 release (synthetic reviews, 8-unit student, one short epoch) is built once per session
by :func:`tiny_release_dir`; test_console.py uses it too. Nothing here needs ../shared/data.
"""

from __future__ import annotations

import configparser
import hashlib
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from pipeline.device import firmware as E
from pipeline.export import main as export_main

ROOT = Path(__file__).resolve().parents[1]
FIRMWARE = ROOT / "firmware"
HAVE_GCC = shutil.which("gcc") is not None and shutil.which("g++") is not None
needs_gcc = pytest.mark.skipif(not HAVE_GCC, reason="gcc/g++ not found")

_WORDS = {
    1: ["great", "love", "excellent", "works perfectly", "happy", "recommend", "sturdy", "fast"],
    0: ["terrible", "broke", "waste of money", "disappointed", "returned it", "awful", "slow",
        "never again"],
}
_FILLER = ["the battery", "this charger", "my new headphones", "the seller", "shipping", "it",
           "the case", "the screen", "for the price", "after a week"]


def synthetic_reviews(n: int, seed: int = 0) -> list[tuple[str, int]]:
    """Short reviews whose label follows their sentiment words (so the student learns a little)."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        label = int(i % 2)
        words = [str(rng.choice(_FILLER)) for _ in range(int(rng.integers(2, 7)))]
        for _ in range(int(rng.integers(1, 4))):
            words.insert(int(rng.integers(0, len(words) + 1)), str(rng.choice(_WORDS[label])))
        text = " ".join(words).capitalize() + rng.choice([".", "!", "...", " :)"])
        rows.append((text, label))
    return rows


_RELEASE: dict[str, Path] = {}


def tiny_release_dir(tmp_path_factory: pytest.TempPathFactory, prune_rows: bool = False,
                     embedding_bits: int = 8) -> Path:
    """An int8 release folder like runs/*/int8 (tokenizer seq_len 16, vocab ~300, 8 units).

    ``prune_rows``: every third embedding row zeroed first, so the release has an ``id_map``;
    ``embedding_bits``: the step's table (8, 4 or 2).
    """
    key = ("pruned" if prune_rows else "dir", embedding_bits)
    if key in _RELEASE:
        return _RELEASE[key]
    import tf_keras as keras

    from pipeline.config import StudentConfig, TokenizerConfig
    from pipeline.device.convert import convert_int8
    from pipeline.device.release import HEAD_FILE, QUANT_FILE, STEP_FILE, write_release
    from pipeline.nn.models import build_student
    from pipeline.nn.train import pad_batch, write_model_info
    from pipeline.text.tokenizer import train_tokenizer

    rows = synthetic_reviews(400)
    tok = train_tokenizer([t for t, _ in rows], TokenizerConfig(vocab_size=300, seq_len=16))
    keras.utils.set_random_seed(0)
    ids = tok.ids([t for t, _ in rows])
    student = build_student(tok.vocab_size, StudentConfig(embed_dim=8, units=8))
    student.compile(keras.optimizers.Adam(1e-2), "binary_crossentropy")
    y = np.array([lab for _, lab in rows], np.float32)
    for _ in range(3):
        for start in range(0, len(ids), 50):
            student.train_on_batch(pad_batch(ids[start:start + 50]), y[start:start + 50])
    if prune_rows:
        table = student.get_layer("embedding").get_weights()[0]
        table[::3] = 0.0
        student.get_layer("embedding").set_weights([table])
    converted = convert_int8(student, ids[:120], max_steps=500, embedding_bits=embedding_bits)
    assert (converted["meta"]["id_map"] is not None) == prune_rows
    out = tmp_path_factory.mktemp("release")
    write_release(out, converted)
    tok.save(out)
    write_model_info(out, {"tflm": QUANT_FILE, "tflite": QUANT_FILE}, kind="student-int8",
                     files=[STEP_FILE, HEAD_FILE])
    _RELEASE[key] = out
    return out


@pytest.fixture(scope="module")
def release(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_release_dir(tmp_path_factory)


@pytest.fixture(scope="module")
def exported(release: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """(project root, sizes): export_firmware of the tiny release plus the portable sources."""
    from pipeline.device.console import prepare_sources

    root = tmp_path_factory.mktemp("fw")
    return root, prepare_sources(release, root)


def _ops(release: Path) -> set[str]:
    from pipeline.device.flatbuf import op_report

    return {o["op"] for name in ("step.tflite", "head.tflite")
            for o in op_report((release / name).read_bytes())}


def _body(path: Path) -> str:
    """A generated file without its header comment (which names paths)."""
    text = path.read_text()
    return text[text.index("*/") + 2:]


# ---------------------------------------------------------------- generated files


def test_c_arrays_are_the_tflite_files(release: Path, exported: tuple[Path, dict]) -> None:
    root, sizes = exported
    text = (root / "src" / E.MODEL_DATA_C).read_text()
    for array, name in ((E.STEP_ARRAY, "step.tflite"), (E.HEAD_ARRAY, "head.tflite")):
        data = (release / name).read_bytes()
        assert E.parse_c_array(text, array) == data
        assert re.search(rf"SENT_MODEL_ALIGN const unsigned char {array}\[\] = \{{", text)
        assert f"const unsigned int {array}_len = {len(data)}u;" in text
    assert sizes["model_arrays"] == sizes["step_model"] + sizes["head_model"] == sum(
        (release / n).stat().st_size for n in ("step.tflite", "head.tflite"))
    assert sizes["total"] == sizes["model_arrays"] + sizes["tokenizer_tables"]


def test_every_generated_file_says_so(release: Path, exported: tuple[Path, dict]) -> None:
    root, _ = exported
    sha = {n: hashlib.sha256((release / n).read_bytes()).hexdigest()
           for n in ("step.tflite", "head.tflite", "quant.json", "tokenizer.model")}
    for name in E.FIRMWARE_FILES:
        text = (root / "src" / name).read_text()
        head = text[: text.index("*/")]
        assert text.startswith("/* " + E.GENERATED_MARK), name
        assert f"python -m pipeline.export firmware {E.display_path(release)} --out" in head, name
        assert "(sha256 " in head
        if name == E.TABLES_C:
            assert sha["tokenizer.model"] in head
        else:
            assert sha["step.tflite"] in head and sha["head.tflite"] in head, name
    assert sha["quant.json"] in (root / "src" / E.MODEL_CONFIG_H).read_text()


def test_op_resolver_registers_exactly_the_models_operators(
        release: Path, exported: tuple[Path, dict]) -> None:
    root, _ = exported
    cc = (root / "src" / E.OP_RESOLVER_CC).read_text()
    methods = re.findall(r"resolver\.(Add\w+)\(\)", cc)
    custom = re.findall(r'resolver\.AddCustom\("(\w+)", (\w+)\(\)\)', cc)
    by_method = {m: op for op, m in E._RESOLVER_METHODS.items()}
    assert len(methods) == len(set(methods))
    assert {by_method[m] for m in methods} | {op for op, _ in custom} == _ops(release)
    h = (root / "src" / E.OP_RESOLVER_H).read_text()
    for op, reg in custom:  # the step's custom operator, registered by firmware/src/gru_op.cc
        header, call = E.CUSTOM_OPS[op]
        assert call == f"{reg}()" and f'#include "{header}"' in cc
    assert f"constexpr unsigned int kSentOpCount = {len(methods) + len(custom)};" in h
    assert "tflite::MicroMutableOpResolver<kSentOpCount>" in h
    with pytest.raises(E.ExportError, match="CUSTOM"):
        E.resolver_method("CUSTOM")


def test_model_config_matches_quant_json(release: Path, exported: tuple[Path, dict]) -> None:
    from pipeline.device.console import read_defines
    from pipeline.text.tokenizer import Tokenizer

    root, sizes = exported
    meta = json.loads((release / "quant.json").read_text())
    q, d = meta["quant"], read_defines(root / "src" / E.MODEL_CONFIG_H)

    def num(name: str) -> float:
        v = d[name].strip("()").rstrip("f")
        return float.fromhex(v) if "0x" in v else float(v)

    assert num("SENT_UNITS") == meta["units"] and num("SENT_VOCAB_SIZE") == meta["vocab_size"]
    assert num("SENT_MAX_TOKENS") == Tokenizer.load(release).cfg.seq_len == 16
    for model in ("step", "head"):
        for kind, tag in (("inputs", "IN"), ("outputs", "OUT")):
            for name, pos in meta[model][kind].items():
                assert num(f"SENT_{model.upper()}_{tag}_{name.upper()}") == pos
        minimum = meta[model].get("arena_bytes_32bit") or meta[model]["arena_bytes"]
        assert num(f"SENT_{model.upper()}_ARENA_MEASURED") == minimum
        assert num(f"SENT_{model.upper()}_ARENA_BYTES_32BIT") == E.arena_with_margin(minimum)
        assert num(f"SENT_{model.upper()}_ARENA_BYTES_64BIT") == E.arena_with_margin(
            meta[model]["arena_bytes"])
    for t in ("h_fwd", "h_bwd", "pooled", "prob"):
        assert num(f"SENT_{t.upper()}_ZERO_POINT") == q[t]["zero_point"]
        assert num(f"SENT_{t.upper()}_SCALE") == q[t]["scale"]
    assert num("SENT_M_FWD") == q["m_fwd"] and num("SENT_M_BWD") == q["m_bwd"]
    assert sizes["arena"] == num("SENT_STEP_ARENA_BYTES_32BIT") + num("SENT_HEAD_ARENA_BYTES_32BIT")


def test_arena_margin() -> None:
    assert E.arena_with_margin(1440) == 2464  # +1 KB minimum
    assert E.arena_with_margin(11808) == 12992  # +10 %, multiple of 16
    assert all(E.arena_with_margin(n) % 16 == 0 and E.arena_with_margin(n) >= n + 1024
               for n in range(0, 40000, 37))


def test_export_refuses_what_the_firmware_cannot_run(release: Path, tmp_path: Path) -> None:
    from pipeline.config import TokenizerConfig
    from pipeline.text.tokenizer import Tokenizer, train_tokenizer

    bad = tmp_path / "bad"
    shutil.copytree(release, bad)
    texts = [t for t, _ in synthetic_reviews(200, seed=3)]
    other: Tokenizer = train_tokenizer(texts, TokenizerConfig(vocab_size=200, seq_len=16))
    assert other.vocab_size != Tokenizer.load(release).vocab_size
    other.save(bad)
    with pytest.raises(E.ExportError, match="vocabulary"):
        E.export_firmware(bad, tmp_path / "out1")
    assert not (tmp_path / "out1").exists()  # nothing half-written
    (bad / "quant.json").unlink()
    with pytest.raises((E.ExportError, OSError)):
        E.export_firmware(bad, tmp_path / "out2")
    assert export_main(["firmware", str(bad), "--out", str(tmp_path / "out3")]) == 1


def test_cli_writes_firmware_and_tokenizer(release: Path, tmp_path: Path, capsys) -> None:
    assert export_main(["firmware", str(release), "--out", str(tmp_path / "fw")]) == 0
    out = capsys.readouterr().out
    assert "model_arrays" in out and "tokenizer_tables" in out
    assert {p.name for p in (tmp_path / "fw" / "src").iterdir()} == set(E.FIRMWARE_FILES)
    assert export_main(["tokenizer", str(release), "--out", str(tmp_path / "tok")]) == 0
    assert _body(tmp_path / "tok" / E.TABLES_C) == _body(tmp_path / "fw" / "src" / E.TABLES_C)


# ---------------------------------------------------------------- compiling what we can here


def _run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, **kw)
    assert proc.returncode == 0, f"{' '.join(map(str, cmd))}\n{proc.stderr}"
    return proc


@needs_gcc
def test_model_arrays_compile_aligned_and_exact(release: Path, exported: tuple[Path, dict],
                                                tmp_path: Path) -> None:
    root, _ = exported
    main = tmp_path / "check.c"
    main.write_text("""#include <stdint.h>
#include <stdio.h>
#include "model_data.h"
int main(void)
{
    unsigned long i, h = 0;
    for (i = 0; i < sent_step_model_len; i++) h = h * 31u + sent_step_model[i];
    printf("%lu %lu %u %u %lu\\n", (unsigned long)((uintptr_t)sent_step_model % 16u),
           (unsigned long)((uintptr_t)sent_head_model % 16u), sent_step_model_len,
           sent_head_model_len, h & 0xFFFFFFFFul);
    return 0;
}
""")
    exe = tmp_path / "check"
    _run(["gcc", "-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic", f"-I{root / 'src'}", main,
          root / "src" / E.MODEL_DATA_C, "-o", exe])
    step, head = (release / "step.tflite").read_bytes(), (release / "head.tflite").read_bytes()
    h = 0
    for b in step:
        h = (h * 31 + b) & 0xFFFFFFFFFFFFFFFF
    assert _run([exe]).stdout.split() == ["0", "0", str(len(step)), str(len(head)),
                                          str(h & 0xFFFFFFFF)]


def test_device_sources_build_with_the_real_tflm(release: Path) -> None:
    """tflm_model.cc, the generated op_resolver.cc and the portable C of the tiny release, built
    by firmware/host/CMakeLists.txt against the esp-tflite-micro / esp-nn sources `pio run`
    downloads (../shared/vendor), in both kernel flavours, and run: the models set up in the
    firmware's own arena split and one review classified."""
    from pipeline.device import native as N

    missing = N.missing_tools("native")
    if missing:
        pytest.skip(f"the native firmware build needs {missing}")
    if not N.DEFAULT_TFLM_DIR.is_dir():
        pytest.skip(f"TFLM sources not found at {N.DEFAULT_TFLM_DIR} (../shared/vendor/README.md)")
    b = N.build(release, "native")
    assert not (FIRMWARE / "host" / "stubs").exists()  # no hand-written TFLM stand-ins
    for k in N.KERNELS:
        info = dict(line.split(" ", 1) for line in _run([*b.command(k), "info"]).stdout.splitlines())
        assert info["model"] == "ok" and info["kernels"] == k
        pred = N.predict(release, ["great, works perfectly", "terrible, broke"], kernels=k)
        assert set(pred.label) <= {"positive", "negative"} and (pred.tokens > 0).all()


# ---------------------------------------------------------------- the PlatformIO project


def _ini() -> configparser.ConfigParser:
    ini = configparser.ConfigParser(inline_comment_prefixes=(";",))
    ini.read(FIRMWARE / "platformio.ini")
    return ini


def test_platformio_project_is_complete_and_pinned() -> None:
    ini = _ini()
    envs = {s.removeprefix("env:"): ini[s] for s in ini.sections() if s.startswith("env:")}
    assert set(envs) == {"esp32dev", "esp32-s3-devkitc-1", "esp32-c3-devkitm-1"}
    assert {e["board"] for e in envs.values()} == set(envs)
    base = ini["env"]
    assert re.fullmatch(r"espressif32 @ \d+\.\d+\.\d+", base["platform"]), base["platform"]
    assert base["framework"] == "espidf" and base["monitor_speed"] == "115200"
    manifest = (FIRMWARE / "src" / "idf_component.yml").read_text()
    assert re.search(r'^\s+espressif/esp-tflite-micro: "==\d+\.\d+\.\d+"$', manifest, re.M)
    # the partition table PlatformIO flashes is the one ESP-IDF sizes the app for
    assert base["board_build.partitions"] == "partitions_singleapp_large.csv"
    assert "CONFIG_PARTITION_TABLE_SINGLE_APP_LARGE=y" in (
        FIRMWARE / "sdkconfig.defaults").read_text()
    assert "project.cmake" in (FIRMWARE / "CMakeLists.txt").read_text()
    cmake = (FIRMWARE / "src" / "CMakeLists.txt").read_text()
    assert "idf_component_register" in cmake and "TF_LITE_STATIC_MEMORY" in cmake


def test_src_includes_resolve() -> None:
    """Every quoted include of firmware/src is a file there or an ESP-IDF/TFLM/esp-nn header."""
    src = FIRMWARE / "src"
    external = ("driver/", "esp_", "freertos/", "sdkconfig.h", "tensorflow/")
    names = {p.name for p in src.iterdir()}
    generated = set(E.FIRMWARE_FILES)
    for path in sorted(src.glob("*.[ch]*")):
        for inc in re.findall(r'#include "([^"]+)"', path.read_text()):
            assert inc in names | generated or inc.startswith(external), (path.name, inc)
    host_only = [p.name for p in src.iterdir() if "host" in p.name or "fuzz" in p.name]
    assert host_only == []


def test_portable_sources_use_no_platform_or_heap() -> None:
    allowed = {"stdint.h", "stddef.h", "string.h", "stdio.h", "math.h", "console.h",
               "sentiment.h", "tokenizer.h", "tokenizer_tables.h", "model_config.h", "model_data.h"}
    for name in ("console.c", "console.h", "sentiment.c", "sentiment.h"):
        text = (FIRMWARE / "src" / name).read_text()
        assert set(re.findall(r'#include [<"]([^>"]+)[>"]', text)) <= allowed, name
        assert not re.search(r"\b(malloc|calloc|realloc|free)\s*\(", text), name
    tflm = [p.name for p in (FIRMWARE / "src").iterdir()
            if p.suffix in (".c", ".cc", ".h") and "tflite::" in p.read_text()
            and p.name not in ("op_resolver.cc", "op_resolver.h")]
    # all TFLM calls in one file, and the custom operator's registration (gru_op.cc) in another
    assert sorted(tflm) == ["gru_op.cc", "tflm_model.cc"]
    text = (FIRMWARE / "src" / "gru_step.c").read_text() + (FIRMWARE / "src" / "gru_step.h").read_text()
    assert set(re.findall(r'#include [<"]([^>"]+)[>"]', text)) == {"stdint.h", "gru_step.h"}
    assert not re.search(r"\b(malloc|calloc|realloc|free)\s*\(", text)


def test_committed_firmware_sources_are_current(tmp_path: Path) -> None:
    """firmware/src holds the generated files of the model named in their header (regenerated
    here when that model folder, e.g. models/release, is present with the same sha256)."""
    src = FIRMWARE / "src"
    missing = [n for n in E.FIRMWARE_FILES if not (src / n).exists()]
    assert missing == [], "run: python -m pipeline.export firmware models/release --out firmware"
    head = (src / E.MODEL_CONFIG_H).read_text().split("*/")[0]
    m = re.search(r"python -m pipeline\.export firmware (\S+) --out (\S+)", head)
    assert m, head
    model_dir = ROOT / m.group(1)
    for path, sha in re.findall(r"(\S+) \(sha256 ([0-9a-f]{64})\)", head):
        if not (ROOT / path).exists():
            pytest.skip(f"{path} is not here to regenerate from")
        assert hashlib.sha256((ROOT / path).read_bytes()).hexdigest() == sha, (
            f"{path} changed since firmware/src was generated: run "
            f"python -m pipeline.export firmware {m.group(1)} --out firmware")
    sizes = E.export_firmware(model_dir, tmp_path)
    for name in E.FIRMWARE_FILES:
        assert _body(tmp_path / "src" / name) == _body(src / name), name
    assert sizes["total"] <= 256 * 1024, sizes  # the flash bar: model arrays + tables
