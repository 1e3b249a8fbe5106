"""The run's ``report.md`` and ``roc.png`` from the finished stages, and ``--publish``."""

from __future__ import annotations

import json
import time
from pathlib import Path

from pipeline.report.device import bench_markdown, compare_markdown
from pipeline.report.metrics import MISSING, fmt_cell, metrics_table
from pipeline.report.plots import plot_roc_points


def _human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def _bytes_or_missing(n: int | None) -> str:
    return f"{n:,} B" if n else MISSING


_MODEL_STAGE = {"teacher_eval": "teacher", "student_eval": "student", "student_kd_eval": "student_kd",
                "student_afd_eval": "student_afd", "prune_eval": "student_pruned", "qat_eval": "qat",
                "int8_eval": "int8"}


def tfidf_name(peer: dict) -> str:
    """The TF-IDF peer's row name: its own (the hashed peer's) or the in-memory one's, with C."""
    return peer.get("name") or f"TF-IDF 1-2gram + LR (C={peer['C']:g})"


def _compression_summary(run_dir: Path, load, evals: dict, peer: dict | None) -> list[str]:
    """The Baseline / Distilled / Pruned / Quantized table and the pruning rounds."""
    lines: list[str] = []
    distilled = [s for s in ("student_kd_eval", "student_afd_eval") if evals.get(s)]
    chosen = max(distilled, key=lambda s: evals[s]["val"]["accuracy"]) if distilled else None
    prune = load("student_pruned/pruning.json")
    rows = []
    if evals.get("teacher_eval"):
        m = evals["teacher_eval"]
        rows.append(("Baseline", "BiGRU teacher, float32", m,
                     _human_bytes(sum(m["model_files_bytes"].values())) + " (Keras file)",
                     "teacher_eval"))
    if chosen:
        m = evals[chosen]
        rows.append(("Distilled", "student + KD" + (" + AFD" if "afd" in chosen else "") +
                     ", float32", m, _human_bytes(sum(m["model_files_bytes"].values())) +
                     f" (Keras file; {m['model'].get('params', 0):,} weights)", chosen))
    if evals.get("prune_eval") and prune:
        m = evals["prune_eval"]
        last = next((r for r in prune["rounds"] if r["round"] == prune.get("round")), prune["rounds"][-1])
        sz, fl = last["size"], last.get("flash")
        if fl:  # structured tickets (and the structures an unstructured one happened to empty)
            name = (f"Lottery ticket round {last['round']}, {fl['dims']} dims x {fl['units']} units, "
                    f"{fl['dropped_rows']:,} rows dropped, float32")
            size = (f"model arrays {_human_bytes(fl['bytes'])} ({_table(fl)}): "
                    f"{_human_bytes(fl['saved_bytes'])} ({100 * fl['saved']:.1f}%) less than dense; "
                    f"{sz['nonzero_weights']:,} weights")
        else:
            name = f"Lottery ticket, {100 * last['sparsity']:.0f}% sparse, float32"
            size = (f"{sz['nonzero_weights']:,} non-zero of {sz['weights']:,} weights; int8 "
                    f"{_human_bytes(sz['int8_dense_bytes'])} dense, "
                    f"{_human_bytes(sz['int8_gzip_bytes'])} gzip")
        rows.append(("Pruned", name, m, size, "prune_eval"))
    if evals.get("int8_eval"):
        m = evals["int8_eval"]
        d = m["model"]["device"]
        qat = (load("qat/stage.json") or {}).get("summary", {})
        how = ("QAT weights" if qat.get("kept") == "qat" else
               "QAT kept its start weights" if qat.get("kept") == "start" else "post-training")
        rows.append(("Quantized", f"full int8 ({how}), TFLM step loop", m,
                     f"{_human_bytes(d['flash_bytes'])} flash (model files)", "int8_eval"))
    if peer:
        kept = peer["stopwords_kept"]
        rows.append(("Peer", tfidf_name(peer), kept,
                     _human_bytes(kept["size_bytes"]) + (" (float32 weights)" if peer.get("hashed")
                                                         else " (pickle)"), ""))
    if ft := load("peer_fasttext/metrics.json"):
        for key, name, kind in (("bigram", "fastText bigram", ".bin"),
                                ("quantized", "fastText bigram, quantized", ".ftz")):
            rows.append(("Peer", name, ft[key], _human_bytes(ft[key]["size_bytes"]) + f" ({kind})",
                         ""))
    if not rows:
        return lines
    lines += ["## Compression: Baseline / Distilled / Pruned / Quantized (test split)", "",
              "| stage | model | tokens | accuracy | balanced acc. | F1 | ROC-AUC | size | "
              "host ms / review |", "|---|---|---:|---:|---:|---:|---:|---|---:|"]
    for stage, name, m, size, eval_stage in rows:
        t = m["test"]
        tok = load(f"{_MODEL_STAGE[eval_stage]}/tokenizer.json") if eval_stage else None
        tokens = (tok or {}).get("seq_len", MISSING)
        lines.append(f"| {stage} | {name} | {tokens} | " + " | ".join(
            fmt_cell(c, t.get(c)) for c in ("accuracy", "balanced_accuracy", "f1", "roc_auc")) +
            f" | {size} | {t['host_ms_per_review']:.3f} |")
    lines += ["", "Host ms / review: batched Keras prediction on this machine's CPU; the int8 row "
              "runs one review at a time, token by token, in the TFLM interpreter.", ""]
    if chosen:
        qat = (load("qat/stage.json") or {}).get("summary", {})
        ticket = evals.get("prune_eval")
        base = ("the pruned ticket" if ticket and ticket["val"]["accuracy"] >=
                evals[chosen]["val"]["accuracy"] else "the dense distilled student")
        lines += [f"Decisions, all on the validation split: the distilled student that went on is "
                  f"the better of KD and KD + AFD: `{chosen.removesuffix('_eval')}`; QAT started "
                  f"from {base} (the ticket goes on only if it is at least as accurate)"]
        if qat:
            lines[-1] += (f"; QAT fine-tuned at {qat.get('seq_len')} tokens and "
                          + ("kept its fine-tuned weights" if qat.get("kept") == "qat" else
                             "kept its starting weights") +
                          f" (validation loss {qat.get('val_loss_before', float('nan')):.5f} "
                          f"before, {qat.get('val_loss_after', float('nan')):.5f} after"
                          + (f"; kept by the {qat['kept_by']}" if qat.get("kept_by") else "") + ").")
        lines += [""]
        lines += _qat_precision(qat)
    if prune:
        lines += _lottery_rounds(prune)
    return lines


