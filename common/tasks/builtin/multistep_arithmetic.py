"""multistep_arithmetic (BBH multistep_arithmetic_two): "((-1 + 2) * (3 - -4)) =" -> "7".

Two parenthesised groups of 2-4 integers in -9..9 joined by + - *, inside one outer pair of
parentheses. The generator computes the target from the numbers; the verifier parses the question
text with a recursive-descent parser over exact fractions (so "/" is checked exactly too). No eval.
"""

from __future__ import annotations

import random
import re
from fractions import Fraction

from common.tasks.answers import parse_number
from common.tasks.base import Example

NAME = "multistep_arithmetic"
DESCRIPTION = "Solve multi-step arithmetic problems."
ANSWER_KIND = "number"

_OPS = ("+", "-", "*")
_MAX_DEPTH = 100  # deeper nesting is refused rather than risking a RecursionError

# ---------------------------------------------------------------- generator


def _group_value(numbers: list[int], ops: list[str]) -> int:
    """Value of n0 op0 n1 op1 ... with * before + and - (left to right within each)."""
    terms, signs = [numbers[0]], []
    for op, n in zip(ops, numbers[1:], strict=True):
        if op == "*":
            terms[-1] *= n
        else:
            signs.append(op)
            terms.append(n)
    total = terms[0]
    for sign, term in zip(signs, terms[1:], strict=True):
        total = total + term if sign == "+" else total - term
    return total


def _group(rng: random.Random) -> tuple[str, int]:
    size = rng.choice((2, 3, 4))
    numbers = [rng.randint(-9, 9) for _ in range(size)]
    ops = [rng.choice(_OPS) for _ in range(size - 1)]
    text = str(numbers[0]) + "".join(f" {op} {n}" for op, n in zip(ops, numbers[1:], strict=True))
    return f"({text})", _group_value(numbers, ops)


def generate(rng: random.Random) -> Example:
    """One question "((a op b ...) op (c op d ...)) =" with its integer answer."""
    (left, a), (right, b) = _group(rng), _group(rng)
    op = rng.choice(_OPS)
    value = a + b if op == "+" else a - b if op == "-" else a * b
    return Example(input=f"({left} {op} {right}) =", target=str(value))


# ---------------------------------------------------------------- verifier

_TOKEN = re.compile(r"\d+(?:\.\d+)?|[-+*/()]|\S")
_SYMBOLS = str.maketrans({"\u2212": "-", "\u00d7": "*", "\u00b7": "*", "\u00f7": "/", "[": "(", "]": ")"})
_TAIL = re.compile(r"(?:\s*(?:=|\?|\.|\bis\b))+\s*$", re.IGNORECASE)
_HEAD = re.compile(r"^\s*(?:what is|what's|calculate|compute|evaluate|solve)\b", re.IGNORECASE)


class _Parser:
    """expr := term ((+|-) term)*; term := unary ((*|/) unary)*; unary := (+|-) unary | atom;
    atom := number | ( expr )."""

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

    def expr(self) -> Fraction:
        value = self.term()
        while self.peek() in ("+", "-"):
            op = self.take()
            right = self.term()
            value = value + right if op == "+" else value - right
        return value

    def term(self) -> Fraction:
        value = self.unary()
        while self.peek() in ("*", "/"):
            op = self.take()
            right = self.unary()
            if op == "/" and right == 0:
                raise ValueError("division by zero")
            value = value * right if op == "*" else value / right
        return value

    def unary(self) -> Fraction:
        self.depth += 1
        if self.depth > _MAX_DEPTH:
            raise ValueError("too deep")
        if self.peek() in ("+", "-"):
            value = -self.unary() if self.take() == "-" else self.unary()
        else:
            value = self.atom()
        self.depth -= 1
        return value

    def atom(self) -> Fraction:
        tok = self.take()
        if tok == "(":
            value = self.expr()
            if self.take() != ")":
                raise ValueError("missing )")
            return value
        if tok[0].isdigit():
            return Fraction(tok)
        raise ValueError(f"unexpected {tok!r}")


def evaluate(question: str) -> Fraction | None:
    """The exact value of the arithmetic expression in `question` (trailing "=" optional), or None."""
    text = question.translate(_SYMBOLS).rsplit(":", 1)[-1]
    text = _HEAD.sub("", _TAIL.sub("", text))
    tokens = _TOKEN.findall(text)
    if not tokens or any(not (t[0].isdigit() or t in "+-*/()") for t in tokens):
        return None
    if not any(t[0].isdigit() for t in tokens) or len(tokens) > 1000:
        return None
    parser = _Parser(tokens)
    try:
        value = parser.expr()
    except (ValueError, RecursionError):
        return None
    return value if parser.pos == len(tokens) else None


def verify(question: str, answer: str) -> bool | None:
    """True if `answer` equals the exact value of the expression; None if the question is unparsable."""
    value = evaluate(question)
    if value is None:
        return None
    got = parse_number(answer)
    return got is not None and Fraction(got) == value


def solve(question: str) -> str | None:
    """The integer answer to `question`, or None if it is unparsable or not a whole number."""
    value = evaluate(question)
    return str(value.numerator) if value is not None and value.denominator == 1 else None


# ---------------------------------------------------------------- worked rationale

_UNARY_MINUS = re.compile(r"(^|[-+*/(] )- (\d)")


def _show(tokens: list[str]) -> str:
    return _UNARY_MINUS.sub(r"\1-\2", " ".join(tokens))


def _number_tokens(value: Fraction) -> list[str]:
    text = str(value.numerator) if value.denominator == 1 else f"{value.numerator} / {value.denominator}"
    return ["-", text.lstrip("-")] if value < 0 else [text]


def explain(question: str) -> str | None:
    """Step-by-step reasoning: each innermost parenthesis in turn, then the rest; None if the
    question is unparsable or its value is not a whole number.
    "((-1 + 2) * (3 - -4)) =" -> "-1 + 2 = 1. 3 - -4 = 7. 1 * 7 = 7. So the answer is 7. <ans>7</ans>"."""
    answer = solve(question)
    if answer is None:
        return None
    text = _HEAD.sub("", _TAIL.sub("", question.translate(_SYMBOLS).rsplit(":", 1)[-1]))
    tokens = _TOKEN.findall(text)
    steps = []
    while ")" in tokens:
        close = tokens.index(")")
        open_ = max(i for i in range(close) if tokens[i] == "(")
        inner = tokens[open_ + 1 : close]
        parser = _Parser(inner)
        value = parser.expr()
        result = _number_tokens(value)
        if len(inner) > 1 or inner != result:
            steps.append(f"{_show(inner)} = {_show(result)}.")
        tokens[open_ : close + 1] = result
    if len(tokens) > 1 and _show(tokens) != answer:
        steps.append(f"{_show(tokens)} = {answer}.")
    return " ".join(steps + [f"So the answer is {answer}. <ans>{answer}</ans>"])
