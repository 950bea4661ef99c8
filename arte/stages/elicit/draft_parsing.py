"""Parse the teacher's brainstormed questions, tolerantly, without ever executing model text.

The question prompt asks for blocks like
    <Question_4><input>...</input><target>...</target></Question_4>
Teachers (small ones especially) drift: missing closing tags, other numbering, extra prose. A block
is kept when it has a non-empty <input> and <target>; every other block is counted as unparsable.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_BLOCK = re.compile(
    r"<Question_?\s*\d*\s*>(.*?)(?=</Question_?\s*\d*\s*>|<Question_?\s*\d*\s*>|\Z)", re.S | re.I
)
_INPUT = re.compile(r"<input>(.*?)</input>", re.S | re.I)
_TARGET = re.compile(r"<target>(.*?)(?:</target>|<|\Z)", re.S | re.I)
_SPACE = re.compile(r"\s+")


@dataclass
class ParsedDrafts:
    """Questions parsed from one teacher output, and how many blocks were dropped."""

    questions: list[tuple[str, str]] = field(default_factory=list)
    unparsable: int = 0


def parse_question_blocks(text: str) -> ParsedDrafts:
    """(input, target) pairs from `<Question_x>` blocks; blocks without input or target are counted."""
    out = ParsedDrafts()
    for block in _BLOCK.findall(text):
        inp, tgt = _INPUT.search(block), _TARGET.search(block)
        question = inp.group(1).strip() if inp else ""
        target = tgt.group(1).strip() if tgt else ""
        if question and target and len(target) <= 200:
            out.questions.append((question, target))
        elif block.strip():
            out.unparsable += 1
    return out


def question_key(question: str) -> str:
    """De-duplication key: case- and whitespace-insensitive."""
    return _SPACE.sub(" ", question).strip().casefold()