def _qat_precision(qat: dict) -> list[str]:
    """What QAT buys: float vs PTQ (8-bit and the release's embedding width) vs QAT, device path."""
    prec = qat.get("precision")
    if not prec:
        return []
    bits = prec["embedding_bits"]
    names = {"float": "float32 student (QAT's start)", "qat_float": "float32 after QAT",
             "ptq_8": "PTQ, 8-bit embedding", f"ptq_{bits}": f"PTQ, {bits}-bit embedding",
             f"qat_{bits}": f"QAT, {bits}-bit embedding"}
    splits = list(prec["splits"])
    lines = [f"### What QAT buys (device path: `convert_int8` + the `--runtime tflm` step loop; first "
             f"{prec['max_reviews']:,} reviews of each split)", "",
             "| model | " + " | ".join(f"{s} accuracy | {s} loss" for s in splits) +
             " | model files | embedding table |",
             "|---|" + "---:|---:|" * len(splits) + "---:|---:|"]
    for key, name in names.items():
        cells = [prec["splits"][s].get(key) for s in splits]
        if any(c is None for c in cells):
            continue
        info = cells[0]
        size = (f"{_human_bytes(info['model_bytes'])} | {_human_bytes(info['embedding_bytes'])}"
                if "model_bytes" in info else "float32 | float32")
        lines.append(f"| {name} | " + " | ".join(f"{c['accuracy']:.4f} | {c['loss']:.4f}" for c in cells)
                     + f" | {size} |")
    return lines + [""]


