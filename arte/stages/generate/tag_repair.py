"""Reading a rationale's answer, and repairing the ones a small teacher leaves untagged.

A rationale should end in `<ans>X</ans>`. Small teachers often write "The answer is True." and stop
(or go on with a new "Question:"). When the final sentence states an answer in the task's answer
space, the tag is appended and the repair is counted. It is refused when the space is open (where
the answer would end is a guess), when the sentence names two different answers, or when the answer
lies outside the space.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from common.tasks.answer_space import AnswerSpace
from common.tasks.answers import extract_answer

_RUNAWAY = re.compile(r"\n\s*Question:")
_OPEN_TAG = re.compile(r"<ans>\s*([^<\n]{1,80}?)\s*$", re.IGNORECASE)
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
_STATED = re.compile(
    r"(?:the\s+)?(?:final\s+|correct\s+)?answer\s*(?:is|:|=|would be|will be)\s*(.+?)\s*[.!]?\s*$",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class ReadRationale:
    """A rationale cleaned for training, the answer it gives (normalised, inside the space, or None),
    and whether the tag was repaired."""

    text: str
    answer: str | None
    repaired: bool = False
    reason: str = ""
    """Why there is no answer: "no_tag", "outside_space" or "" (there is one)."""


def clean_rationale(text: str) -> str:
    """The rationale up to where the model started a new question, stripped."""
    m = _RUNAWAY.search(text)
    return (text[: m.start()] if m else text).strip()


def _stated_answer(text: str, space: AnswerSpace) -> tuple[str, str] | str:
    """(the answer as written, normalised) that the final sentence states, or why there is none:
    "no_tag" (no statement, or two answers in it, or an earlier sentence stating another one),
    "outside_space"."""
    stated_all = [m for s in _SENTENCE_END.split(text.strip()) if (m := _STATED.search(s))]
    sentences = [s for s in _SENTENCE_END.split(text.strip()) if s.strip()]
    m = _STATED.search(sentences[-1]) if sentences else None
    if not m:
        return "no_tag"
    stated = m.group(1).strip().strip("\"'*").rstrip(".")
    if re.search(r"\b(?:or|and)\b|[,/]", stated):
        return "no_tag"  # "True or False", "3, 4": more than one answer
    answer = space.canonical(stated)
    if answer is None:
        return "outside_space"
    earlier = {space.canonical(e.group(1).strip().strip("\"'*").rstrip(".")) for e in stated_all}
    if earlier - {answer}:
        return "no_tag"  # "The answer is True. ... the answer is False.": which one?
    return stated, answer


def read_rationale(raw: str, space: AnswerSpace) -> ReadRationale:
    """The rationale's answer: its first complete `<ans>` tag, else a repair (see module doc)."""
    text = clean_rationale(raw)
    tagged = extract_answer(text)
    if tagged is not None:
        end = text.lower().index("</ans>") + len("</ans>")
        answer = space.canonical(tagged)
        return ReadRationale(text[:end], answer, reason="" if answer else "outside_space")
    if not space.closed and space.kind != "number":
        return ReadRationale(text, None, reason="no_tag")
    opened = _OPEN_TAG.search(text)
    if opened:  # "<ans>True" cut by the budget
        answer = space.canonical(opened.group(1))
        if answer is not None:
            fixed = text[: opened.start()] + f"<ans>{opened.group(1).strip()}</ans>"
            return ReadRationale(fixed, answer, repaired=True)
        return ReadRationale(text, None, reason="no_tag")
    found = _stated_answer(text, space)
    if isinstance(found, str):
        return ReadRationale(text, None, reason=found)
    stated, answer = found
    return ReadRationale(f"{text} <ans>{stated}</ans>", answer, repaired=True)
