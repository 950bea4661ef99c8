"""Drop drafted questions not worth training on, judged against the task's own questions (seeds and
validation): far too short or too long, a template with nothing filled in, or a fragment.

- too_short / too_long: under half the shortest or over twice the longest reference question
  (characters);
- template: placeholders ("...", "___", "[noun]", "{x}", leftover `<tags>`) or empty slots ("a ,",
  "( )") where a seed's template had words (a sign that the references themselves show is allowed);
- fragment: fewer than 3 words (or than half the shortest reference question), or an ending none of the
  reference questions has ("The bat" where every question ends with "is", "=" or "?"), when the
  references agree on a few endings.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

TEMPLATE_SIGNS = {
    "ellipsis": re.compile(r"\.\.\.|\u2026"),
    "blank": re.compile(r"_{2,}"),
    "bracketed": re.compile(r"\[[^\]]*\]|\{[^}]*\}"),
    "tag": re.compile(r"</?\w+>"),
    "empty parentheses": re.compile(r"\(\s*\)"),
    "empty slot": re.compile(r"\b(?:a|an|the|of)\s+[,.?;:]|,\s*,|\s[,.?]\s*[,.?]"),
}
"""Signs of a template left unfilled; a sign that some reference question shows is not one."""
MIN_WORDS = 3
ENDING_COVERAGE = 0.9
"""Endings are enforced when at most 3 endings cover this share of the reference questions."""


def ending(question: str) -> str:
    """How a question ends: its last character when that is punctuation, else its last word."""
    text = question.strip()
    if not text:
        return ""
    if not text[-1].isalnum():
        return text[-1]
    return text.split()[-1].casefold()


@dataclass(frozen=True)
class QuestionChecks:
    """The reference shape of a task's questions."""

    min_chars: int
    max_chars: int
    endings: frozenset[str]
    """Allowed endings; empty when the references do not agree on a few."""
    template_signs: tuple[str, ...]
    """The TEMPLATE_SIGNS no reference question shows."""
    min_words: int = MIN_WORDS

    @classmethod
    def learn(cls, references: Sequence[str]) -> QuestionChecks:
        lengths = [len(q.strip()) for q in references]
        counts = Counter(ending(q) for q in references)
        top = counts.most_common(3)
        agreed = sum(n for _, n in top) >= ENDING_COVERAGE * len(references)
        signs = tuple(n for n, rx in TEMPLATE_SIGNS.items() if not any(rx.search(q) for q in references))
        endings = frozenset(e for e, _ in top) if agreed else frozenset()
        words = min(MIN_WORDS, -(-min(len(q.split()) for q in references) // 2))
        return cls(min(lengths), max(lengths), endings, signs, words)

    def problem(self, question: str) -> str | None:
        """Why `question` is dropped ("too_short", "too_long", "template", "fragment"), or None."""
        text = question.strip()
        if len(text) < self.min_chars / 2:
            return "too_short"
        if len(text) > self.max_chars * 2:
            return "too_long"
        if any(TEMPLATE_SIGNS[n].search(text) for n in self.template_signs):
            return "template"
        if len(text.split()) < self.min_words or (self.endings and ending(text) not in self.endings):
            return "fragment"
        return None