def _table(flash: dict) -> str:
    """The embedding table the ticket's flash bytes count (rounds before v2 counted an int8 one)."""
    bits = flash.get("embedding_bits", 8)
    return "int8 table" if bits == 8 else f"{bits}-bit table"


def _lottery_rounds(prune: dict) -> list[str]:
    """The per-round table: validation accuracy next to the flash bytes each ticket saves."""
    mode = prune.get("config", {}).get("mode", "unstructured")
    what = ("groups: vocabulary rows, embedding dims, GRU unit pairs, by RMS" if mode == "structured"
            else "single weights")
    lines = [f"### Lottery Ticket rounds (one global magnitude threshold over {what}; rewind to epoch "
             f"{prune['rewind']['epoch']}, source: {prune['rewind']['source']})", "",
             "| round | target | threshold | val loss | val acc | rows dropped | dims | units | "
             "model arrays | saved | sparsity | non-zero |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in prune["rounds"]:
        fl = r.get("flash") or {}
        saved = f"{fl['saved_bytes']:,} ({100 * fl['saved']:.1f}%)" if fl else MISSING
        size = f"{fl['bytes']:,}" if fl else MISSING
        kept = " (kept)" if r.get("round") == prune.get("round") else ""
        lines.append(
            f"| {r.get('round', 0)}{kept} | {100 * r.get('target', 0.0):.1f}% | "
            f"{r.get('threshold', 0.0):.4f} | {r['val_loss']:.4f} | {100 * r['val_accuracy']:.2f} | "
            f"{fl.get('dropped_rows', MISSING)} | {fl.get('dims', MISSING)} | "
            f"{fl.get('units', MISSING)} | {size} | {saved} | "
            f"{100 * r['sparsity']:.1f}% | {r['size']['nonzero_weights']:,} |")
    fl0 = prune["rounds"][0].get("flash") or {}
    lines += ["", "Round 0 is the dense distilled student. Target: the share of the dense model "
              "arrays' bytes to save (structured) or of the weights to zero (unstructured). Model "
              f"arrays ({_table(fl0)}, the release's `quant.embedding_bits`): the bytes of the "
              "embedding rows the device keeps (packed 4- or 2-bit codes with a uint8 multiplier per "
              "row, or int8; pruned rows leave the table, "
              "`pipeline.device.step.compact_rows`: an int16 id map, 2 bytes per token id, sends them to "
              "one shared zero row), the GRU kernels of the kept dims and units (int8), their biases "
              "(int32) and the head; TFLM stores zeros densely, so only whole structures count. The "
              "stage keeps the deepest round at least as accurate on validation as round 0, shrunk to "
              "its dims and units; the release takes it only if it is at least as accurate as the "
              "dense distilled student.", ""]
    return lines


def _teacher_signal(ens: dict | None, targets: dict | None = None) -> list[str]:
    """What the students learn from: the BiGRU teacher (or each of several and their mean), the
    cross-fitted TF-IDF and their mix, on which texts (``targets``: the teacher_targets stage's
    summary)."""
    if not ens:
        return []
    texts = ""
    if targets and "crops" in targets:
        texts = (f" The texts: {targets['reviews']:,} training reviews (their labels beside the mix) "
                 f"and {targets['crops']:,} crops of them")
        if targets.get("unlabeled"):
            texts += (f"; {targets['unlabeled']:,} 3★ training reviews, which the labelled data "
                      f"leaves out, and their crops, {targets['unlabeled_texts']:,} texts with the "
                      "mix as their only label (`distill.unlabeled`)")
        texts += "."
    lines = ["## Distillation teacher: BiGRU + cross-fitted TF-IDF", "",
             f"The students are distilled from `(1 - w) * z_BiGRU + w * z_TF-IDF` with w = "
             f"{ens['weight']:g}, the weight with the best validation accuracy "
             f"({', '.join(f'w={k}: {100 * v:.2f}%' for k, v in ens['val_accuracy_by_weight'].items())})."
             f" Each TF-IDF + LR logit comes from one of {ens['folds']} models fitted without the "
             "review (training reviews and their crops) or their mean (validation, test)"
             + (": the hashed, out-of-core model (`data.stream`)." if ens.get("tfidf") == "hashed"
                else ".") + texts, "",
             "| teacher signal | val accuracy | test accuracy | test balanced acc. | test F1 | "
             "test ROC-AUC |", "|---|---:|---:|---:|---:|---:|"]
    seeds = ens.get("teachers", [])  # distill.teachers: the BiGRU half is their mean logit
    rows = [(f"teacher_{k + 1}", f"BiGRU teacher `{d}`") for k, d in enumerate(seeds)]
    rows += [("teacher", f"BiGRU teachers, mean logit of {len(seeds)}" if seeds else "BiGRU teacher"),
             ("tfidf_crossfit", "TF-IDF + LR, cross-fitted"), ("ensemble", f"mix, w = {ens['weight']:g}")]
    for key, name in rows:
        v, t = ens["val"][key], ens["test"][key]
        lines.append(f"| {name} | {fmt_cell('accuracy', v['accuracy'])} | " + " | ".join(
            fmt_cell(c, t.get(c)) for c in ("accuracy", "balanced_accuracy", "f1", "roc_auc")) + " |")
    return [*lines, ""]


REPORT_ROWS = (  # (evaluation stage, row name), in pipeline order
    ("teacher_eval", "Baseline: BiGRU teacher (float32, Keras)"),
    ("student_eval", "Student, labels only (float32)"),
    ("student_kd_eval", "Distilled: student + KD (float32)"),
    ("student_afd_eval", "Distilled: student + KD + AFD (float32)"),
    ("prune_eval", "Pruned: Lottery Ticket of the distilled student (float32)"),
    ("qat_eval", "QAT stage output at the release length: the int8 model's float reference "
                 "(float32 with the device's embedding table)"),
    ("int8_eval", "Quantized: full int8 step loop (TFLM)"),
)


HELDOUT_METRICS = (  # one table each, in this order
    ("balanced_accuracy", "Balanced accuracy"),
    ("accuracy", "Accuracy"),
    ("f1", "F1 (positive class)"),
)


def _heldout_tables(models: list[tuple[str, dict]]) -> list[str]:
    """The held-out sets: their sizes, then one table per metric (a row per model, a column per set)."""
    names = sorted({k for _, m in models for k in m.get("heldout", {})})
    if not names:
        return []
    lines = ["## Held-out sets", "",
             "Independent labelled sets (`--heldout`), never used for training or any choice. One "
             "table per metric, in %: a row per model, a column per set. Balanced accuracy comes "
             "first because the sets' positive shares differ.", "",
             "| set | reviews | positive |", "|---|---:|---:|"]
    for s in names:
        sizes = {(h["n"], h.get("positives")) for _, m in models if (h := m.get("heldout", {}).get(s))}
        n, pos = sorted(sizes)[0]  # every model reads the same file; several sizes are all listed
        cell = (f"{pos:,} ({100 * pos / n:.1f}%)" if pos is not None and n else MISSING)
        lines.append(f"| {s} | {' / '.join(f'{k:,}' for k, _ in sorted(sizes))} | {cell} |")
    lines.append("")
    for key, title in HELDOUT_METRICS:
        lines += [f"### {title}, %", "", "| model | " + " | ".join(names) + " |",
                  "|---|" + "---:|" * len(names)]
        for model, m in models:
            held = m.get("heldout", {})
            lines.append(f"| {model} | " + " | ".join(
                fmt_cell(key, held[s].get(key)) if s in held else MISSING for s in names) + " |")
        lines.append("")
    return lines


def _agreement_table(agree: dict) -> list[str]:
    """``pipeline.bench --agreement``: the firmware builds against ``--runtime tflm``, per set."""
    targets = agree.get("targets", [])
    lines = ["### The firmware against `--runtime tflm`, every review", "",
             (f"Measured by `{agree['command']}`. " if agree.get("command") else "")
             + "Each review goes through the firmware's own C tokenizer, step loop and TFLM "
             "(`console_classify`, batch mode of the host twin) and through `--runtime tflm`; a "
             "review counts as different when the float32 P(positive) differs at all.", "",
             "| set | reviews | " + " | ".join(f"{t}: P differs | {t}: label differs"
                                               for t in targets) + " |",
             "|---|---:|" + "---:|---:|" * len(targets)]
    for name, row in agree.get("sets", {}).items():
        lines.append(f"| {name} | {row['reviews']:,} | " + " | ".join(
            f"{row[t]['p_differs']:,} | {row[t]['label_differs']:,}" for t in targets) + " |")
    lines += ["", "All identical." if agree.get("identical") else "**Not identical** (see above).", ""]
    return lines


RUN_STAGES = (  # every stage of pipeline/all.py, in the order it runs them
    "data", "tokenizer", "teacher", "teacher_eval", "peer_tfidf", "peer_fasttext",
    "student_tokenizer", "student", "student_eval", "teacher_targets", "student_kd",
    "student_kd_eval", "student_afd", "student_afd_eval", "student_pruned", "prune_eval", "qat",
    "qat_eval", "int8", "int8_eval", "bench", "firmware_export",
)


def run_stages(run_dir: Path) -> list[str]:
    """:data:`RUN_STAGES` with the run's optional ``teacher_2``, ... (``distill.teachers``) after
    ``teacher_eval``, where ``pipeline/all.py`` runs them."""
    numbers = sorted(int(k) for p in Path(run_dir).glob("teacher_*/stage.json")
                     if (k := p.parent.name.removeprefix("teacher_")).isdigit())
    more = [f"teacher_{k}" for k in numbers]
    i = RUN_STAGES.index("teacher_eval") + 1
    return [*RUN_STAGES[:i], *more, *RUN_STAGES[i:]]


def _run_time(run_dir: Path, load) -> list[str]:
    """Seconds per stage from each ``stage.json`` (pipeline order), the total and the core count."""
    names = run_stages(run_dir)
    records = {name: rec for name in names if (rec := load(f"{name}/stage.json"))}
    others = [p.parent.name for p in sorted(run_dir.glob("*/stage.json"))
              if p.parent.name not in names]
    for name in sorted(others, key=lambda n: (load(f"{n}/stage.json") or {}).get("finished", "")):
        records[name] = load(f"{name}/stage.json")
    records = {k: r for k, r in records.items() if isinstance(r.get("seconds"), int | float)}
    if not records:
        return []
    total = sum(r["seconds"] for r in records.values())
    cores = {r.get("cpu_count") for r in records.values()}
    per_stage = len(cores) > 1  # stages finished on different machines: a column says which
    peaks = [r["peak_rss_mib"] for r in records.values() if r.get("peak_rss_mib")]
    workers = [r["workers_peak_rss_mib"] for r in records.values() if r.get("workers_peak_rss_mib")]

    def mib(r: dict, key: str) -> str:
        return f" {r[key]:,.0f} |" if r.get(key) else " – |"

    lines = ["## Run time", "",
             "| stage | seconds | minutes | share |" + (" peak RSS (MiB) |" if peaks else "")
             + (" workers' peak (MiB) |" if workers else "") + (" cores |" if per_stage else ""),
             "|---|---:|---:|---:|" + ("---:|" if peaks else "") + ("---:|" if workers else "")
             + ("---:|" if per_stage else "")]
    for name, r in records.items():
        sec = r["seconds"]
        lines.append(f"| {name} | {sec:,.1f} | {sec / 60:.1f} | "
                     f"{100 * sec / total if total else 0.0:.1f}% |"
                     + (mib(r, "peak_rss_mib") if peaks else "")
                     + (mib(r, "workers_peak_rss_mib") if workers else "")
                     + (f" {r.get('cpu_count') or 'unknown'} |" if per_stage else ""))
    lines.append(f"| **total** | **{total:,.1f}** | **{total / 60:.1f}** | 100% |" +
                 (f" **{max(peaks):,.0f}** |" if peaks else "")
                 + (f" **{max(workers):,.0f}** |" if workers else "") + (" |" if per_stage else ""))
    if per_stage:
        machine = "cores per stage in the last column (`os.cpu_count()` when the stage finished)"
    elif None in cores:
        machine = "CPU cores unknown (this run's `stage.json` files predate the record)"
    else:
        machine = f"{cores.pop()} CPU cores (`os.cpu_count()` when each stage finished)"
    lines += ["", f"Machine: {machine}. A stage's seconds count every attempt: a stage resumed "
              "after a kill adds the time its earlier attempts spent (`pipeline/stages.py`); a "
              "stage reused from an earlier run keeps the time it took then. Not counted: "
              "start-up, imports and the report itself."]
    if peaks:
        lines += ["", "Peak RSS: the most resident memory the pipeline's process held during the "
                  "stage (its last attempt; Linux `VmHWM`, reset when the stage starts); the total "
                  "row: the largest. `–`: not recorded (a stage run before the record existed)."
                  + (" Workers' peak: the largest worker process of `pipeline/parallel.py` in the "
                     "stage, where it outgrew every earlier stage's (Linux keeps only the largest "
                     "finished child's; `–`: smaller, or none)." if workers else "")
                  + " The resets leave `/usr/bin/time`'s maximum resident set size with the last "
                  "stage's peak only: the run's peak is the total row."]
    if missing := [n for n in RUN_STAGES if n not in records]:
        lines[-1] += f" No `stage.json` in this folder for: {', '.join(missing)}."
    if notes := [f"- `{n}`: {r['note']}" for n, r in records.items() if r.get("note")]:
        lines += ["", "Notes in `stage.json`:", "", *notes]
    return lines + [""]


def write_report(run_dir: Path, command: str) -> Path:
    """Assemble ``report.md`` and ``roc.png`` from the finished stages' outputs in ``run_dir``."""
    run_dir = Path(run_dir)

    def load(rel: str) -> dict | None:
        p = run_dir / rel
        return json.loads(p.read_text()) if p.exists() else None

    data_stats = load("data/stats.json") or {}
    tok_stats = load("tokenizer/stats.json") or {}
    evals = {stage: load(f"{stage}/metrics.json") for stage, _ in REPORT_ROWS}
    teacher, int8 = evals["teacher_eval"], evals["int8_eval"]
    history = load("teacher/history.json")
    peer = load("peer_tfidf/metrics.json")
    ft = load("peer_fasttext/metrics.json")
    cfg = load("config.json") or {}
    models: list[tuple[str, dict, dict]] = []  # (name, eval metrics, extra)
    for stage, name in REPORT_ROWS:
        if m := evals[stage]:
            models.append((name, m, {"size": sum(m["model_files_bytes"].values()),
                                     "params": m["model"].get("params")}))
    if peer:
        kept = peer["stopwords_kept"]
        models.append((tfidf_name(peer), kept,
                       {"size": kept["size_bytes"], "params": kept["features"]}))
    if ft:
        for key, label in (("bigram", "fastText bigram"), ("quantized", "fastText bigram, .ftz")):
            models.append((f"{label} (epoch {ft['epoch']}, lr {ft['lr']:g})", ft[key],
                           {"size": ft[key]["size_bytes"], "params": ft[key]["words"]}))
    lines = [
        "# Results",
        "",
        f"Command: `{command}`  ",
        f"Preset: `{cfg.get('preset', '?')}` · written {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
        "",
        "## Data",
        "",
    ]
    if data_stats:
        splits = data_stats.get("splits", {})
        lines += [
            "| split | reviews | positive |",
            "|---|---:|---:|",
            *[f"| {k} | {v['n']} | {v['positives']} |" for k, v in splits.items()],
            "",
            f"Split rule: md5 of the review string (test = bucket 0, validation = 1). "
            f"Config: `{json.dumps(cfg.get('data', {}), sort_keys=True)}`.",
            "",
        ]
    if tok_stats:
        p = tok_stats["val_tokens_per_review"]
        lines += [
            f"Tokenizer: SentencePiece BPE, vocabulary {tok_stats['vocab_size']}, "
            f"{cfg.get('tokenizer', {}).get('seq_len', '?')} tokens max "
            f"({100 * tok_stats['val_truncated_share']:.1f}% of validation reviews truncated; "
            f"tokens per review p50 {p['p50']:.0f}, p90 {p['p90']:.0f}, p99 {p['p99']:.0f}).",
            "",
        ]
    lines += _compression_summary(run_dir, load, evals, peer)
    lines += _teacher_signal(load("teacher_targets/ensemble.json"),
                             (load("teacher_targets/stage.json") or {}).get("summary"))
    lines += ["## Test split", ""]
    cols = ("n", "accuracy", "balanced_accuracy", "precision", "recall", "f1", "roc_auc")
    lines.append("| model | " + " | ".join(cols) + " | size | params / features | host ms/review |")
    lines.append("|---|" + "---:|" * (len(cols) + 3))
    for name, m, extra in models:
        t = m["test"]
        cells = [fmt_cell(c, t.get(c)) for c in cols]
        lines.append(f"| {name} | " + " | ".join(cells) +
                     f" | {_human_bytes(extra['size'])} | {extra['params'] or MISSING} |"
                     f" {t['host_ms_per_review']:.3f} |")
    lines += ["", "Size: bytes of the saved model file(s) (TF-IDF: its pickle; fastText: its "
              "`.bin` / `.ftz`; params / features: TF-IDF terms, fastText dictionary rows). "
              "Host ms/review: batched prediction on this machine's CPU, test split.", ""]
    if any("val" in m for _, m, _ in models):
        lines += ["Validation split (used for early stopping and the peer's C):", "",
                  metrics_table([(n, m["val"]) for n, m, _ in models if "val" in m]), ""]
    if teacher:
        tn, fp = teacher["test"]["confusion"][0]
        fn, tp = teacher["test"]["confusion"][1]
        lines += [f"Teacher confusion on test (rows true neg/pos): [[{tn}, {fp}], [{fn}, {tp}]] "
                  "— `teacher_eval/confusion.png`; ROC curves: `roc.png`.", ""]
    if int8:
        d = int8["model"]["device"]
        quant = load("int8/quant.json") or {}
        bits = quant.get("step", {}).get("custom_op", {}).get("embedding_bits")
        fw = (load("firmware_export/stage.json") or {}).get("summary", {})
        tables = fw.get("tokenizer_tables")
        flash = (f"{d['flash_bytes']:,} B" + (f" + {fw['id_map']:,} B id map" if fw.get("id_map")
                                              else ""))
        lines += ["## On the device (int8 student)", "",
                  "| flash: model files | flash: tokenizer tables | flash: total | tensor arenas "
                  "(min, TFLM, step + head) | MACs / 128-token review | host TFLM ms / 128-token "
                  "review | operators |", "|---:|---:|---:|---:|---:|---:|---|",
                  f"| {flash} | {_bytes_or_missing(tables)} | "
                  f"{_bytes_or_missing(fw.get('total'))} | "
                  f"{d['arena_bytes']:,} B | {d['macs_per_128_tokens']:,} | "
                  f"{d['host_tflm_ms_per_128_tokens']:.2f} | "
                  f"{', '.join(sorted(set(d['ops']['step']) | set(d['ops']['head'])))} |", "",
                  f"Label agreement with the float student it came from: "
                  f"{100 * int8['test'].get('agreement', float('nan')):.2f}% on the test split "
                  f"(largest probability difference "
                  f"{int8['test'].get('max_abs_prob_diff', float('nan')):.3f}).", "",
                  "The int8 rows run the release token by token (`pipeline/device/loop.py`): a "
                  "step model that is one fused custom operator (`TINYSENT_BIGRU`: both GRU "
                  f"directions, {bits or 'int8'}{'-bit' if bits else ''} embedding rows; run here "
                  "by its NumPy specification, "
                  "`pipeline/device/gru.py`, on the device by `firmware/src/gru_step.c`) and the "
                  "head's `.tflite` bytes in the TensorFlow Lite Micro interpreter; a release of "
                  "builtin operators runs both in TFLM. Host ms: best "
                  "of 20 runs of one 128-token review. Arenas here: the minimum each "
                  "interpreter needs, found by bisection on this 64-bit host, added up (both live "
                  "on the device); the firmware sizes its arena from the 32-bit minimum (next "
                  "section). Flash totals are the generated firmware arrays "
                  "(`firmware_export` stage, `pipeline/device/firmware.py`).", ""]
    if bench := load("bench/bench.json"):
        lines += bench_markdown(bench, bench.get("command")
                                or f"python -m pipeline.bench {run_dir / 'int8'} --kernels esp_nn")
        if before := load("bench/before.json"):
            lines += [f"### Before / after (before: {before.get('label', 'bench/before.json')})", "",
                      *compare_markdown(before, bench, "esp_nn")]
    if agree := load("bench/agreement.json"):
        lines += _agreement_table(agree)
    lines += _heldout_tables([(n, m) for n, m, _ in models])
    if peer and "stopwords_removed" in peer:  # the hashed peer (data.stream) does not measure it
        a, b = peer["stopwords_kept"]["test"], peer["stopwords_removed"]["test"]
        lines += ["## Stopword removal (measured once, with the TF-IDF peer)", "",
                  "Same split, same normalization, same C; negations are never removed.", "",
                  metrics_table([("stopwords kept (default)", a), ("stopwords removed", b)],
                                name_header="TF-IDF + LR"), ""]
    if history:
        lines += ["## Teacher training", "", "| epoch | loss | acc | val loss | val acc | s |",
                  "|---:|---:|---:|---:|---:|---:|"]
        for h in history["history"]:
            mark = " (best)" if h["epoch"] == history["best_epoch"] else ""
            lines.append(f"| {h['epoch']}{mark} | {h['loss']:.4f} | {100 * h['accuracy']:.2f} | "
                         f"{h['val_loss']:.4f} | {100 * h['val_accuracy']:.2f} | "
                         f"{h['seconds']:.0f} |")
        total = sum(h["seconds"] for h in history["history"])
        lines += ["", f"Training time: {total / 60:.1f} min on this machine.", ""]
    lines += _run_time(run_dir, load)
    if models:
        plot_roc_points({n.split(" (")[0]: m["test"] for n, m, _ in models}, run_dir / "roc.png",
                         "ROC — test split")
    report = run_dir / "report.md"
    tmp = report.with_suffix(".md.tmp")
    tmp.write_text("\n".join(lines) + "\n")
    tmp.replace(report)
    return report


# bench/: the bench stage's bench.json, and what `pipeline.bench --out RUN/bench/...` adds beside it
# (bench.md, before.json, agreement.json), which the report's device sections are written from
PUBLISHED = ("report.md", "config.json", "*.png", "*/metrics.json", "*/stats.json",
             "*/history.json", "*/stage.json", "*/*.png", "teacher_targets/ensemble.json",
             "bench/*.json", "bench/*.md")


def publish_report(run_dir: Path, dest: Path) -> list[Path]:
    """Copy the report, metrics, stats and plots (never data or model files) to ``dest``."""
    import shutil

    run_dir, dest = Path(run_dir), Path(dest)
    copied = []
    for pattern in PUBLISHED:
        for src in sorted(run_dir.glob(pattern)):
            if src.parent.name.startswith(".") or (src.parent.name == "data" and
                                                   src.name not in ("stats.json", "stage.json")):
                continue
            target = dest / src.relative_to(run_dir)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, target)
            copied.append(target)
    return copied
