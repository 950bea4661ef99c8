"""The benchmark report: `report.json` (schema below), `report.md`, the table printed on stdout (then
one JSON line for scripts), the deployment recommendation and the comparison with a previous report.
The accuracy section (intervals, paired differences, fidelity, rankings) is `edge_bench.accuracy_report`.

report.json, schema_version 2 (times in ms unless named *_s, speeds in tokens/s, sizes in bytes,
accuracies and drops as fractions, intervals as [low, high] at 95%):

    schema_version  int     2; bumped when a field changes meaning or goes away (or a required one
                            is added). 2: accuracy intervals, paired drops, fidelity, rankings,
                            recommendation status; --compare still reads version 1 reports
    tool            str     "edge_bench"
    created_at      str     UTC, ISO 8601
    config          dict    the BenchSettings fields (threads, prompt_lengths, n_decode, min_repeats, ...;
                            n_questions is an int or "auto")
    task            dict    {spec, name, shots, n_questions (the most any variant answered),
                            available_questions (the task's test split), max_new_tokens, threads,
                            auto (null, or the --n_questions auto plan: pilot, budget_s, pilot_seconds,
                            seconds_per_question, pilot_verdicts, needed, target, affordable,
                            available, chosen, limited_by, extended, estimated_seconds)}
    statistics      dict    which interval and test each figure uses (STATISTICS below)
    host            dict    CPU model, cores, ISA flags, runtime versions (edge_bench.host)
    bandwidth       dict|null  memory read bandwidth measured in the same run (edge_bench.bandwidth)
    variants        list    one per variant:
        name, format, runtime, path, quant, reference (name of its fp32 reference or null), source,
        size_bytes, bits_per_weight, bytes_per_token (weight bytes read per decoded token, estimated),
        accuracy, accuracy_ci (Wilson), correct, n_questions, missing_tag, accuracy_seconds,
        accuracy_drop (reference - this, on the same questions; 0 for a reference),
        paired (null, or against its reference on the same questions: n, both_correct,
              reference_only, variant_only, neither, drop, drop_ci (Tango), mcnemar_p,
              discordant_share, answers_differ, answers_differ_share, answers_differ_ci, verdict at
              the run's max_accuracy_drop ("within" / "beyond" / "undecided"), questions_needed),
        top1_agreement, top1_steps (= fidelity.bench's top-1 and its positions),
        fidelity: {bench: null or {top1_agreement, top1_positions, mean_kl, max_kl, kl_positions,
              what}, manifest: null or {top1_agreement, mean_kl, max_kl, positions, flagged, reason,
              greedy_identical, what} from the export's manifest.json},
        best: {threads, decode_tokens_per_s, p50_ms, p90_ms, p99_ms, efficiency} at the thread count
              with the highest decode tokens/s (averaged over prompt lengths), or null,
        error (str or null: the variant could not be benchmarked)
    results         list    one per (variant, threads, prompt length):
        variant, threads, prompt_tokens, n_decode, runs, capped, load_s, ttft_ms {n, mean, min, p50,
        p90, p99, max}, prefill_tokens_per_s, decode_tokens_per_s, per_token_ms {same keys as ttft_ms},
        deterministic, peak_rss_mb, mmap, efficiency (decode tokens/s x bytes_per_token / bandwidth),
        bandwidth_gb_per_s (the bandwidth it was divided by) and bandwidth_before_after (the best of
        each measurement around the block), runtime_settings (llama.cpp: use_mmap, flash_attn,
        huge_pages_added_bytes),
        busy (bool), busy_detail, internal (the runtime's own timing, llama.cpp) and
        harness_vs_internal (harness decode tokens/s / the runtime's own figure), parallel (llama.cpp
        with --parallel, else null: per N, {sequences, prompt_tokens, decode_steps, seconds,
        tokens_per_s over the call, decode_tokens_per_s once all have their first token})
    rankings        dict    {fidelity: names by bench mean KL, closest first; accuracy: names by
                            accuracy, best first (point estimates)}
    recommendation  dict    {variant (or null), status ("recommended" / "undecided" / "none"),
                            safe_choice, undecided (names, fastest first), questions_needed (to
                            decide the fastest undecided), questions_needed_all, max_accuracy_drop,
                            line}
    warnings        list    str
    comparison      dict|null  {previous: path of the report compared with, lines: [str]}
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from edge_bench.accuracy_report import accuracy_lines, accuracy_markdown
from edge_bench.recommend import fmt_or_dash, round_or_none
from edge_bench.stats import LEVEL, POWER

SCHEMA_VERSION = 2
READABLE_VERSIONS = (1, 2)
"""Versions `load_report` reads (for --compare); `write_report` writes SCHEMA_VERSION only."""
REPORT_JSON, REPORT_MD = "report.json", "report.md"

STATISTICS = {
    "level": LEVEL,
    "accuracy_interval": "Wilson score interval",
    "drop": "reference accuracy - variant accuracy on the same questions (paired)",
    "drop_interval": "Tango score interval for a paired difference of proportions",
    "drop_test": "exact McNemar test (binomial on the discordant questions)",
    "recommendation": "fastest variant whose drop interval's upper end is <= max_accuracy_drop",
    "questions_needed": f"80% chance that the upper end is within max_accuracy_drop (power {POWER}), "
    "for a variant as accurate as fp32 at the observed discordant share",
}

REQUIRED: dict[str, type | tuple[type, ...]] = {
    "schema_version": int,
    "tool": str,
    "created_at": str,
    "config": dict,
    "task": dict,
    "host": dict,
    "bandwidth": (dict, type(None)),
    "variants": list,
    "results": list,
    "recommendation": dict,
    "warnings": list,
}
NUM = (int, float)
OPT_NUM = (int, float, type(None))
REQUIRED_VARIANT = {
    "name": str,
    "format": str,
    "runtime": str,
    "quant": str,
    "size_bytes": int,
    "bits_per_weight": OPT_NUM,
    "reference": (str, type(None)),
    "accuracy": OPT_NUM,
    "top1_agreement": OPT_NUM,
    "best": (dict, type(None)),
}
REQUIRED_V2 = {"statistics": dict, "rankings": dict}
REQUIRED_VARIANT_V2 = {
    "accuracy_ci": (list, type(None)),
    "n_questions": int,
    "paired": (dict, type(None)),
    "fidelity": dict,
}
REQUIRED_PAIRED = {
    "n": int,
    "reference_only": int,
    "variant_only": int,
    "drop": NUM,
    "drop_ci": list,
    "mcnemar_p": NUM,
    "answers_differ_share": NUM,
    "verdict": str,
    "questions_needed": (int, type(None)),
}
REQUIRED_RESULT = {
    "variant": str,
    "threads": int,
    "prompt_tokens": int,
    "load_s": NUM,
    "ttft_ms": dict,
    "prefill_tokens_per_s": OPT_NUM,
    "decode_tokens_per_s": OPT_NUM,
    "per_token_ms": (dict, type(None)),
    "peak_rss_mb": OPT_NUM,
    "mmap": (bool, type(None)),
    "efficiency": OPT_NUM,
    "busy": bool,
}


def check_report(report: dict, versions: Sequence[int] = (SCHEMA_VERSION,)) -> None:
    """Raise ValueError naming every missing or mistyped key (top level, variants, paired figures,
    results) of a report whose schema_version is one of `versions`."""
    problems = []

    def check(obj: Any, spec: dict, where: str) -> None:
        if not isinstance(obj, dict):
            problems.append(f"{where}: expected an object, got {type(obj).__name__}")
            return
        for key, tp in spec.items():
            if key not in obj:
                problems.append(f"{where}.{key}: missing")
            elif not isinstance(obj[key], tp) or (tp in (int, NUM) and isinstance(obj[key], bool)):
                problems.append(f"{where}.{key}: {type(obj[key]).__name__} is not {tp}")

    check(report, REQUIRED, "report")
    version = report.get("schema_version")
    if not problems and version not in versions:
        readable = ", ".join(map(str, versions))
        problems.append(f"report.schema_version: {version}, this edge_bench reads {readable}")
    v2 = version == 2
    if v2:
        check(report, REQUIRED_V2, "report")
    for i, v in enumerate(report.get("variants") or []):
        check(v, {**REQUIRED_VARIANT, **(REQUIRED_VARIANT_V2 if v2 else {})}, f"variants[{i}]")
        if v2 and isinstance(v, dict) and isinstance(v.get("paired"), dict):
            check(v["paired"], REQUIRED_PAIRED, f"variants[{i}].paired")
    for i, r in enumerate(report.get("results") or []):
        check(r, REQUIRED_RESULT, f"results[{i}]")
    if problems:
        raise ValueError("invalid benchmark report:\n  " + "\n  ".join(problems))


def load_report(path: str | Path) -> dict:
    """A report.json (or the directory holding one), checked against the schema of its version
    (READABLE_VERSIONS)."""
    path = Path(path)
    path = path / REPORT_JSON if path.is_dir() else path
    report = json.loads(path.read_text())
    check_report(report, READABLE_VERSIONS)
    return report


# ---- summaries ------------------------------------------------------------------------------------


# ---- rendering ---------------------------------------------------------------------------------------

COLUMNS = (
    "variant",
    "thr",
    "prompt",
    "load s",
    "TTFT ms",
    "prefill t/s",
    "decode t/s",
    "p50 ms",
    "p90 ms",
    "p99 ms",
    "RSS MB",
    "MB",
    "bits/w",
    "eff %",
    "acc",
    "top-1",
    "",
)


def table_rows(report: dict) -> list[list[str]]:
    """One row of strings per (variant, threads, prompt length); a variant that failed gets one row."""
    variants = {v["name"]: v for v in report["variants"]}
    rows = []
    for r in report["results"]:
        v = variants[r["variant"]]
        lat = r.get("per_token_ms") or {}
        eff = r.get("efficiency")
        rss = (
            "-"
            if r.get("peak_rss_mb") is None
            else f"{r['peak_rss_mb']:.0f}" + (" m" if r.get("mmap") else "")
        )
        rows.append(
            [
                v["name"],
                str(r["threads"]),
                str(r["prompt_tokens"]),
                f"{r['load_s']:.2f}",
                fmt_or_dash(r["ttft_ms"].get("p50"), ".1f"),
                fmt_or_dash(r["prefill_tokens_per_s"], ".0f"),
                fmt_or_dash(r["decode_tokens_per_s"], ".1f"),
                fmt_or_dash(lat.get("p50"), ".2f"),
                fmt_or_dash(lat.get("p90"), ".2f"),
                fmt_or_dash(lat.get("p99"), ".2f"),
                rss,
                f"{v['size_bytes'] / 1e6:.1f}",
                fmt_or_dash(v.get("bits_per_weight"), ".2f"),
                "-" if eff is None else f"{eff * 100:.0f}",
                fmt_or_dash(v.get("accuracy"), ".3f"),
                fmt_or_dash(v.get("top1_agreement"), ".3f"),
                "BUSY" if r.get("busy") else "",
            ]
        )
    benched = {r["variant"] for r in report["results"]}
    for v in report["variants"]:
        if v["name"] not in benched:
            rows.append(
                [
                    v["name"],
                    *["-"] * 10,
                    f"{v['size_bytes'] / 1e6:.1f}",
                    fmt_or_dash(v.get("bits_per_weight"), ".2f"),
                    "-",
                    fmt_or_dash(v.get("accuracy"), ".3f"),
                    "-",
                    f"ERROR: {v.get('error') or 'not run'}",
                ]
            )
    return rows


def format_table(report: dict) -> str:
    """The human table (fixed-width text): one line per configuration, a legend below."""
    rows = table_rows(report)
    widths = [max([len(c)] + [len(row[i]) for row in rows]) for i, c in enumerate(COLUMNS)]
    line = lambda cells: "  ".join(  # noqa: E731
        c.ljust(w) if i == 0 or i == len(cells) - 1 else c.rjust(w)
        for i, (c, w) in enumerate(zip(cells, widths))
    ).rstrip()
    out = [line(COLUMNS), line(["-" * w for w in widths])] + [line(r) for r in rows]
    out.append(
        "RSS 'm': weights mmapped (page cache not all counted); eff: decode bytes/s / measured read "
        "bandwidth; acc: task accuracy (intervals below); top-1: agreement with fp32's next-token choice "
        "along its greedy answers to the task prompts; BUSY: load average above the free cores during the "
        "measurement"
    )
    return "\n".join(out)


def _significant(x: float | None, digits: int = 3) -> float | None:
    """`x` to `digits` significant digits (KLs span 1e-10 to 1: fixed decimals would zero the small)."""
    return None if x is None else float(f"{x:.{digits}g}")


def _rounded(xs: Sequence[float] | None, nd: int = 4) -> list[float] | None:
    return None if xs is None else [round(x, nd) for x in xs]


def summary_json(report: dict, report_path: str | None = None) -> str:
    """The one JSON line printed last on stdout: each variant's best speed, accuracy and size."""
    line = {
        "schema_version": report["schema_version"],
        "report": report_path,
        "recommended": report["recommendation"].get("variant"),
        "recommendation_status": report["recommendation"].get("status"),
        "variants": {
            v["name"]: {
                "decode_tokens_per_s": round_or_none((v.get("best") or {}).get("decode_tokens_per_s"), 2),
                "p50_ms": round_or_none((v.get("best") or {}).get("p50_ms"), 3),
                "threads": (v.get("best") or {}).get("threads"),
                "accuracy": round_or_none(v.get("accuracy"), 4),
                "accuracy_ci": _rounded(v.get("accuracy_ci")),
                "n_questions": v.get("n_questions"),
                "drop": round_or_none((v.get("paired") or {}).get("drop"), 4),
                "drop_ci": _rounded((v.get("paired") or {}).get("drop_ci")),
                "verdict": (v.get("paired") or {}).get("verdict"),
                "top1_agreement": round_or_none(v.get("top1_agreement"), 4),
                "mean_kl": _significant(((v.get("fidelity") or {}).get("bench") or {}).get("mean_kl")),
                "size_bytes": v["size_bytes"],
            }
            for v in report["variants"]
        },
        "busy": any(r.get("busy") for r in report["results"]),
    }
    return json.dumps(line, separators=(",", ":"))


