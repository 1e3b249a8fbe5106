"""Measurements of the firmware build: instructions per token on riscv32, the 32-bit arena, code size.

The riscv32 build of :mod:`pipeline.device.native` runs under ``qemu-riscv32 -singlestep -d
exec,nochain`` (one log line per executed instruction, read through a FIFO): the executable's bench
modes run the tokenizer alone, the step loop on N tokens, the head alone and the setup alone, so
per-token figures are differences over N. Executed PCs map to ELF symbols, hence a per-function
and per-TFLM-operator split of the step loop. The arena minimum is a bisection of the probe mode
(the 32-bit layout of the board); code sizes come from the ELF sections and symbols.
"""

from __future__ import annotations

import collections
import contextlib
import os
import re
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.device.native import (
    KERNELS,
    QEMU,
    ZIG_TARGET,
    Build,
    NativeBuildError,
    build,
    missing_tools,
    qemu_binary,
)

BENCH_VERSION = 2  # bump when the figures are measured differently
BENCH_FILE = "bench.json"


def _demangle(names: Sequence[str]) -> list[str]:
    if not names or shutil.which("c++filt") is None:
        return list(names)
    proc = subprocess.run(["c++filt"], input="\n".join(names) + "\n", capture_output=True, text=True)
    out = proc.stdout.split("\n")
    return out[:len(names)] if proc.returncode == 0 and len(out) >= len(names) else list(names)


@dataclass
class Count:
    instructions: int
    by_function: dict[str, int] = field(default_factory=dict)
    stdout: str = ""


def count_instructions(cmd: Sequence[str], stdin: bytes = b"", by_function: bool = False,
                       timeout: float = 1800) -> Count:
    """Executed guest instructions of ``cmd`` (a riscv32 executable and its arguments) under
    ``qemu-riscv32 -singlestep -d exec,nochain`` (one log line per instruction, read from a FIFO).
    ``by_function``: also per function symbol (qemu names the symbol of each PC)."""
    qemu = qemu_binary()
    if qemu is None:
        raise NativeBuildError(f"{QEMU} not found (apt-get install qemu-user)")
    with tempfile.TemporaryDirectory() as tmp:
        fifo = Path(tmp) / "exec.log"
        os.mkfifo(fifo)
        (Path(tmp) / "stdin").write_bytes(stdin)
        with open(Path(tmp) / "stdin", "rb") as fin, open(Path(tmp) / "stdout", "wb") as fout, \
                open(Path(tmp) / "stderr", "w+b") as ferr:
            proc = subprocess.Popen([qemu, "-singlestep", "-d", "exec,nochain", "-D", str(fifo),
                                     *cmd], stdin=fin, stdout=fout, stderr=ferr)
            killer = threading.Timer(timeout, proc.kill)
            killer.start()

            done = threading.Event()

            def unblock() -> None:  # qemu has exited: end a blocking open() of its log by us
                proc.wait()
                while not done.is_set():  # ENXIO: we are not in open() (yet): try again
                    with contextlib.suppress(OSError):
                        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
                    done.wait(0.05)

            threading.Thread(target=unblock, daemon=True).start()
            total = 0
            counts: collections.Counter[bytes] = collections.Counter()
            try:
                rest = b""
                while True:  # qemu may close and reopen its log: read until it has exited
                    with open(fifo, "rb", buffering=0) as log:
                        while chunk := log.read(1 << 22):
                            if by_function:
                                lines = (rest + chunk).split(b"\n")
                                rest = lines.pop()
                                counts.update(lines)
                            else:
                                total += chunk.count(b"\n")  # a line per executed instruction
                    if proc.poll() is not None:
                        break
                done.set()
                if by_function and rest:
                    counts[rest] += 1
                proc.wait()
                ferr.seek(0)
                err = ferr.read()
            finally:
                done.set()
                killer.cancel()
            if proc.returncode != 0:
                raise RuntimeError(f"{' '.join(cmd)} under qemu failed (rc {proc.returncode}): "
                                   f"{err.decode(errors='replace')[-2000:]}")
        out = (Path(tmp) / "stdout").read_text(errors="replace")
    if by_function:
        return Count(sum(counts.values()), _by_function(Path(cmd[0]), counts), out)
    return Count(total, {}, out)


_TRACE_PC = re.compile(rb"\[[0-9a-f]+/([0-9a-f]+)/")


