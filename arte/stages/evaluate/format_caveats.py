"""The answer-format checks of one set of accuracy numbers (the target tasks, or the out-of-domain
tasks), from one place: the format report, the † marks of its differences table and the caveats.

One rule decides "format-explained" (`arte.stages.evaluate.format_report._difference_row`): the tag
rates differ by more than FORMAT_GAP and the format part carries at least FORMAT_SHARE of the
difference, with the same sign. A difference gets a † mark in the table exactly when it is
format-explained, and a caveat names exactly the marked differences, so the two never disagree.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from arte.stages.evaluate.format_report import MACRO, difference_marks, format_report

if TYPE_CHECKING:
    from common.tasks.answer_space import AnswerSpace


def format_caveats(fmt: Mapping[str, Any] | None, where: str = "") -> list[str]:
    """One line per (comparison, shots) with a format-explained difference (a † in the table), naming
    the tasks it is marked on and the macro split; `where` prefixes the line (e.g. "out-of-domain: ")."""
    if not fmt:
        return []
    marked: dict[tuple[str, int], list[Mapping[str, Any]]] = {}
    for d in fmt["differences"]:
        if d["format_explained"]:
            marked.setdefault((d["comparison"], d["shots"]), []).append(d)
    out = []
    for (comparison, shots), rows in marked.items():
        cells = "; ".join(
            f"{d['task']} {100 * d['diff']:+.1f} pts of which {100 * d['format_part']:+.1f} format, "
            f"tag rates {100 * d['tag_rate_gap']:+.0f} pts apart"
            for d in sorted(rows, key=lambda d: d["task"] == MACRO)
        )
        out.append(
            f"{where}**{comparison}, {shots}-shot, is mostly answer format** ({cells}): the tag rates "
            "explain at least half of it (an untagged answer is scored wrong)."
        )
    return out


def guess_caveats(fmt: Mapping[str, Any] | None, where: str = "") -> list[str]:
    """One line per variant whose tagged answers sit at the guessing level on some task."""
    if not fmt:
        return []
    at: dict[str, list[str]] = {}
    for r in fmt["rows"]:
        if r["task"] != MACRO and r["at_guess_level"]:
            level = fmt["levels"][r["task"]]
            chance = "n/a" if level["chance"] is None else f"{100 * level['chance']:.0f}%"
            at.setdefault(r["variant"], []).append(
                f"{r['task']} {r['shots']}-shot {100 * r['tagged_acc']:.0f}% of {r['n_tagged']} "
                f"(chance {chance}, majority {100 * level['majority']:.0f}%)"
            )
    return [
        f"{where}**{v}'s tagged answers are no better than a guess** ({'; '.join(cells)}): its accuracy "
        "there measures the answer format, not knowledge."
        for v, cells in at.items()
    ]


def answer_format_checks(
    records: Mapping[str, Sequence[Mapping[str, Any]]],
    spaces: Mapping[str, AnswerSpace],
    table: Mapping[str, Any],
    where: str = "",
) -> tuple[dict[str, Any], dict[tuple[str, str, int], str], list[str]]:
    """(format report, † marks for the differences table, caveats) of one accuracy table: what both
    the target tasks and the out-of-domain tasks report."""
    fmt = format_report(records, spaces, table["differences"])
    return fmt, difference_marks(fmt), format_caveats(fmt, where) + guess_caveats(fmt, where)
