"""The device benchmark in words: the markdown of ``pipeline.bench``'s figures (report and README).

The figures are riscv32 (RV32IMAC, the ESP32-C3's instruction set) instruction counts of the
firmware built with clang (zig) and run under QEMU, not cycles on a chip. The ESP32-C3 estimate
turns them into time at 160 MHz with a stated cycles-per-instruction range: the C3 is a
single-issue, in-order RV32IMC core whose ALU operations and multiplies take one cycle, while
loads of weights and tables from flash go through a 16 KB cache (misses stall for tens of cycles),
taken branches and divisions cost more; 1.0 is the floor, 2.0 a pessimistic bound for this
load-heavy, branch-light code. Measure on a board to narrow it.
"""

from __future__ import annotations

from typing import Any

C3_HZ = 160e6
CPI_RANGE = (1.0, 2.0)


def c3_ms(instructions: float) -> str:
    """``a–b ms`` at 160 MHz over :data:`CPI_RANGE`."""
    lo, hi = (instructions * c / C3_HZ * 1000 for c in CPI_RANGE)
    return f"{lo:.1f}–{hi:.1f} ms"


def bench_markdown(res: dict[str, Any], command: str | None = None) -> list[str]:
    """Markdown lines for one ``pipeline.device.bench.bench`` result."""
    n = res.get("n_tokens", 128)
    lines = ["## On the device: riscv32 instructions, 32-bit arena, code size", ""]
    if command:
        lines += [f"Measured by `{command}` on the riscv32 build of the firmware "
                  f"({res.get('target', 'riscv32')}).", ""]
    lines += [f"| kernels | tokenizer / token | step loop / token | head | {n}-token review (model) "
              f"| {n}-token review + tokenizer | ESP32-C3 at 160 MHz, {n} tokens (CPI "
              f"{CPI_RANGE[0]:g}–{CPI_RANGE[1]:g}) |", "|---|---:|---:|---:|---:|---:|---:|"]
    for k, f in res.get("kernels", {}).items():
        total = f[f"review_{n}_tokens_with_tokenizer"]
        lines.append(f"| {k} | {f['tokenizer_per_token']:,.0f} | {f['step_loop_per_token']:,.0f} | "
                     f"{f['head']:,} | {f[f'review_{n}_tokens_model']:,} | {total:,} | "
                     f"{c3_ms(total)} |")
    lines.append("")
    ops = next((f["run_per_token_by_operator"] for f in res.get("kernels", {}).values()
                if "run_per_token_by_operator" in f), None)
    if ops:
        lines += ["Step loop per token, by operator (first kernel flavour; instructions):", "",
                  "| operator | instructions / token |", "|---|---:|",
                  *[f"| {op} | {v:,.0f} |" for op, v in sorted(ops.items(), key=lambda x: -x[1])],
                  ""]
    if host := res.get("host_native"):
        lines += [f"Host: the native build's step loop takes {host['us_per_token']:.2f} µs per token "
                  f"(esp_nn kernels, best of {host['repeats']} runs of {host['tokens']:,} tokens, "
                  f"{host['machine']}, wall clock on a machine with {host['cpu_count']} cores).", ""]
    if arena := res.get("arena_min_32bit"):
        lines += ["32-bit arena minimum (bisection in 16-byte steps on the riscv32 build): " + "; ".join(
            f"{k}: step {a['step']:,} B + head {a['head']:,} B = {a['total']:,} B"
            for k, a in arena.items()) + ".", ""]
    if size := res.get("code_size"):
        k, parts = next(iter(size.items()))
        kinds = sorted({kind for c in parts.values() for kind in c})
        lines += [f"Code size of the riscv32 executable ({k} kernels; bytes by section kind):", "",
                  "| part | " + " | ".join(kinds) + " |", "|---|" + "---:|" * len(kinds),
                  *[f"| {part} | " + " | ".join(f"{c.get(kind, 0):,}" for kind in kinds) + " |"
                    for part, c in parts.items()], ""]
    return lines


def compare_markdown(before: dict[str, Any], after: dict[str, Any], kernels: str = "esp_nn",
                     labels: tuple[str, str] = ("before", "after")) -> list[str]:
    """Markdown: two ``bench`` results side by side, per token and per operator of the step loop."""
    b, a = before["kernels"][kernels], after["kernels"][kernels]
    n = after.get("n_tokens", 128)

    def row(name: str, x: float, y: float) -> str:
        ratio = f"{x / y:.2f}x" if y else "–"
        return f"| {name} | {x:,.0f} | {y:,.0f} | {ratio} |"

    lines = [f"| riscv32 instructions ({kernels} kernels) | {labels[0]} | {labels[1]} | "
             f"{labels[0]} / {labels[1]} |", "|---|---:|---:|---:|",
             row("step loop / token", b["step_loop_per_token"], a["step_loop_per_token"]),
             row("tokenizer / token", b["tokenizer_per_token"], a["tokenizer_per_token"]),
             row("head / review", b["head"], a["head"]),
             row(f"{n}-token review + tokenizer", b[f"review_{n}_tokens_with_tokenizer"],
                 a[f"review_{n}_tokens_with_tokenizer"]), ""]
    ob, oa = b.get("run_per_token_by_operator", {}), a.get("run_per_token_by_operator", {})
    if ob or oa:
        ops = sorted(set(ob) | set(oa), key=lambda op: -(ob.get(op, 0) + oa.get(op, 0)))
        lines += ["Step loop per token, by operator (instructions):", "",
                  f"| operator | {labels[0]} | {labels[1]} |", "|---|---:|---:|",
                  *[f"| {op} | {ob.get(op, 0):,.0f} | {oa.get(op, 0):,.0f} |" for op in ops], ""]
    return lines
