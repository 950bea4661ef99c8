"""Answer extraction and normalisation: what counts as the same answer."""

from __future__ import annotations

import pytest

from common.tasks import Example, Task, extract_answer, normalize_answer, score_completions


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("so <ans>42</ans>", "42"),
        ("<ANS>  (B) </Ans> trailing", "(B)"),
        ("<ans>first</ans> then <ans>second</ans>", "first"),
        ("<ans>\n  multi\nline \n</ans>", "multi\nline"),
        ("<ans></ans>", ""),
        ("no tag at all", None),
        ("<ans>unterminated", None),
        ("</ans> closing first <ans>x</ans>", "x"),
        ("<ans>open <ans>inner</ans>", "open <ans>inner"),
    ],
)
def test_extract_answer(text, expected):
    assert extract_answer(text) == expected


@pytest.mark.parametrize(
    ("raw", "kind", "expected"),
    [
        ("  Hello   World. ", "text", "hello world"),
        ("costume counterpart oven", "text", "costume counterpart oven"),
        ("Done...", "text", "done"),
        ("(A)", "choice", "a"),
        ("A)", "choice", "a"),
        ("A.", "choice", "a"),
        ("a", "choice", "a"),
        ("(a) some option text", "choice", "a"),
        ("B. the second one", "choice", "b"),
        ("a dog", "choice", "a dog"),
        ("twelve", "number", "12"),
        ("twenty-one", "number", "21"),
        ("minus five", "number", "-5"),
        ("negative five", "number", "-5"),
        ("one hundred and five", "number", "105"),
        ("Zero", "number", "0"),
        ("1,234", "number", "1234"),
        ("1,234,567.50", "number", "1234567.5"),
        ("42.0", "number", "42"),
        ("42.", "number", "42"),
        ("+7", "number", "7"),
        ("\u22123", "number", "-3"),
        ("-0", "number", "0"),
        ("100", "number", "100"),
        ("0.25", "number", "0.25"),
        ("about 5", "number", "about 5"),
        ("True", "bool", "true"),
        ("FALSE.", "bool", "false"),
        ("yes", "bool", "yes"),
    ],
)
def test_normalize_answer(raw, kind, expected):
    assert normalize_answer(raw, kind) == expected


def test_choice_option_text_maps_to_letter():
    options = ["red apple", "Green pear"]
    assert normalize_answer("green pear.", "choice", options) == "b"
    assert normalize_answer("(A)", "choice", options) == "a"
    assert normalize_answer("banana", "choice", options) == "banana"


def _task(kind):
    ex = Example("q", "1")
    return Task("t", "d", [ex], [ex], [ex], answer_kind=kind)


def test_task_is_correct_uses_kind():
    assert _task("number").is_correct("Let's see. <ans>twelve</ans>", "12")
    assert _task("choice").is_correct("<ans>(C)</ans>", "C")
    assert not _task("bool").is_correct("<ans>yes</ans>", "True")
    assert not _task("text").is_correct("the answer is 12", "12")


def test_score_completions_counts_missing_tags():
    task = _task("number")
    completions = ["<ans>3</ans>", "<ans>four</ans>", "I think 5", "<ans>7</ans>", "<ans>6"]
    targets = ["3", "4", "5", "8", "6"]
    stats = score_completions(task, completions, targets)
    assert stats == (2, 2)
    n_correct, n_missing = stats
    assert (stats.n_correct, stats.n_missing_tag) == (n_correct, n_missing)


def test_score_completions_length_mismatch():
    with pytest.raises(ValueError):
        score_completions(_task("text"), ["<ans>a</ans>"], [])
