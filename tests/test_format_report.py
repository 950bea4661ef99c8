"""Format versus knowledge in the summary (arte/stages/format_report.py): tag rates, accuracy among
tagged answers, guessing levels, and the marker on differences the tag rates explain."""

from __future__ import annotations

import pytest

from arte.stages.evaluate.format_report import (
    FORMAT_MARK,
    MARK_LEGEND,
    difference_marks,
    format_report,
    format_tables_markdown,
    wilson,
)
from arte.stages.evaluate.stats import accuracy_table, format_table_markdown
from arte.stages.evaluate.summary import caveats
from common.tasks.answer_space import learn_answer_space

SPACES = {
    "b": learn_answer_space("bool", ["True", "False"] * 3),
    "n": learn_answer_space("number", ["3", "7"]),
}


def _cell(task: str, targets: list[str], answers: list[str | None], shots: int = 0) -> list[dict]:
    """Records of one (task, shots): answer None = no tag (scored wrong)."""
    return [
        {
            "task": task,
            "shots": shots,
            "index": i,
            "target": t,
            "answer": a,
            "correct": int(a is not None and a.casefold() == t.casefold()),
            "missing_tag": int(a is None),
        }
        for i, (t, a) in enumerate(zip(targets, answers, strict=True))
    ]


BOOL_TARGETS = ["True"] * 60 + ["False"] * 40  # majority 60%


ALTERNATING = ["True" if i % 2 == 0 else "False" for i in range(100)]  # 50% right on BOOL_TARGETS


def _report(records: dict[str, list[dict]]):
    table = accuracy_table(records, n_boot=300)
    return table, format_report(records, SPACES, table["differences"])


def test_tag_rate_gain_at_chance_is_marked_and_a_knowledge_gain_is_not():
    answers_good = ["True" if i < 60 else "False" for i in range(100)]  # all right
    for i in range(0, 100, 10):
        answers_good[i] = "False" if answers_good[i] == "True" else "True"  # 90% right, all tagged
    records = {
        "vanilla": _cell("b", BOOL_TARGETS, [None] * 100),  # never tags (the 0-shot student)
        "original": _cell("b", BOOL_TARGETS, ALTERNATING),
        "arte": _cell("b", BOOL_TARGETS, answers_good),
    }
    table, fmt = _report(records)
    rows = {(r["variant"], r["task"]): r for r in fmt["rows"] if r["shots"] == 0}
    assert rows[("vanilla", "b")]["tag_rate"] == 0 and rows[("vanilla", "b")]["tagged_acc"] is None
    assert rows[("original", "b")]["tag_rate"] == 1 and rows[("original", "b")]["tagged_acc"] == 0.5
    assert rows[("original", "b")]["at_guess_level"]  # 50% of 100: chance 50%, majority 60%
    assert not rows[("arte", "b")]["at_guess_level"] and rows[("arte", "b")]["tagged_acc"] == 0.9
    assert fmt["levels"]["b"]["chance"] == 0.5 and fmt["levels"]["b"]["majority"] == 0.6

    diffs = {(d["comparison"], d["task"]): d for d in fmt["differences"]}
    assert diffs[("original - vanilla", "b")]["format_explained"]  # +50 from tags, guessed at chance
    # vanilla tagged nothing: its tagged answers count at the guessing level max(chance 50, majority 60)
    assert diffs[("original - vanilla", "b")]["format_part"] == pytest.approx(0.6)
    assert not diffs[("arte - original", "b")]["format_explained"]  # same tag rate: knowledge
    assert diffs[("arte - original", "b")]["knowledge_part"] == pytest.approx(0.4)
    # arte - vanilla: +90, of which 60 is tagging at the guessing level: more than half, so marked.
    assert diffs[("arte - vanilla", "b")]["format_explained"]
    assert diffs[("arte - vanilla", "b")]["knowledge_part"] == pytest.approx(0.3)

    marks = difference_marks(fmt)
    text = format_table_markdown(table, marks=marks, legend=MARK_LEGEND)
    lines = {line.split(" | ")[0].strip("| "): line for line in text.splitlines() if " - " in line}
    assert FORMAT_MARK in lines["original - vanilla"] and FORMAT_MARK not in lines["arte - original"]
    assert MARK_LEGEND in text
    notes = "\n".join(caveats(table, {}, fmt))
    assert "original's tagged answers are no better than a guess** (b 0-shot 50% of 100" in notes
    assert "arte's tagged answers" not in notes


