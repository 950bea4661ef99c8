"""The contamination guard: no question that near-duplicates a held-out one (a task's seeds,
validation or test questions) enters drafts or training sets, and no out-of-domain test question
that near-duplicates a target task's question or a training question is evaluated.

Two questions are near-duplicates when either
- their normalised texts are equal (`normalise_question`: case folded, number words zero..twenty and
  the tens written as digits, punctuation and all whitespace removed; brackets and a minus sign
  before a digit are kept, since they change a formula's meaning), or
- the character NGRAM-grams of their normalised texts overlap by at least OVERLAP (Jaccard: shared
  n-grams / all n-grams of the two), both texts at least MIN_CHARS long once normalised. Shorter
  texts (formulas, short templated questions) are compared by normalised equality only: one changed
  operand of a 30-character formula leaves most of its n-grams, and it is another question.
Calibration on the built-in tasks: a question of a task's own test and validation split is a
near-duplicate of another one of them in 0 of 120 (boolean_expressions, multistep_arithmetic,
object_counting, word_sorting) to 4 of 120 (navigate, whose instructions share long runs).
Each drop is counted by the rule that caught it ("exact", "normalised", "ngram").
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from collections.abc import Iterable

from arte.stages.elicit.draft_parsing import question_key

NGRAM = 8
"""Characters per n-gram of the overlap check (on the normalised text)."""
OVERLAP = 0.9
"""Jaccard overlap of two questions' n-gram sets at or above which they are near-duplicates."""
MIN_CHARS = 40
"""Normalised length below which only normalised equality counts (see module doc)."""
_UNITS = "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
_UNITS += "fifteen sixteen seventeen eighteen nineteen twenty"
NUMBER_WORDS = {w: str(i) for i, w in enumerate(_UNITS.split())}
_TENS = "thirty forty fifty sixty seventy eighty ninety"
NUMBER_WORDS |= {w: str(10 * i) for i, w in enumerate(_TENS.split(), 3)}
_WORD = re.compile(r"\b(" + "|".join(NUMBER_WORDS) + r")\b")
_MINUS = re.compile(r"-(?=\s*\d)")
_DROPPED = {"Pc", "Pd", "Pi", "Pf", "Po"}  # punctuation, brackets (Ps, Pe) excepted


def normalise_question(text: str) -> str:
    """The text near-duplicates are compared on (see module doc)."""
    text = _WORD.sub(lambda m: NUMBER_WORDS[m.group(1)], text.casefold())
    text = _MINUS.sub("\u2212", text)  # a minus sign is a math symbol (Sm), not punctuation
    return "".join(c for c in text if not c.isspace() and unicodedata.category(c) not in _DROPPED)


def ngrams(norm: str, n: int = NGRAM) -> set[str]:
    """The character n-grams of a normalised text (empty when it is shorter than MIN_CHARS)."""
    return {norm[i : i + n] for i in range(len(norm) - n + 1)} if len(norm) >= MIN_CHARS else set()


class NearDuplicateGuard:
    """Tells whether a question near-duplicates one of the protected questions (see module doc)."""

    def __init__(self, protected: Iterable[str]) -> None:
        self.exact: set[str] = set()
        self.normalised: set[str] = set()
        self.grams: list[set[str]] = []
        self.index: dict[str, list[int]] = {}
        self.extend(protected)

    def extend(self, protected: Iterable[str]) -> None:
        """Protect these questions too."""
        for q in protected:
            self.exact.add(question_key(q))
            norm = normalise_question(q)
            self.normalised.add(norm)
            grams = ngrams(norm)
            if grams:
                for g in grams:
                    self.index.setdefault(g, []).append(len(self.grams))
                self.grams.append(grams)

    def match(self, question: str) -> str | None:
        """ "exact", "normalised" or "ngram": the rule by which `question` near-duplicates a
        protected one; None when it does not."""
        if question_key(question) in self.exact:
            return "exact"
        norm = normalise_question(question)
        if norm in self.normalised:
            return "normalised"
        grams = ngrams(norm)
        shared = Counter(i for g in grams for i in self.index.get(g, ()))
        for i, k in shared.items():
            if k / (len(grams) + len(self.grams[i]) - k) >= OVERLAP:
                return "ngram"
        return None


def split_guard(tasks: Iterable) -> NearDuplicateGuard:
    """The guard of every seed, validation and test question of `tasks` (common.tasks.Task)."""
    return NearDuplicateGuard(ex.input for t in tasks for ex in t.seeds + t.validation + t.test)
