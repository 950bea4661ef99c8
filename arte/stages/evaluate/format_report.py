"""Answer format versus knowledge in a run's accuracy numbers (summary.md, summary.json).

An answer without a complete `<ans>` tag is scored wrong, so accuracy = tag rate x accuracy among
the tagged answers. A student that only learnt to write the tag gains accuracy without knowing
more; this module tells the two apart for every variant in the records (not a fixed list).

Per (variant, task, shots): `tag_rate`, `tagged_acc` (None when nothing was tagged), `n_tagged`,
its Wilson 95% interval, and `at_guess_level`: that interval reaches down to the guessing level,
max(chance, majority), so the tagged answers are not told apart from a knowledge-free guess.
Guessing levels per task, from the evaluated test targets:
- chance: 1 / |answer space| for a closed space (True/False, option letters, a closed word set:
  `common.tasks.answer_space`); None ("n/a") for numbers and open text;
- majority: the share of the most frequent target (what always giving that one answer scores).

Per paired difference var - ref: `format_part` = (tag rate of var - tag rate of ref) x the
reference's tagged accuracy (the guessing level when ref tagged nothing: what a tagged answer
scores without knowledge): what var gains by tagging more often at ref's tagged accuracy.
`knowledge_part` = diff - format_part (= var's tag rate x the gap in tagged accuracy, when ref
tagged some). A difference is `format_explained` when the tag rates differ by more than FORMAT_GAP
and format_part carries at least half of it (same sign). The macro rows average both parts over
tasks, as the macro difference does.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from common.tasks.answers import normalize_answer

if TYPE_CHECKING:
    from common.tasks.answer_space import AnswerSpace

FORMAT_GAP = 0.10
"""Two compared variants whose tag rates differ by more than this are checked for a format gap."""
FORMAT_SHARE = 0.5
"""A difference whose format part is at least this share of it is marked as explained by format."""
FORMAT_MARK = "†"
GUESS_MARK = "~"
MACRO = "macro"


def wilson(k: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """Wilson score interval of k successes in n trials (95% by default); (0, 1) when n = 0."""
    if n == 0:
        return 0.0, 1.0
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def guess_levels(
    records_by_variant: Mapping[str, Sequence[Mapping[str, Any]]], spaces: Mapping[str, AnswerSpace]
) -> dict[str, dict[str, Any]]:
    """{task: {chance, majority, majority_label, space, n}} from the test targets in the records (each
    question once); `spaces` gives a task's answer space (a task missing from it: chance n/a)."""
    targets: dict[str, dict[int, str]] = {}
    for recs in records_by_variant.values():
        for r in recs:
            targets.setdefault(r["task"], {})[r["index"]] = r["target"]
    out = {}
    for task, by_index in targets.items():
        space = spaces.get(task)
        kind = space.kind if space is not None else "text"
        counts = Counter(normalize_answer(t, kind) for t in by_index.values())
        label, top = counts.most_common(1)[0]
        closed = space is not None and space.closed
        out[task] = {
            "chance": 1 / len(space.values) if closed else None,
            "majority": top / len(by_index),
            "majority_label": label,
            "space": space.describe() if space is not None else "unknown",
            "n": len(by_index),
        }
    return out


def _guess_level(level: Mapping[str, Any]) -> float:
    return max(level["majority"], level["chance"] or 0.0)


def format_rows(
    records_by_variant: Mapping[str, Sequence[Mapping[str, Any]]], levels: Mapping[str, Mapping[str, Any]]
) -> list[dict[str, Any]]:
    """Tag rate and tagged accuracy per (variant, task, shots), then per (variant, macro, shots)."""
    rows = []
    for variant, recs in records_by_variant.items():
        cells: dict[tuple[str, int], list[Mapping]] = {}
        for r in recs:
            cells.setdefault((r["task"], int(r["shots"])), []).append(r)
        for shots in sorted({s for _, s in cells}):
            mine = []
            for task in [t for t, s in cells if s == shots]:
                cell = cells[(task, shots)]
                tagged = [r for r in cell if not r.get("missing_tag", 0)]
                k = sum(int(r["correct"]) for r in tagged)
                low, high = wilson(k, len(tagged))
                guess = _guess_level(levels[task])
                row = {
                    "variant": variant,
                    "task": task,
                    "shots": shots,
                    "n": len(cell),
                    "n_tagged": len(tagged),
                    "tag_rate": len(tagged) / len(cell),
                    "tagged_acc": k / len(tagged) if tagged else None,
                    "tagged_low": low,
                    "tagged_high": high,
                    "guess_level": guess,
                    "at_guess_level": bool(tagged) and low <= guess,
                }
                mine.append(row)
            rows += mine
            accs = [r["tagged_acc"] for r in mine if r["tagged_acc"] is not None]
            rows.append(
                {
                    "variant": variant,
                    "task": MACRO,
                    "shots": shots,
                    "n": sum(r["n"] for r in mine),
                    "n_tagged": sum(r["n_tagged"] for r in mine),
                    "tag_rate": sum(r["tag_rate"] for r in mine) / len(mine),
                    "tagged_acc": sum(accs) / len(accs) if accs else None,
                    "at_guess_level": bool(accs) and all(r["at_guess_level"] for r in mine if r["n_tagged"]),
                }
            )
    return rows


def _parts(var: Mapping, ref: Mapping, level: Mapping) -> tuple[float, float]:
    """(format part, tag-rate gap) of var - ref on one task (see module doc)."""
    ref_acc = ref["tagged_acc"] if ref["tagged_acc"] is not None else _guess_level(level)
    gap = var["tag_rate"] - ref["tag_rate"]
    return gap * ref_acc, gap