def _by_function(exe: Path, counts: collections.Counter[bytes]) -> dict[str, int]:
    """Instruction counts per function of ``exe`` from qemu's exec log lines (PC -> symbol;
    functions local to a file are named ``name [file]``: anonymous-namespace kernels share names)."""
    import bisect

    funcs = _elf_functions(exe.read_bytes())
    starts = [f[0] for f in funcs]
    raw: collections.Counter[int] = collections.Counter()
    for line, n in counts.items():
        m = _TRACE_PC.search(line)
        if not m:
            continue
        pc = int(m.group(1), 16)
        i = bisect.bisect_right(starts, pc) - 1
        raw[i if i >= 0 and pc < funcs[i][0] + funcs[i][1] else -1] += n
    names = _demangle([funcs[i][2] for i in raw if i >= 0])
    pretty = dict(zip([i for i in raw if i >= 0], names, strict=True))
    out: collections.Counter[str] = collections.Counter()
    for i, n in raw.items():
        if i < 0:
            out["?"] += n
        else:
            out[pretty[i] + (f" [{funcs[i][3]}]" if funcs[i][3] else "")] += n
    return dict(out.most_common())


_OPERATORS = (  # (bucket, pattern on "demangled name [file]"), first match wins
    ("TINYSENT_BIGRU (fused GRU step)", r"^gru_|tinysent_|\[gru_(step\.c|op\.cc)\]"),
    ("requantization (shared by kernels)", r"MultiplyByQuantizedMultiplier"),
    ("FULLY_CONNECTED", r"FullyConnected|fully_connected"),
    ("ADD/SUB/MUL broadcast helpers", r"ProcessBroadcastShapes|ReduceDimensionsForBroadcast"),
    ("ADD", r"\bAdd\w*[<(]|AddFunc|EvalAdd|AddEval|esp_nn_add|\[add(_common)?\.cc\]"),
    ("SUB", r"\bSub\w*[<(]|SubElementwise|EvalSub|SubEval|\[sub(_common)?\.cc\]"),
    ("MUL", r"\bMul\w*[<(]|EvalMul|MulEval|esp_nn_mul|\[mul(_common)?\.cc\]"),
    ("CAST", r"Cast\w*[<(]|\[cast\.cc\]"),
    ("GATHER", r"Gather\w*[<(]|\[gather\.cc\]"),
    ("SPLIT", r"Split\w*[<(]|\[split\.cc\]"),
    ("UNPACK", r"Unpack\w*[<(]|\[unpack\.cc\]"),
    ("LOGISTIC", r"Logistic\w*[<(]|esp_nn_logistic|\[logistic(_common)?\.cc\]"),
    ("firmware", r"\[tflm_model\.cc\]|^(sent_|console_|tok_|main$)|\[(console|sentiment|tokenizer)\.c\]"),
    ("TFLM interpreter", r"^(void |bool |int |unsigned |\w+\* )?(tflite|flatbuffers)::"),
    ("esp-nn other", r"^esp_nn"),
)


def operator_breakdown(by_function: dict[str, int]) -> dict[str, int]:
    """Instructions per TFLM operator (its kernel functions, by name or source file), the
    interpreter's own work, the firmware, and the C library (memcpy, memset, ...)."""
    out: collections.Counter[str] = collections.Counter()
    for name, n in by_function.items():
        for op, pat in _OPERATORS:
            if re.search(pat, name):
                out[op] += n
                break
        else:
            out["C library / runtime"] += n
    return dict(out.most_common())


def _bench_text() -> bytes:
    """About 1,900 bytes of ordinary review text (under the tokenizer's 2,048-byte input)."""
    base = ("I bought this charger for my phone and it works great. The cable is sturdy, it charges "
            "fast and the price was fair. After a month the plug got loose and it stopped working, "
            "so I returned it. Customer service was helpful and the replacement has been fine. ")
    return (base * 8)[:1900].encode()


