"""The benchmark report's files and text: loading `report.json` (checked against its schema,
`edge_bench.schema`: one dataclass per object, with units), writing it with `report.md`, the table
printed on stdout and the one JSON line for scripts. The recommendation and the comparison with a
previous report are `edge_bench.recommend`; the accuracy section (intervals, paired differences,
fidelity, rankings) is `edge_bench.accuracy_report`. The functions here read a `Report` (or its JSON
dict, checked on the way in).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from edge_bench.accuracy_report import accuracy_lines, accuracy_markdown
from edge_bench.recommend import fmt_or_dash, round_or_none
from edge_bench.schema import READABLE_VERSIONS, SCHEMA_VERSION, Report, ReportError, VariantResult, as_report
from edge_bench.stats import LEVEL, POWER

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


def check_report(report: dict, versions: Sequence[int] = (SCHEMA_VERSION,)) -> Report:
    """The Report of JSON `report` whose schema_version is one of `versions`; a ReportError (a
    ValueError) naming every missing or ill-typed key by its path otherwise."""
    return Report.from_dict(report, "report", tuple(versions))


def load_report(path: str | Path) -> Report:
    """A report.json (or the directory holding one), checked against the schema of its version
    (READABLE_VERSIONS); errors name the file."""
    path = Path(path)
    path = path / REPORT_JSON if path.is_dir() else path
    try:
        raw = json.loads(path.read_text())
    except ValueError as e:
        raise ReportError(f"{path}: not JSON: {e}") from None
    return Report.from_dict(raw, str(path), READABLE_VERSIONS)


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


def table_rows(report: Report | dict) -> list[list[str]]:
    """One row of strings per (variant, threads, prompt length); a variant that failed gets one row."""
    report = as_report(report)
    variants = {v.name: v for v in report.variants}
    rows = []
    for r in report.results:
        v, lat = variants[r.variant], r.per_token_ms
        rss = "-" if r.peak_rss_mb is None else f"{r.peak_rss_mb:.0f}" + (" m" if r.mmap else "")
        rows.append(
            [
                v.name,
                str(r.threads),
                str(r.prompt_tokens),
                f"{r.load_s:.2f}",
                fmt_or_dash(r.ttft_ms.p50, ".1f"),
                fmt_or_dash(r.prefill_tokens_per_s, ".0f"),
                fmt_or_dash(r.decode_tokens_per_s, ".1f"),
                *(fmt_or_dash(lat and getattr(lat, p), ".2f") for p in ("p50", "p90", "p99")),
                rss,
                f"{v.size_bytes / 1e6:.1f}",
                fmt_or_dash(v.bits_per_weight, ".2f"),
                "-" if r.efficiency is None else f"{r.efficiency * 100:.0f}",
                fmt_or_dash(v.accuracy, ".3f"),
                fmt_or_dash(v.top1_agreement, ".3f"),
                "BUSY" if r.busy else "",
            ]
        )
    benched = {r.variant for r in report.results}
    for v in report.variants:
        if v.name not in benched:
            rows.append(
                [
                    v.name,
                    *["-"] * 10,
                    f"{v.size_bytes / 1e6:.1f}",
                    fmt_or_dash(v.bits_per_weight, ".2f"),
                    "-",
                    fmt_or_dash(v.accuracy, ".3f"),
                    "-",
                    f"ERROR: {v.error or 'not run'}",
                ]
            )
    return rows


def format_table(report: Report | dict) -> str:
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


def _variant_summary(v: VariantResult) -> dict:
    best, paired, bench = v.best, v.paired, v.fidelity.bench
    return {
        "decode_tokens_per_s": round_or_none(best and best.decode_tokens_per_s, 2),
        "p50_ms": round_or_none(best and best.p50_ms, 3),
        "threads": best and best.threads,
        "accuracy": round_or_none(v.accuracy, 4),
        "accuracy_ci": _rounded(v.accuracy_ci),
        "n_questions": v.n_questions,
        "drop": round_or_none(paired and paired.drop, 4),
        "drop_ci": _rounded(paired and paired.drop_ci),
        "verdict": paired and paired.verdict,
        "top1_agreement": round_or_none(v.top1_agreement, 4),
        "mean_kl": _significant(bench and bench.mean_kl),
        "size_bytes": v.size_bytes,
    }


def summary_json(report: Report | dict, report_path: str | None = None) -> str:
    """The one JSON line printed last on stdout: each variant's best speed, accuracy and size."""
    report = as_report(report)
    line = {
        "schema_version": report.schema_version,
        "report": report_path,
        "recommended": report.recommendation.variant,
        "recommendation_status": report.recommendation.status,
        "variants": {v.name: _variant_summary(v) for v in report.variants},
        "busy": any(r.busy for r in report.results),
    }
    return json.dumps(line, separators=(",", ":"))