def parallel_lines(report: dict) -> list[str]:
    """One line per configuration timed with --parallel: aggregate decode tokens/s of N sequences
    decoded together, and its ratio to the same configuration's one-sequence decode."""
    out = []
    for r in report["results"]:
        for p in r.get("parallel") or []:
            one, many = r.get("decode_tokens_per_s"), p.get("decode_tokens_per_s")
            ratio = f" ({many / one:.2f}x one sequence)" if one and many else ""
            out.append(
                f"{r['variant']} {r['threads']} thread(s), prompt {r['prompt_tokens']}: {p['sequences']} "
                f"sequences together decode {fmt_or_dash(many, '.1f')} tok/s{ratio}, "
                f"{fmt_or_dash(p.get('tokens_per_s'), '.1f')} tok/s with their prefills"
            )
    return out


def print_report(report: dict, report_path: str | None = None, file: TextIO | None = None) -> None:
    """Warnings, the table, the recommendation, the comparison, then ONE JSON line (last line)."""
    file = file or sys.stdout
    comparison = (report.get("comparison") or {}).get("lines", [])
    for w in report["warnings"]:
        print(f"warning: {w}", file=file)
    print(format_table(report), file=file)
    acc = accuracy_lines(report)
    if acc:
        print("", *acc, sep="\n", file=file)
    parallel = parallel_lines(report)
    if parallel:
        print("\nparallel decoding (llama.cpp, --parallel):", *parallel, sep="\n", file=file)
    print(report["recommendation"]["line"], file=file)
    if comparison:
        print("\ncompared with the previous report:", file=file)
        print("\n".join(comparison), file=file)
    print(summary_json(report, report_path), file=file)


