"""navigate (BBH): "If you follow these instructions, do you return to the starting point? Take 3
steps. Turn around. Take 3 steps. Options: - Yes - No" -> "Yes".

Two forms, as in BBH: "Always face forward." with steps forward/backward/left/right, or plain steps
with turns (left, right, around). Half the generated questions return to the start. The verifier
walks the instructions sentence by sentence (numbers as digits or words); one it cannot read makes
the question unverifiable (None).
"""

from __future__ import annotations

import random
import re

from common.tasks.answers import normalize_answer, words_to_int
from common.tasks.base import Example

NAME = "navigate"
DESCRIPTION = (
    "Given a series of navigation instructions, determine whether one would end up back at the "
    "starting point."
)
ANSWER_KIND = "text"

HEAD = "If you follow these instructions, do you return to the starting point?"
OPTIONS = "Options:\n- Yes\n- No"
_HEADINGS = [(0, 1), (1, 0), (0, -1), (-1, 0)]  # north, east, south, west (clockwise)
_HEADING_NAMES = ["north", "east", "south", "west"]
_RELATIVE = {"forward": 0, "right": 1, "backward": 2, "left": 3}
_TURNS = {"right": 1, "around": 2, "left": 3}

# ---------------------------------------------------------------- generator


def _steps(n: int) -> str:
    return f"{n} step" + ("" if n == 1 else "s")


def _walk(rng: random.Random, forward_only: bool) -> list[str]:
    moves = []
    for _ in range(rng.randint(2, 5)):
        n = rng.randint(1, 10)
        if forward_only:
            moves.append(f"Take {_steps(n)} {rng.choice(list(_RELATIVE))}.")
        elif rng.random() < 0.4:
            moves.append(f"Turn {rng.choice(list(_TURNS))}.")
        else:
            moves.append(f"Take {_steps(n)}.")
    return moves


def _return_moves(position: tuple[int, int], heading: int, forward_only: bool) -> list[str]:
    """Instructions that bring the walker from `position` (facing `heading`) back to the start."""
    x, y = position
    out = []
    for dx, dy, n in ((-x, 0, abs(x)), (0, -y, abs(y))):
        if n == 0:
            continue
        target = _HEADINGS.index((dx // n, dy // n))
        turn = (target - heading) % 4
        if forward_only:
            out.append(f"Take {_steps(n)} {next(k for k, v in _RELATIVE.items() if v == turn)}.")
        else:
            if turn:
                out.append(f"Turn {next(k for k, v in _TURNS.items() if v == turn)}.")
                heading = target
            out.append(f"Take {_steps(n)}.")
    return out


def generate(rng: random.Random) -> Example:
    """One question in either form; the target comes from walking it (`walk`)."""
    forward_only = rng.random() < 0.5
    moves = _walk(rng, forward_only)
    if rng.random() < 0.5:
        end = walk(moves, forward_only)
        moves += _return_moves(end[0], end[1], forward_only)
    text = " ".join((["Always face forward."] if forward_only else []) + moves)
    question = f"{HEAD} {text}\n{OPTIONS}"
    return Example(input=question, target=solve(question) or "No")


# ---------------------------------------------------------------- verifier

_SENTENCE = re.compile(r"[^.]+\.")
_TAKE = re.compile(r"^take (\w+) steps?(?: (?:to the )?(forward|backward|left|right))?$")
_TURN = re.compile(r"^turn (left|right|around)$")


def _number(word: str) -> int | None:
    if word.isdigit():
        return int(word)
    return words_to_int(word)


def walk(moves: list[str], forward_only: bool) -> tuple[tuple[int, int], int, list[str]] | None:
    """Follow the instructions: ((x, y), heading, one note per instruction), or None if one is
    unreadable. Facing north at the start; "Always face forward." fixes the heading."""
    x = y = heading = 0
    notes = []
    for move in moves:
        text = move.strip().rstrip(".").casefold()
        if m := _TAKE.match(text):
            n = _number(m.group(1))
            if n is None:
                return None
            direction = (heading + _RELATIVE[m.group(2) or "forward"]) % 4
            dx, dy = _HEADINGS[direction]
            x, y = x + n * dx, y + n * dy
            notes.append(f"{_steps(n)} {_HEADING_NAMES[direction]}: ({x}, {y}).")
        elif (m := _TURN.match(text)) and not forward_only:
            heading = (heading + _TURNS[m.group(1)]) % 4
            notes.append(f"Turn {m.group(1)}: facing {_HEADING_NAMES[heading]}.")
        else:
            return None
    return (x, y), heading, notes


def _instructions(question: str) -> tuple[list[str], bool] | None:
    body = " ".join(question.split("Options:")[0].split())
    if HEAD.casefold() in body.casefold():
        body = body[body.casefold().index(HEAD.casefold()) + len(HEAD) :]
    sentences = [s.strip() for s in _SENTENCE.findall(body)]
    if not sentences or "".join(_SENTENCE.findall(body)).strip() != body.strip():
        return None  # text after the last full stop
    forward_only = sentences[0].casefold() == "always face forward."
    moves = sentences[1:] if forward_only else sentences
    return (moves, forward_only) if moves else None


def solve(question: str) -> str | None:
    """ "Yes" if the instructions lead back to the start, "No" if not, None if unreadable."""
    found = _instructions(question)
    walked = walk(*found) if found else None
    if walked is None:
        return None
    return "Yes" if walked[0] == (0, 0) else "No"


def verify(question: str, answer: str) -> bool | None:
    expected = solve(question)
    return None if expected is None else normalize_answer(answer, "text") == expected.casefold()


def explain(question: str) -> str | None:
    """Short step-by-step reasoning: each move with the heading it is taken in, then where they add
    up to. Turns are folded into the headings: with one note per turn and per move (and running
    coordinates), the 135M teacher closed its `<ans>` tag on 5 of 30 test questions within 96
    tokens, looping over the notes; in this form on 28 (docs/measurements.md, "Training sets from a 135M
    teacher")."""
    found = _instructions(question)
    walked = walk(*found) if found else None
    if walked is None:
        return None
    (x, y), _, notes = walked
    moves = [n.split(":")[0] for n in notes if not n.startswith("Turn ")]
    answer = "Yes" if (x, y) == (0, 0) else "No"
    where = "the starting point" if answer == "Yes" else "not the starting point"
    listed = ", ".join(moves) if moves else "none"
    summary = f"Moves: {listed}. They add up to ({x}, {y}), {where}."
    return f"{summary} So the answer is {answer}. <ans>{answer}</ans>"