def bench(model_dir: Path, kernels: Sequence[str] = ("esp_nn",), n_tokens: int = 128,
          by_function: bool = True, **build_kw: Any) -> dict:
    """Instructions on riscv32 (QEMU) per token: tokenizer / step loop / head, per
    ``n_tokens``-token review; the 32-bit arena minimum; code sizes."""
    b = build(model_dir, "riscv32", **build_kw)
    text = _bench_text()
    out: dict[str, Any] = {"model_dir": str(model_dir), "target": "riscv32 (qemu-riscv32, "
                           + " ".join(ZIG_TARGET) + ")", "n_tokens": n_tokens, "kernels": {}}
    for k in kernels:
        exe = [str(b.exe[k])]
        base = count_instructions([*exe, "bench", "none"], text).instructions
        tok = count_instructions([*exe, "bench", "tok"], text)
        n_ids = int(tok.stdout.split()[-1])
        head = count_instructions([*exe, "bench", "head"], text).instructions - base
        run = count_instructions([*exe, "bench", "run", str(n_tokens)], text, by_function=by_function)
        base_f = (count_instructions([*exe, "bench", "none"], text, by_function=True).by_function
                  if by_function else {})
        step_loop = run.instructions - base - head
        fig: dict[str, Any] = {
            "baseline_setup": base,
            "tokenizer_per_token": round((tok.instructions - base) / n_ids, 1),
            "tokenizer_text": {"bytes": len(text), "tokens": n_ids},
            "step_loop_per_token": round(step_loop / n_tokens, 1),
            "head": head,
            f"review_{n_tokens}_tokens_model": step_loop + head,
            f"review_{n_tokens}_tokens_with_tokenizer": step_loop + head
            + round((tok.instructions - base) / n_ids * n_tokens),
        }
        if by_function:
            diff = {f: run.by_function.get(f, 0) - base_f.get(f, 0) for f in run.by_function}
            diff = {f: n for f, n in sorted(diff.items(), key=lambda x: -x[1]) if n > 0}
            per_tok = {f: round(n / n_tokens, 1) for f, n in diff.items()}
            fig["run_per_token_by_function"] = dict(list(per_tok.items())[:40])
            fig["run_per_token_by_operator"] = {
                op: round(n / n_tokens, 1) for op, n in operator_breakdown(diff).items()}
        out["kernels"][k] = fig
    out["arena_min_32bit"] = arena_minimum(model_dir, **build_kw)
    out["code_size"] = code_size(b)
    out["host_native"] = host_us_per_token(model_dir, **build_kw)
    return out