def render_markdown(report: dict, plots: Sequence[str] = ()) -> str:
    """report.md: host, settings, the table, accuracy per variant, recommendation, plots, comparison."""
    comparison = (report.get("comparison") or {}).get("lines", [])
    h, t, bw = report["host"], report["task"], report.get("bandwidth") or {}
    md = [f"# edge_bench report ({report['created_at']})", "", "## Host", ""]
    md += [f"- {k}: {json.dumps(v) if isinstance(v, (dict, list)) else v}" for k, v in h.items()]
    if bw:
        per = ", ".join(
            f"{r['best_gb_per_s']:.1f} GB/s with {t} thread(s)" for t, r in bw["by_threads"].items()
        )
        md.append(f"- memory read bandwidth, best of every sample: {per}")
    md += [
        "",
        "## Settings",
        "",
        f"- task: {t.get('name')} ({t.get('shots')}-shot, {t.get('n_questions')} "
        f"questions, max {t.get('max_new_tokens')} new tokens, {t.get('threads')} thread(s))",
    ]
    md += [f"- {k}: {v}" for k, v in report["config"].items() if k not in ("dirs",)]
    md += ["", "## Results", "", "| " + " | ".join(c or "note" for c in COLUMNS) + " |"]
    md.append("|" + "---|" * len(COLUMNS))
    md += ["| " + " | ".join(c.replace("|", "/") for c in row) + " |" for row in table_rows(report)]
    md += ["", *accuracy_markdown(report)]
    if parallel_lines(report):
        md += ["", "## Parallel decoding (llama.cpp)", ""] + [f"- {line}" for line in parallel_lines(report)]
    md += ["", "## Recommendation", "", report["recommendation"]["line"], ""]
    md += [f"![{Path(p).stem}]({Path(p).name})" for p in plots]
    if report["warnings"]:
        md += ["", "## Warnings", ""] + [f"- {w}" for w in report["warnings"]]
    if comparison:
        md += ["", "## Compared with the previous report", "", "```", *comparison, "```"]
    return "\n".join(md) + "\n"


def write_report(report: dict, out_dir: Path, plots: Sequence[str] = ()) -> tuple[Path, Path]:
    """OUT/report.json and OUT/report.md (each written to a temporary name, then renamed)."""
    check_report(report)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = out_dir / REPORT_JSON, out_dir / REPORT_MD
    for path, text in zip(paths, (json.dumps(report, indent=1) + "\n", render_markdown(report, plots))):
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(text)
        tmp.replace(path)
    return paths