def parallel_lines(report: Report) -> list[str]:
    """One line per configuration timed with --parallel: aggregate decode tokens/s of N sequences
    decoded together, and its ratio to the same configuration's one-sequence decode."""
    out = []
    for r in report.results:
        for p in r.parallel or []:
            one, many = r.decode_tokens_per_s, p.decode_tokens_per_s
            ratio = f" ({many / one:.2f}x one sequence)" if one and many else ""
            out.append(
                f"{r.variant} {r.threads} thread(s), prompt {r.prompt_tokens}: {p.sequences} "
                f"sequences together decode {fmt_or_dash(many, '.1f')} tok/s{ratio}, "
                f"{fmt_or_dash(p.tokens_per_s, '.1f')} tok/s with their prefills"
            )
    return out


def print_report(report: Report | dict, report_path: str | None = None, file: TextIO | None = None) -> None:
    """Warnings, the table, the recommendation, the comparison, then ONE JSON line (last line)."""
    report, file = as_report(report), file or sys.stdout
    for w in report.warnings:
        print(f"warning: {w}", file=file)
    print(format_table(report), file=file)
    acc = accuracy_lines(report)
    if acc:
        print("", *acc, sep="\n", file=file)
    parallel = parallel_lines(report)
    if parallel:
        print("\nparallel decoding (llama.cpp, --parallel):", *parallel, sep="\n", file=file)
    print(report.recommendation.line, file=file)
    if report.comparison and report.comparison.lines:
        print("\ncompared with the previous report:", file=file)
        print("\n".join(report.comparison.lines), file=file)
    print(summary_json(report, report_path), file=file)


def render_markdown(report: Report | dict, plots: Sequence[str] = ()) -> str:
    """report.md: host, settings, the table, accuracy per variant, recommendation, plots, comparison."""
    report = as_report(report)
    t, bw = report.task, report.bandwidth
    md = [f"# edge_bench report ({report.created_at})", "", "## Host", ""]
    md += [
        f"- {k}: {json.dumps(v) if isinstance(v, (dict, list)) else v}"
        for k, v in report.host.to_dict().items()
    ]
    if bw:
        per = ", ".join(
            f"{r['best_gb_per_s']:.1f} GB/s with {n} thread(s)" for n, r in bw["by_threads"].items()
        )
        md.append(f"- memory read bandwidth, best of every sample: {per}")
    md += [
        "",
        "## Settings",
        "",
        f"- task: {t.name} ({t.shots}-shot, {t.n_questions} questions, max {t.max_new_tokens} new "
        f"tokens, {t.threads} thread(s))",
    ]
    md += [f"- {k}: {v}" for k, v in report.config.items() if k not in ("dirs",)]
    md += ["", "## Results", "", "| " + " | ".join(c or "note" for c in COLUMNS) + " |"]
    md.append("|" + "---|" * len(COLUMNS))
    md += ["| " + " | ".join(c.replace("|", "/") for c in row) + " |" for row in table_rows(report)]
    md += ["", *accuracy_markdown(report)]
    if parallel_lines(report):
        md += ["", "## Parallel decoding (llama.cpp)", ""] + [f"- {line}" for line in parallel_lines(report)]
    md += ["", "## Recommendation", "", report.recommendation.line, ""]
    md += [f"![{Path(p).stem}]({Path(p).name})" for p in plots]
    if report.warnings:
        md += ["", "## Warnings", ""] + [f"- {w}" for w in report.warnings]
    if report.comparison and report.comparison.lines:
        md += ["", "## Compared with the previous report", "", "```", *report.comparison.lines, "```"]
    return "\n".join(md) + "\n"


def write_report(report: Report | dict, out_dir: Path, plots: Sequence[str] = ()) -> tuple[Path, Path]:
    """OUT/report.json and OUT/report.md (each written to a temporary name, then renamed)."""
    report = as_report(report)
    if report.schema_version != SCHEMA_VERSION:
        raise ReportError(
            f"report: schema_version: {report.schema_version}, written as {SCHEMA_VERSION} only"
        )
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = out_dir / REPORT_JSON, out_dir / REPORT_MD
    texts = json.dumps(report.to_dict(), indent=1) + "\n", render_markdown(report, plots)
    for path, text in zip(paths, texts):
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(text)
        tmp.replace(path)
    return paths
