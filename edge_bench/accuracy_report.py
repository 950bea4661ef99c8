"""The accuracy section of the report, as text (stdout) and Markdown (report.md): per variant its
accuracy with the Wilson 95% interval, its paired drop against its fp32 reference (Tango 95%
interval, exact McNemar p, the discordant counts), the share of questions answered differently,
the verdict at the tolerance and the questions that tolerance needs; then fidelity (the bench's own
top-1 / KL on the task prompts, and the export verification's from manifest.json) and the two
rankings, kept apart."""

from __future__ import annotations

from edge_bench.recommend import fmt_or_dash
from edge_bench.schema import Report

ACCURACY_COLUMNS = (
    "variant",
    "n",
    "accuracy [95% CI]",
    "drop pts [95% CI]",
    "McNemar p",
    "ref/var only",
    "answers differ",
    "verdict",
    "needs n",
)
FIDELITY_COLUMNS = (
    "variant",
    "top-1 (task)",
    "mean KL (task)",
    "positions",
    "top-1 (export)",
    "mean KL (export)",
    "export flag",
)


def _pts(x: float) -> str:
    return f"{x * 100:+.1f}"


def _ci(ci, fmt=lambda x: f"{x:.3f}") -> str:
    return "" if ci is None else f" [{fmt(ci[0])}, {fmt(ci[1])}]"


def _kl(x) -> str:
    return "-" if x is None else (f"{x:.2e}" if x < 1e-3 else f"{x:.4f}")


def accuracy_rows(report: Report) -> list[list[str]]:
    """One row of strings per variant with an accuracy (ACCURACY_COLUMNS)."""
    rows = []
    for v in report.variants:
        if v.accuracy is None:
            continue
        p = v.paired
        acc = f"{v.accuracy:.3f}{_ci(v.accuracy_ci)}"
        if p is None:
            ref = "(reference)" if v.format == "pytorch" and not v.reference else "(no reference)"
            rows.append([v.name, str(v.n_questions), acc, ref, "", "", "", "", ""])
            continue
        needed = p.questions_needed if p.verdict == "undecided" else None
        rows.append(
            [
                v.name,
                str(p.n),
                acc,
                f"{_pts(p.drop)}{_ci(p.drop_ci, _pts)}",
                f"{p.mcnemar_p:.3f}",
                f"{p.reference_only}/{p.variant_only}",
                f"{p.answers_differ_share:.2f}{_ci(p.answers_differ_ci, lambda x: f'{x:.2f}')}",
                p.verdict,
                "-" if needed is None else str(needed),
            ]
        )
    return rows


def fidelity_rows(report: Report) -> list[list[str]]:
    """One row per variant compared with a reference, or with an export verification."""
    rows = []
    for v in report.variants:
        bench, export = v.fidelity.bench, v.fidelity.manifest
        if not bench and not export:
            continue
        rows.append(
            [
                v.name,
                fmt_or_dash(bench and bench.top1_agreement, ".3f"),
                _kl(bench and bench.mean_kl),
                f"{bench.top1_positions}/{bench.kl_positions}" if bench else "-",
                fmt_or_dash(export and export.top1_agreement, ".3f"),
                _kl(export and export.mean_kl),
                "" if not export else ("flagged" if export.flagged else "passed"),
            ]
        )
    return rows


def _fixed_width(columns, rows) -> list[str]:
    widths = [max([len(c)] + [len(r[i]) for r in rows]) for i, c in enumerate(columns)]

    def line(cells):
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))

    return [line(cells).rstrip() for cells in [list(columns), ["-" * w for w in widths], *rows]]


def ranking_lines(report: Report) -> list[str]:
    """The two rankings, each on one line (empty when there is nothing to rank)."""
    by_name = {v.name: v for v in report.variants}
    ranks, out = report.rankings, []
    if ranks.fidelity:
        items = [f"{n} {_kl(by_name[n].fidelity.bench.mean_kl)}" for n in ranks.fidelity]
        out.append("fidelity to fp32, closest first (mean KL on the task prompts): " + " < ".join(items))
    if ranks.accuracy:
        items = [f"{n} {by_name[n].accuracy:.3f}" for n in ranks.accuracy]
        out.append(
            "task accuracy, best first (point estimates; where the intervals overlap this is no ranking): "
            + ", ".join(items)
        )
    return out


def _legend(report: Report) -> str:
    tol = report.recommendation.max_accuracy_drop
    tol_text = "" if tol is None else f" of {tol * 100:.1f} points"
    return (
        "accuracy CI: Wilson 95%. drop = fp32 - variant on the same questions, points, Tango 95% "
        f"interval; McNemar p: exact test of no difference; ref/var only: questions only one got right; "
        f"verdict at the tolerance{tol_text}: within / beyond / undecided; needs n: questions for an 80% "
        "chance of showing it within, if as accurate as fp32 at this disagreement (undecided ones only)."
    )


def _auto_line(report: Report) -> str:
    auto = report.task.auto
    if not auto:
        return ""
    return (
        f"--n_questions auto: {auto.chosen} questions (pilot {auto.pilot}; needed {auto.target}; "
        f"affordable in {auto.budget_s:.0f} s: {auto.affordable}; in the task: {auto.available}; "
        f"limited by {auto.limited_by})"
    )


def accuracy_lines(report: Report) -> list[str]:
    """The stdout section: the accuracy table, its legend, the fidelity table, the rankings."""
    rows = accuracy_rows(report)
    if not rows:
        return []
    out = ["accuracy (95% intervals)", *_fixed_width(ACCURACY_COLUMNS, rows), _legend(report)]
    out += [_auto_line(report)] if _auto_line(report) else []
    fid = fidelity_rows(report)
    if fid:
        out += ["", "fidelity to fp32 (next-token top-1 agreement and KL, nats)"]
        out += _fixed_width(FIDELITY_COLUMNS, fid)
        out.append(
            "task: this bench, teacher-forced along fp32's greedy answers to the task prompts (positions: "
            "top-1/KL); export: manifest.json verification, fixed prompts through the KV cache."
        )
    out += ranking_lines(report)
    return out


def _md_table(columns, rows) -> list[str]:
    head = "| " + " | ".join(columns) + " |"
    return [head, "|" + "---|" * len(columns)] + ["| " + " | ".join(r) + " |" for r in rows]


def accuracy_markdown(report: Report) -> list[str]:
    """The report.md sections "Accuracy" and "Fidelity" (empty when no accuracy was measured)."""
    rows = accuracy_rows(report)
    if not rows:
        return []
    md = ["## Accuracy", "", *_md_table(ACCURACY_COLUMNS, rows), "", _legend(report), ""]
    if _auto_line(report):
        md += [_auto_line(report), ""]
    fid = fidelity_rows(report)
    if fid:
        md += ["## Fidelity", "", *_md_table(FIDELITY_COLUMNS, fid), ""]
    md += [f"- {line}" for line in ranking_lines(report)]
    return md
