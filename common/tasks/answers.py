"""Reading and comparing answers: the first `<ans>...</ans>` of a completion, normalised per answer
kind so that "(A)" and "a", "twelve" and "12", "True." and "true" compare equal.

Every prompt in ARTE asks the model to put its final answer in `<ans>` tags; a completion without a
complete tag is wrong, and `score_completions` counts those separately so callers can report them.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    from common.tasks.base import AnswerKind, Task

_ANS = re.compile(r"<ans>(.*?)</ans>", re.IGNORECASE | re.DOTALL)
_SPACE = re.compile(r"\s+")
_LETTER = re.compile(r"^\(([a-z])\)(?:\s.*)?$|^([a-z])[.):](?:\s.*)?$|^([a-z])$", re.DOTALL)
_DIGITS = re.compile(r"^[+-]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?$|^[+-]?\.\d+$")

_UNITS = {
    w: i
    for i, w in enumerate(
        "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
        "fifteen sixteen seventeen eighteen nineteen".split()
    )
}
_TENS = {
    w: 10 * i
    for i, w in enumerate("_ _ twenty thirty forty fifty sixty seventy eighty ninety".split())
    if i > 1
}
_SCALES = {"hundred": 100, "thousand": 1_000, "million": 1_000_000, "billion": 1_000_000_000}
_NEGATIVE = {"minus", "negative"}


def extract_answer(text: str) -> str | None:
    """The inside of the FIRST complete `<ans>...</ans>` (tag case-insensitive), stripped; None if
    the completion has no complete tag."""
    m = _ANS.search(text)
    return m.group(1).strip() if m else None


def _common(ans: str) -> str:
    text = _SPACE.sub(" ", ans.replace("\u2212", "-")).strip().casefold()
    return text.rstrip(".").rstrip()


def words_to_int(text: str) -> int | None:
    """'twenty-one' -> 21, 'minus five' -> -5, 'one hundred and five' -> 105; None if not a number."""
    tokens = [t for t in re.split(r"[\s-]+", text.casefold().strip()) if t and t != "and"]
    sign = 1
    if tokens and tokens[0] in _NEGATIVE:
        sign, tokens = -1, tokens[1:]
    if not tokens:
        return None
    total, current = 0, 0
    for tok in tokens:
        if tok in _UNITS:
            current += _UNITS[tok]
        elif tok in _TENS:
            current += _TENS[tok]
        elif tok == "hundred":
            current = max(current, 1) * 100
        elif tok in _SCALES:
            total += max(current, 1) * _SCALES[tok]
            current = 0
        else:
            return None
    return sign * (total + current)


def parse_number(text: str) -> Decimal | None:
    """A number written with digits (thousands commas, leading '+', unicode minus) or in words."""
    text = _common(text)
    if _DIGITS.match(text):
        try:
            return Decimal(text.replace(",", "").lstrip("+"))
        except InvalidOperation:  # pragma: no cover - the regex admits only valid literals
            return None
    value = words_to_int(text)
    return Decimal(value) if value is not None else None


def _number_text(value: Decimal) -> str:
    if value == 0:
        return "0"
    return format(value.normalize(), "f")


def normalize_answer(ans: str, kind: AnswerKind = "text", options: Sequence[str] = ()) -> str:
    """Canonical form of an answer for comparison.

    All kinds: strip, collapse whitespace, casefold, drop trailing '.'.
    choice: "(A)", "A)", "A.", "(a) option text" -> "a"; with `options`, an option's text -> its letter.
    number: words -> digits, thousands commas removed, "42.0" -> "42", '+' dropped, '−' -> '-'.
    bool, text: the common rule only (so "True." == "true", but "yes" != "true").
    """
    text = _common(ans)
    if kind == "choice":
        m = _LETTER.match(text)
        if m:
            return next(g for g in m.groups() if g)
        for i, option in enumerate(options):
            if _common(option) == text:
                return chr(ord("a") + i)
        return text
    if kind == "number":
        value = parse_number(text)
        return _number_text(value) if value is not None else text
    return text


class AnswerStats(NamedTuple):
    """How a batch of completions scored; a completion without `<ans>` counts as wrong and missing."""

    n_correct: int
    n_missing_tag: int


def score_completions(task: Task, completions: Sequence[str], targets: Sequence[str]) -> AnswerStats:
    """Count correct answers and answers with no complete `<ans>` tag (those are also wrong)."""
    if len(completions) != len(targets):
        raise ValueError(f"{len(completions)} completions but {len(targets)} targets")
    n_correct = n_missing = 0
    for completion, target in zip(completions, targets, strict=True):
        got = extract_answer(completion)
        if got is None:
            n_missing += 1
        elif task.normalize(got) == task.normalize(target):
            n_correct += 1
    return AnswerStats(n_correct, n_missing)