def test_partial_tagging_is_split_exactly_and_small_gaps_are_not_marked():
    records = {
        "vanilla": _cell("b", BOOL_TARGETS, [t if i % 2 else None for i, t in enumerate(BOOL_TARGETS)]),
        "rationale_only": _cell("b", BOOL_TARGETS, ALTERNATING),  # tags all, 50% right
        "arte": _cell("b", BOOL_TARGETS, [t if i % 20 else None for i, t in enumerate(BOOL_TARGETS)]),
    }
    table, fmt = _report(records)
    rows = {r["variant"]: r for r in fmt["rows"] if r["task"] == "b"}
    assert rows["vanilla"]["tag_rate"] == 0.5 and rows["vanilla"]["tagged_acc"] == 1.0  # tags half, all right
    assert set(rows) == {"vanilla", "rationale_only", "arte"}  # variants come from the records
    diffs = {d["comparison"]: d for d in fmt["differences"] if d["task"] == "b"}
    for d in diffs.values():
        assert d["format_part"] + d["knowledge_part"] == pytest.approx(d["diff"])
    # rationale_only - vanilla: 0 points = +50 tagging (at vanilla's 100%) - 50 knowledge: no difference
    assert (
        diffs["rationale_only - vanilla"]["diff"] == 0
        and not diffs["rationale_only - vanilla"]["format_explained"]
    )
    # arte - vanilla: tag rate 95% vs 50% at vanilla's 100%: +45 of +45 is format
    assert diffs["arte - vanilla"]["format_part"] == pytest.approx(0.45)
    assert diffs["arte - vanilla"]["format_explained"]
    macro = [d for d in fmt["differences"] if d["task"] == "macro" and d["comparison"] == "arte - vanilla"]
    assert macro and macro[0]["format_explained"]


def test_levels_for_an_open_space_and_the_markdown():
    records = {"vanilla": _cell("n", ["3"] * 7 + ["5"] * 3, ["3"] * 7 + [None] * 3)}
    records["vanilla"] += _cell("b", BOOL_TARGETS, [None] * 100)
    _, fmt = _report(records)
    assert fmt["levels"]["n"] == {
        "chance": None,
        "majority": 0.7,
        "majority_label": "3",
        "space": "integers",
        "n": 10,
    }
    n = next(r for r in fmt["rows"] if r["task"] == "n")
    assert n["tagged_acc"] == 1.0 and n["at_guess_level"]  # 7/7: Wilson low 0.65 < majority 0.7
    text = "\n".join(format_tables_markdown(fmt))
    assert "| chance / majority | n/a / 70 | 50 / 60 | - |" in text
    assert "| vanilla | 70 / 100~ | 0 / n/a | 35 / 100~ |" in text


def test_wilson_matches_a_published_value():
    low, high = wilson(81, 263)  # Wilson (1927) as tabulated by Newcombe (1998): 0.2553 - 0.3662
    assert low == pytest.approx(0.2553, abs=1e-4) and high == pytest.approx(0.3662, abs=1e-4)
    assert wilson(0, 0) == (0.0, 1.0)


def test_an_open_space_gain_at_the_majority_level_is_format_and_a_real_one_is_not():
    targets = ["3"] * 13 + [str(i) for i in range(10, 97)]  # open integers, majority 13%
    records = {
        "vanilla": _cell("n", targets, [None] * 100),
        "original": _cell("n", targets, ["3"] * 100),  # always the majority answer, tagged
        "arte": _cell("n", targets, list(targets)),  # knows every answer
    }
    table, fmt = _report(records)
    assert fmt["levels"]["n"]["chance"] is None and fmt["levels"]["n"]["majority"] == 0.13
    diffs = {d["comparison"]: d for d in fmt["differences"] if d["task"] == "n"}
    assert (
        diffs["original - vanilla"]["diff"] == pytest.approx(0.13)
        and diffs["original - vanilla"]["format_explained"]
    )
    assert not diffs["arte - vanilla"]["format_explained"]  # +100: 13 of it format, 87 knowledge
    assert diffs["arte - vanilla"]["knowledge_part"] == pytest.approx(0.87)
    marks = difference_marks(fmt)
    assert ("original - vanilla", "n", 0) in marks and ("arte - vanilla", "n", 0) not in marks
    assert ("arte - original", "n", 0) not in marks  # same tag rate