def _difference_row(d: Mapping[str, Any], fmt: float, gap: float) -> dict[str, Any]:
    diff = d["diff"]
    explained = abs(gap) > FORMAT_GAP and fmt * diff > 0 and abs(fmt) >= FORMAT_SHARE * abs(diff)
    return {
        "comparison": d["comparison"],
        "task": d["task"],
        "shots": d["shots"],
        "diff": diff,
        "tag_rate_gap": gap,
        "format_part": fmt,
        "knowledge_part": diff - fmt,
        "format_explained": explained,
    }


def format_differences(
    differences: Sequence[Mapping[str, Any]],
    rows: Sequence[Mapping[str, Any]],
    levels: Mapping[str, Mapping[str, Any]],
) -> list[dict[str, Any]]:
    """For each difference row of `accuracy_table`: its format part, knowledge part, tag-rate gap and
    whether the tag rates explain it (`format_explained`); macro rows average the tasks' parts."""
    cell = {(r["variant"], r["task"], r["shots"]): r for r in rows}
    out, parts = [], {}
    for d in differences:
        var = cell.get((d["variant"], d["task"], d["shots"]))
        ref = cell.get((d["reference"], d["task"], d["shots"]))
        if d["task"] != MACRO and var is not None and ref is not None:
            fmt, gap = _parts(var, ref, levels[d["task"]])
            parts.setdefault((d["comparison"], d["shots"]), []).append((fmt, gap))
            out.append(_difference_row(d, fmt, gap))
    for d in differences:
        mine = parts.get((d["comparison"], d["shots"]))
        if d["task"] == MACRO and mine:
            fmt, gap = (sum(p[i] for p in mine) / len(mine) for i in (0, 1))
            out.append(_difference_row(d, fmt, gap))
    return out


def format_report(
    records_by_variant: Mapping[str, Sequence[Mapping[str, Any]]],
    spaces: Mapping[str, AnswerSpace],
    differences: Sequence[Mapping[str, Any]],
) -> dict[str, Any]:
    """{"levels", "rows", "differences"}: the whole format report (summary.json's "format")."""
    levels = guess_levels(records_by_variant, spaces)
    rows = format_rows(records_by_variant, levels)
    return {"levels": levels, "rows": rows, "differences": format_differences(differences, rows, levels)}


def difference_marks(report: Mapping[str, Any]) -> dict[tuple[str, str, int], str]:
    """{(comparison, task, shots): FORMAT_MARK} for the differences the tag rates explain."""
    return {
        (d["comparison"], d["task"], d["shots"]): FORMAT_MARK
        for d in report["differences"]
        if d["format_explained"]
    }


MARK_LEGEND = (
    f"{FORMAT_MARK} = the tag rates explain this difference: (tag-rate gap) x (the reference's accuracy "
    "among its tagged answers; the guessing level when it tagged none) is at least half of it "
    "(answer-format tables)."
)


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.0f}"


def _grid(title: str, head: str, cols: list[str], rows: dict[str, list[str]]) -> list[str]:
    """A titled Markdown table: one row per key of `rows` (its label, then one cell per column)."""
    out = [title, "", f"| {head} | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    return out + [f"| {label} | " + " | ".join(cells) + " |" for label, cells in rows.items()]


def _format_cell(r: Mapping[str, Any] | None) -> str:
    if r is None:
        return "-"
    mark = GUESS_MARK if r["at_guess_level"] else ""
    return f"{_pct(r['tag_rate'])} / {_pct(r['tagged_acc'])}{mark}"


def _split_cell(d: Mapping[str, Any] | None) -> str:
    if d is None:
        return "-"
    mark = FORMAT_MARK if d["format_explained"] else ""
    return f"{100 * d['format_part']:+.1f} fmt, {100 * d['knowledge_part']:+.1f} know{mark}"


def format_tables_markdown(report: Mapping[str, Any], names: Mapping[str, str] | None = None) -> list[str]:
    """Markdown lines: per shot count, tag rate / tagged accuracy per variant x task with the guessing
    levels, then each difference split into its format and knowledge parts."""
    names, rows = names or {}, report["rows"]
    levels = report["levels"]
    out: list[str] = []
    for shots in sorted({r["shots"] for r in rows}):
        mine = [r for r in rows if r["shots"] == shots]
        cols = list(dict.fromkeys(r["task"] for r in mine if r["task"] != MACRO)) + [MACRO]
        cell = {(r["variant"], r["task"]): r for r in mine}
        table = {
            names.get(v, v): [_format_cell(cell.get((v, t))) for t in cols]
            for v in dict.fromkeys(r["variant"] for r in mine)
        }
        table["chance / majority"] = [
            f"{_pct(levels[t]['chance'])} / {_pct(levels[t]['majority'])}" for t in cols[:-1]
        ] + ["-"]
        title = (
            f"### {shots}-shot answer format: tag rate % / accuracy among tagged answers % "
            f"({GUESS_MARK} = at guessing level)"
        )
        out += _grid(title, "variant", cols, table) + [""]
        diffs = [d for d in report["differences"] if d["shots"] == shots]
        if diffs:
            dcell = {(d["comparison"], d["task"]): d for d in diffs}
            split = {
                comp: [_split_cell(dcell.get((comp, t))) for t in cols]
                for comp in dict.fromkeys(d["comparison"] for d in diffs)
            }
            title = f"{shots}-shot differences split (points): format part (fmt) + knowledge part (know)"
            out += _grid(title, "comparison", cols, split) + [""]
    out += [
        f"{GUESS_MARK} = the Wilson 95% interval of the tagged accuracy reaches the guessing level "
        "max(chance, majority): no sign of knowledge beyond a guess. Chance = 1 / |answer space| "
        "(n/a for numbers and open text); majority = share of the most frequent test target.",
        "",
    ]
    return out