def host_us_per_token(model_dir: Path, n_tokens: int = 100_000, repeats: int = 3,
                      **build_kw: Any) -> dict:
    """Wall-clock microseconds per token of the step loop in the native build (esp_nn kernels):
    the best of ``repeats`` runs of ``bench run N`` minus the best of ``bench none`` (setup), / N."""
    import platform
    import time

    b = build(model_dir, "native", **build_kw)
    exe = [str(b.exe["esp_nn"]), "bench"]

    def best(args: list[str]) -> float:
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            subprocess.run([*exe, *args], input=b"", capture_output=True, check=True)
            times.append(time.perf_counter() - t0)
        return min(times)

    per_token = (best(["run", str(n_tokens)]) - best(["none"])) / n_tokens
    return {"us_per_token": round(per_token * 1e6, 3), "tokens": n_tokens, "repeats": repeats,
            "machine": platform.machine(), "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count()}


def _probe(cmd: list[str], step: int, head: int) -> bool:
    proc = subprocess.run([*cmd, "probe", str(step), str(head)], capture_output=True, text=True,
                          timeout=300)
    return proc.returncode == 0 and proc.stdout.startswith("ok")


def arena_minimum(model_dir: Path, target: str = "riscv32", kernels: Sequence[str] = KERNELS,
                  **build_kw: Any) -> dict:
    """Smallest arena (multiple of 16 B) in which each model builds and runs one review, by
    bisection on ``target`` (riscv32: the 32-bit layout of the board), per kernel flavour."""
    b = build(model_dir, target, **build_kw)
    res: dict[str, Any] = {}
    for k in kernels:
        cmd = b.command(k)
        big = 1 << 16
        out = {}
        for which in ("step", "head"):
            lo, hi = 0, big  # lo fails (or is 0), hi works
            if not _probe(cmd, big, big):
                raise RuntimeError(f"{k}: the models do not run even in {big} B arenas")
            while hi - lo > 16:
                mid = (lo + hi) // 2 // 16 * 16
                ok = _probe(cmd, mid, big) if which == "step" else _probe(cmd, big, mid)
                lo, hi = (lo, mid) if ok else (mid, hi)
            out[which] = hi
        out["total"] = out["step"] + out["head"]
        res[k] = out
    return res


# ----------------------------------------------------------------------------- ELF sizes

_SHF_WRITE, _SHF_ALLOC, _SHF_EXECINSTR = 0x1, 0x2, 0x4
_SHT_SYMTAB, _SHT_NOBITS = 2, 8


def _elf_sections(data: bytes) -> tuple[str, list[dict]]:
    """(endianness + class format prefix, section headers with names) of an ELF file."""
    import struct

    if data[:4] != b"\x7fELF":
        raise ValueError("not an ELF file")
    is64, end = data[4] == 2, "<" if data[5] == 1 else ">"
    if is64:
        shoff, = struct.unpack_from(end + "Q", data, 0x28)
        shentsize, shnum, shstrndx = struct.unpack_from(end + "HHH", data, 0x3A)
        fmt = end + "IIQQQQIIQQ"
    else:
        shoff, = struct.unpack_from(end + "I", data, 0x20)
        shentsize, shnum, shstrndx = struct.unpack_from(end + "HHH", data, 0x2E)
        fmt = end + "IIIIIIIIII"
    secs = []
    for i in range(shnum):
        name, typ, flags, addr, off, size, link, info, align, entsize = struct.unpack_from(
            fmt, data, shoff + i * shentsize)
        secs.append({"name_off": name, "type": typ, "flags": flags, "offset": off, "size": size,
                     "link": link, "entsize": entsize})
    strtab = secs[shstrndx]
    for sec in secs:
        o = strtab["offset"] + sec["name_off"]
        sec["name"] = data[o:data.index(b"\0", o)].decode()
    return ("64" if is64 else "32") + end, secs


def _elf_symtab(data: bytes) -> Iterable[tuple[str, int, int, int, int]]:
    """Every symbol-table entry of an ELF file, in order: (name, info, section index, value, size)."""
    import struct

    kind, secs = _elf_sections(data)
    end = kind[2]
    for sec in secs:
        if sec["type"] != _SHT_SYMTAB:
            continue
        strs = secs[sec["link"]]
        for i in range(sec["size"] // sec["entsize"]):
            o = sec["offset"] + i * sec["entsize"]
            if kind.startswith("64"):
                name, info, _, shndx, value, size = struct.unpack_from(end + "IBBHQQ", data, o)
            else:
                name, value, size, info, _, shndx = struct.unpack_from(end + "IIIBBH", data, o)
            so = strs["offset"] + name
            yield data[so:data.index(b"\0", so)].decode(errors="replace"), info, shndx, value, size


def _elf_symbols(data: bytes, with_value: bool = False) -> list[tuple]:
    """Defined function/object symbols of an ELF file: (name, size, section index[, value])."""
    return [(name, size, shndx, value) if with_value else (name, size, shndx)
            for name, info, shndx, value, size in _elf_symtab(data)
            if 0 < shndx < 0xFF00 and info & 0xF in (1, 2)]  # OBJECT / FUNC only


def _elf_functions(data: bytes) -> list[tuple[int, int, str, str]]:
    """Function symbols of an executable: (address, size, name, source file of local ones)."""
    out = []
    current_file = ""
    for name, info, _, value, size in _elf_symtab(data):
        if info & 0xF == 4:  # STT_FILE: the local symbols that follow are this file's
            current_file = name
        elif info & 0xF == 2 and size:
            out.append((value & ~1, size, name, current_file if info >> 4 == 0 else ""))
    return sorted(out)


def _ar_members(data: bytes) -> Iterable[bytes]:
    """The object files of a static library (ar archive)."""
    if not data.startswith(b"!<arch>\n"):
        raise ValueError("not an ar archive")
    pos = 8
    while pos + 60 <= len(data):
        header = data[pos:pos + 60]
        size = int(header[48:58].decode().strip())
        name = header[:16].decode(errors="replace").strip()
        body = data[pos + 60:pos + 60 + size]
        if name.startswith("#1/"):  # BSD long name inside the body
            n = int(name[3:])
            body = body[n:]
        if body[:4] == b"\x7fELF":
            yield body
        pos += 60 + size + (size & 1)


_LIB_CATEGORY = {  # static library of firmware/host/CMakeLists.txt -> code size category
    "libtflm_core.a": "tflm_esp_nn", "libtflm_kernels_common.a": "tflm_esp_nn",
    "libtflm_kernels_esp_nn.a": "tflm_esp_nn", "libtflm_kernels_reference.a": "tflm_esp_nn",
    "libesp_nn.a": "tflm_esp_nn", "libfirmware.a": "firmware_code",
    "libfirmware_model.a": "model_arrays", "libfirmware_tables.a": "tokenizer_tables",
}


def _section_kind(sec: dict) -> str | None:
    """text / rodata / data / bss for the sections that hold code and data; other for the rest
    of the loaded image (unwind tables, relocations, notes), None for what is not loaded."""
    if not sec["flags"] & _SHF_ALLOC:
        return None
    name = sec["name"]
    for kind, prefixes in (("text", (".text", ".init", ".fini", ".plt")),
                           ("rodata", (".rodata", ".srodata")),
                           ("data", (".data", ".sdata", ".init_array", ".fini_array", ".got")),
                           ("bss", (".bss", ".sbss"))):
        if name == prefixes[0] or name.startswith(prefixes):
            return kind
    return "other"


def code_size(b: Build, kernels: Sequence[str] = KERNELS) -> dict:
    """Bytes of ``.text`` / ``.rodata`` / ``.data`` / ``.bss`` in each linked executable, split by
    where each function or object symbol comes from: TFLM + esp-nn, the firmware's code
    (console, step loop, tokenizer, tflm_model.cc, op resolver, host shims), the model arrays,
    the tokenizer tables, and the rest (host driver, C/C++ runtime). ``unattributed`` is what
    has no sized symbol (string literals, constants pools, padding); ``total`` the sections."""
    category: dict[str, str] = {}
    if b.tree.is_dir():  # (its libraries: of the last model built there; same symbol names)
        for lib, cat in _LIB_CATEGORY.items():
            path = b.tree / lib
            if path.exists():
                for obj in _ar_members(path.read_bytes()):
                    for name, _, _ in _elf_symbols(obj):
                        category.setdefault(name, cat)
    res: dict[str, Any] = {}
    for k in kernels:
        data = b.exe[k].read_bytes()
        _, secs = _elf_sections(data)
        sizes: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
        seen: set[tuple[int, int]] = set()
        for name, size, shndx, value in _elf_symbols(data, with_value=True):
            kind = _section_kind(secs[shndx]) if shndx < len(secs) else None
            if (shndx, value) in seen:  # aliases (C1/C2 constructors, weak libc names)
                continue
            seen.add((shndx, value))
            if kind and kind != "other" and size:
                sizes[category.get(name, "runtime_and_driver")][kind] += size
        total: collections.Counter[str] = collections.Counter()
        for sec in secs:
            kind = _section_kind(sec)
            if kind:
                total[kind] += sec["size"]
        attributed: collections.Counter[str] = collections.Counter()
        for c in sizes.values():
            attributed.update(c)
        out = {cat: dict(c) for cat, c in sorted(sizes.items())}
        out["unattributed"] = {kind: total[kind] - attributed[kind] for kind in total
                               if kind != "other"}
        out["total"] = dict(total)
        res[k] = out
    return res


def bench_stage(release_dir: Path, out_dir: Path) -> dict:
    """Stage: the benchmark of an int8 release folder (esp_nn kernels, what ESP32 / ESP32-C3 run)
    into ``out_dir/bench.json``; skipped, with the reason, when the toolchain is missing."""
    import json

    if missing := missing_tools("riscv32"):
        return {"skipped": f"missing {', '.join(missing)} (see firmware/README.md)"}
    res = bench(release_dir, kernels=("esp_nn",))
    (Path(out_dir) / BENCH_FILE).write_text(json.dumps(res, indent=1) + "\n")
    f = res["kernels"]["esp_nn"]
    return {"step_loop_per_token": f["step_loop_per_token"], "head": f["head"],
            "tokenizer_per_token": f["tokenizer_per_token"],
            "arena_min_32bit": res["arena_min_32bit"]["esp_nn"]}


def agreement(release_dir: Path, sets: dict[str, list[tuple[str, int]]],
              targets: Sequence[str] = ("native", "riscv32")) -> dict:
    """The firmware (``console_classify`` of each build ``target``, esp_nn kernels) against
    ``--runtime tflm`` on every review of ``sets``: per set, the reviews whose P(positive) (the
    int8 prob's float32 value) or label differ, with the first few differing indices.

    The riscv32 build runs under plain ``qemu-riscv32`` (no instruction log): minutes per 10,000
    reviews.
    """
    import numpy as np

    from pipeline.device.native import predict as firmware_predict
    from pipeline.progress import Progress
    from pipeline.report.predictors import load_predictor

    tflm = load_predictor(release_dir, "tflm")
    out: dict[str, Any] = {"targets": list(targets), "sets": {}}
    total = sum(len(v) for v in sets.values())
    with Progress(total * (1 + len(targets)), "firmware vs tflm", "reviews") as progress:
        for name, rows in sets.items():
            texts = [t for t, _ in rows]
            ref = np.asarray(tflm(texts), np.float32)
            progress.update(len(texts))
            row: dict[str, Any] = {"reviews": len(texts)}
            for target in targets:
                got = firmware_predict(release_dir, texts, target).p
                progress.update(len(texts))
                diff = np.flatnonzero(got != ref)
                row[target] = {"p_differs": int(diff.size),
                               "label_differs": int(np.sum((got >= 0.5) != (ref >= 0.5))),
                               "first": diff[:5].tolist()}
            out["sets"][name] = row
    out["identical"] = all(r[t]["p_differs"] == 0 for r in out["sets"].values() for t in targets)
    return out
