"""boolean_expressions (BBH): evaluate "not ( True ) and ( False or True ) is" -> "False".

The generator builds an expression tree and evaluates the tree; the verifier parses the question text
with a recursive-descent parser (precedence: not > and > or, as in Python and BBH). No eval.
"""

from __future__ import annotations

import random
import re

from common.tasks.answers import normalize_answer
from common.tasks.base import Example

NAME = "boolean_expressions"
DESCRIPTION = "Evaluate the result of a random Boolean expression."
ANSWER_KIND = "bool"

_PREC = {"or": 1, "and": 2, "not": 3, "val": 4}
_MAX_DEPTH = 100  # deeper nesting is refused rather than risking a RecursionError

# ---------------------------------------------------------------- generator


def _tree(rng: random.Random, n_leaves: int) -> tuple:
    if n_leaves == 1:
        node: tuple = ("val", rng.random() < 0.5)
    else:
        k = rng.randint(1, n_leaves - 1)
        node = (rng.choice(("and", "or")), _tree(rng, k), _tree(rng, n_leaves - k))
    for _ in range(rng.choices((0, 1, 2), weights=(6, 3, 1))[0]):
        node = ("not", node)
    return node


def _value(node: tuple) -> bool:
    op = node[0]
    if op == "val":
        return node[1]
    if op == "not":
        return not _value(node[1])
    left, right = _value(node[1]), _value(node[2])
    return (left and right) if op == "and" else (left or right)


def _render(node: tuple, rng: random.Random) -> tuple[str, int]:
    """Text and precedence of `node`; parentheses where precedence needs them, plus a few spare ones."""
    op = node[0]
    if op == "val":
        text, prec = ("True" if node[1] else "False"), _PREC["val"]
    elif op == "not":
        inner, inner_prec = _render(node[1], rng)
        text, prec = "not " + (inner if inner_prec >= _PREC["not"] else f"( {inner} )"), _PREC["not"]
    else:
        parts = []
        for child in node[1:]:
            inner, inner_prec = _render(child, rng)
            parts.append(inner if inner_prec >= _PREC[op] else f"( {inner} )")
        text, prec = f" {op} ".join(parts), _PREC[op]
    if rng.random() < 0.2:
        text, prec = f"( {text} )", _PREC["val"]
    return text, prec


def generate(rng: random.Random) -> Example:
    """One BBH-style question with 1-4 operands; the target comes from the tree, not the text."""
    tree = _tree(rng, rng.choices((1, 2, 3, 4), weights=(1, 3, 4, 3))[0])
    text, _ = _render(tree, rng)
    return Example(input=f"{text} is", target=str(_value(tree)))


# ---------------------------------------------------------------- verifier

_TOKEN = re.compile(r"\(|\)|[A-Za-z_]+|\S+")
_WORDS = {"true", "false", "not", "and", "or", "(", ")"}
_TAIL = re.compile(r"(?:\s*(?:\bis\b|=|\bequals\b|\bevaluates to\b|[?.:]))+\s*$", re.IGNORECASE)
_HEAD = re.compile(r"^\s*(?:what is|what's|evaluate)\b", re.IGNORECASE)


class _Parser:
    """Recursive descent over tokens: or_expr := and_expr (or and_expr)*; and_expr := not_expr
    (and not_expr)*; not_expr := not not_expr | atom; atom := true | false | ( or_expr )."""

    def __init__(self, tokens: list[str]):
        self.tokens, self.pos, self.depth = tokens, 0, 0

    def peek(self) -> str | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def take(self) -> str:
        tok = self.peek()
        if tok is None:
            raise ValueError("unexpected end")
        self.pos += 1
        return tok

    def or_expr(self) -> bool:
        value = self.and_expr()
        while self.peek() == "or":
            self.take()
            right = self.and_expr()
            value = value or right
        return value

    def and_expr(self) -> bool:
        value = self.not_expr()
        while self.peek() == "and":
            self.take()
            right = self.not_expr()
            value = value and right
        return value

    def not_expr(self) -> bool:
        self.depth += 1
        if self.depth > _MAX_DEPTH:
            raise ValueError("too deep")
        if self.peek() == "not":
            self.take()
            value = not self.not_expr()
        else:
            value = self.atom()
        self.depth -= 1
        return value

    def atom(self) -> bool:
        tok = self.take()
        if tok in ("true", "false"):
            return tok == "true"
        if tok == "(":
            value = self.or_expr()
            if self.take() != ")":
                raise ValueError("missing )")
            return value
        raise ValueError(f"unexpected {tok!r}")


def evaluate(question: str) -> bool | None:
    """The value of the Boolean expression in `question` ("... is" optional), or None if unparsable."""
    text = question.rsplit(":", 1)[-1]  # "Evaluate this: <expr> is" -> "<expr> is"
    text = _HEAD.sub("", _TAIL.sub("", text))
    tokens = [t.casefold() for t in _TOKEN.findall(text)]
    if not tokens or any(t not in _WORDS for t in tokens):
        return None
    parser = _Parser(tokens)
    try:
        value = parser.or_expr()
    except (ValueError, RecursionError):
        return None
    return value if parser.pos == len(tokens) else None


def verify(question: str, answer: str) -> bool | None:
    """True if `answer` ("True"/"False", any case) is the value of the expression; None if the
    question cannot be parsed."""
    value = evaluate(question)
    if value is None:
        return None
    return normalize_answer(answer, "bool") == str(value).casefold()


def solve(question: str) -> str | None:
    """The answer ("True"/"False") to `question`, or None if it cannot be parsed."""
    value = evaluate(question)
    return None if value is None else str(value)


# ---------------------------------------------------------------- worked rationale


def _value_of(tokens: list[str]) -> bool:
    parser = _Parser(tokens)
    value = parser.or_expr()
    if parser.pos != len(tokens):
        raise ValueError("trailing tokens")
    return value


def explain(question: str) -> str | None:
    """Step-by-step reasoning: each innermost parenthesis in turn, then the rest; None if unparsable.
    "not ( True ) and ( False or True ) is" -> "False or True is True. not True and True is False.
    So the answer is False. <ans>False</ans>"."""
    value = evaluate(question)
    if value is None:
        return None
    text = _HEAD.sub("", _TAIL.sub("", question.rsplit(":", 1)[-1]))
    tokens = [t.casefold() for t in _TOKEN.findall(text)]
    steps = []
    while ")" in tokens:
        close = tokens.index(")")
        open_ = max(i for i in range(close) if tokens[i] == "(")
        inner = tokens[open_ + 1 : close]
        result = str(_value_of(inner)).casefold()
        if len(inner) > 1:
            steps.append(f"{_show(inner)} is {_show([result])}.")
        tokens[open_ : close + 1] = [result]
    if len(tokens) > 1:
        steps.append(f"{_show(tokens)} is {value}.")
    return " ".join(steps + [f"So the answer is {value}. <ans>{value}</ans>"])


def _show(tokens: list[str]) -> str:
    return " ".join(t.capitalize() if t in ("true", "false") else t for t in tokens)
