"""One rule for "format-explained" (arte/stages/evaluate/format_caveats.py): the caveat names exactly
the differences the † table marks, for the target tasks and the out-of-domain tasks alike."""

from __future__ import annotations

from types import SimpleNamespace
from unittest.mock import patch

from test_format_report import _cell

from arte.stages.evaluate.format_caveats import answer_format_checks
from arte.stages.evaluate.format_report import FORMAT_MARK
from arte.stages.evaluate.out_of_domain import ood_summary
from arte.stages.evaluate.stats import accuracy_table
from common.tasks.answer_space import learn_answer_space

TARGETS = ["3"] * 13 + [str(i) for i in range(10, 97)]  # open integers, majority 13%
SPACES = {"n": learn_answer_space("number", ["3", "7"])}


def _records() -> dict[str, list[dict]]:
    return {
        "vanilla": _cell("n", TARGETS, [None] * 100),  # never tags
        "original": _cell("n", TARGETS, ["3"] * 100),  # tags, always the majority answer: format
        "arte": _cell("n", TARGETS, list(TARGETS)),  # +100 over vanilla, 13 of it format: knowledge
    }


def test_the_caveat_names_exactly_the_marked_differences():
    records = _records()
    table = accuracy_table(records, n_boot=200)
    fmt, marks, notes = answer_format_checks(records, SPACES, table)
    text = "\n".join(notes)
    assert ("original - vanilla", "n", 0) in marks
    assert "**original - vanilla, 0-shot, is mostly answer format**" in text
    # the case: tag rates 100 points apart, but the format part is 13 of +100 points
    assert ("arte - vanilla", "n", 0) not in marks
    assert "arte - vanilla, 0-shot" not in text
    marked = {(c, s) for c, _, s in marks}
    named = {(d["comparison"], d["shots"]) for d in fmt["differences"] if d["format_explained"]}
    assert marked == named and sum("mostly answer format" in n for n in notes) == len(named)


def test_like_for_like_tagging_gives_no_format_caveat():
    records = {"vanilla": _cell("n", TARGETS, ["3"] * 100), "arte": _cell("n", TARGETS, list(TARGETS))}
    table = accuracy_table(records, n_boot=200)
    _, marks, notes = answer_format_checks(records, SPACES, table)
    assert marks == {} and not any("mostly answer format" in n for n in notes)


def test_the_out_of_domain_section_has_the_same_checks():
    cfg = SimpleNamespace(seed=0, evaluate=SimpleNamespace(n_boot=200))
    task = SimpleNamespace(name="n")
    records = _records()
    with patch("common.tasks.answer_space.task_answer_space", return_value=SPACES["n"]):
        ood, lines = ood_summary(cfg, records, {}, [task])
    text = "\n".join(lines)
    assert ood["format"]["differences"] and ood["format"]["rows"]
    assert any(n.startswith("out-of-domain: **original - vanilla, 0-shot, is mostly") for n in ood["caveats"])
    assert not any("arte - vanilla" in n for n in ood["caveats"])
    diff_lines = [x for x in text.splitlines() if x.startswith("| original - vanilla")]
    assert diff_lines and FORMAT_MARK in diff_lines[0]
    assert FORMAT_MARK not in next(x for x in text.splitlines() if x.startswith("| arte - vanilla"))
    assert "fmt" in text and "know" in text  # the format / knowledge split table


def test_out_of_domain_without_a_format_gap_has_no_caveat():
    cfg = SimpleNamespace(seed=0, evaluate=SimpleNamespace(n_boot=200))
    records = {"vanilla": _cell("n", TARGETS, ["3"] * 100), "arte": _cell("n", TARGETS, list(TARGETS))}
    ood, lines = ood_summary(cfg, records, {})
    assert not any("mostly answer format" in n for n in ood["caveats"])
    assert any("vanilla's tagged answers are no better than a guess" in n for n in ood["caveats"])
    rows = [x for x in "\n".join(lines).splitlines() if x.startswith("| arte - vanilla")]
    assert rows and not any(FORMAT_MARK in x for x in rows)
