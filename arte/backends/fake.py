"""`fake`: a deterministic simulator of a teacher and a student on the built-in tasks.

It stands in for the *generation engine* only, so the pipeline's logic (parsing, de-duplication,
scoring, pairing, filtering, resume) can be tested fast and offline; DPO, SFT and evaluation still
run real (tiny) models. It recognises the pipeline's own prompt formats (`common.prompts`,
`arte.stages.elicit`) and answers from the built-in tasks' exact solvers:

- brainstorm prompt: 5 new questions of the named built-in task; some targets are wrong and some
  blocks malformed, so the filters and the unparsable counter have work;
- student prompt (with a demonstration): correct with a probability set by a hash of the
  demonstration, so drafts genuinely differ in how much they "help";
- teacher rationale prompt: "The answer is X. <ans>X</ans>", X right with a hash-set probability;
  sampled (temperature > 0) rationales depend on the seed too, and one in five leaves out the tags
  ("The answer is X."), as small teachers do.

Everything is a pure function of (prompt, seed): re-runs give identical text. Never used by default.
$ARTE_FAKE_DELAY_S (seconds per generate call) slows it down so tests can kill a stage half-way.
"""

from __future__ import annotations

import hashlib
import os
import random
import re
import time
from collections.abc import Sequence

from arte.backends.base import Generation, SamplingParams
from arte.backends.decoding import find_stop
from common.prompts import ANSWER_HINT, STEP_BY_STEP

_TASK_NAME = re.compile(r"^(\w+) is a task whose description is:")
_LAST_QUESTION = re.compile(r"Question: (.*) Answer: " + re.escape(STEP_BY_STEP) + r"\s*$", re.S)


def _unit(*parts: object) -> float:
    """A deterministic number in [0, 1) from the parts."""
    digest = hashlib.sha256("\x1f".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def _wrong(answer: str) -> str:
    if answer in ("True", "False"):
        return "False" if answer == "True" else "True"
    if re.fullmatch(r"-?\d+", answer):
        return str(int(answer) + 1)
    return " ".join(reversed(answer.split()))


class FakeBackend:
    """Simulated teacher + student (see module docstring). `cfg.model` is not read here."""

    name = "fake"

    def __init__(self, cfg) -> None:
        self.cfg = cfg
        self.calls = 0

    def generate(self, prompts: Sequence[str], params: SamplingParams) -> list[Generation]:
        self.calls += 1
        time.sleep(float(os.environ.get("ARTE_FAKE_DELAY_S", "0")))
        return [
            self._one(p, params, params.seeds[i] if params.seeds else params.seed)
            for i, p in enumerate(prompts)
        ]

    def _one(self, prompt: str, params: SamplingParams, seed: int) -> Generation:
        name = _TASK_NAME.match(prompt)
        sampled = seed if params.temperature > 0 else None
        text = self._brainstorm(name.group(1), prompt, seed) if name else self._answer(prompt, sampled)
        words = text.split(" ")
        finish = "stop"
        if len(words) > params.max_new_tokens:
            text, finish = " ".join(words[: params.max_new_tokens]), "length"
        cut = find_stop(text, params.stop)
        if cut is not None:
            text, finish = text[:cut], "stop"
        return Generation(text, finish, len(prompt.split()), len(text.split()))

    def _brainstorm(self, task: str, prompt: str, seed: int) -> str:
        from common.tasks.builtin import BUILTIN_TASKS, draw_builtin_questions

        if task not in BUILTIN_TASKS:
            return "I cannot write questions for this task."
        rng = random.Random(f"{prompt}\x1f{seed}")
        blocks = []
        for i, ex in enumerate(draw_builtin_questions(task, rng, 5), start=4):
            target = _wrong(ex.target) if rng.random() < 0.15 else ex.target
            if rng.random() < 0.1:
                blocks.append(f"<Question_{i}><input>{ex.input}</input></Question_{i}>")  # no target
                continue
            blocks.append(f"<Question_{i}><input>{ex.input}</input><target>{target}</target></Question_{i}>")
        return blocks[0].removeprefix("<Question_4><input>") + "\n" + "\n".join(blocks[1:])

    def _answer(self, prompt: str, sampled: int | None = None) -> str:
        from common.tasks.builtin import BUILTIN_TASKS, solve_builtin

        m = _LAST_QUESTION.search(prompt)
        if not m:
            return "I do not know."
        question = m.group(1).strip()
        truth = next((a for t in BUILTIN_TASKS if (a := solve_builtin(t, question)) is not None), None)
        if truth is None:
            return "I do not know."
        head = prompt[: m.start()]
        if ANSWER_HINT in prompt:  # the student: how much the demonstration helps decides its skill
            skill = 0.15 + 0.7 * _unit("demo", self.cfg.model, head)
        else:  # the teacher writing a rationale
            skill = 0.5 + 0.45 * _unit("teacher", head[:200])
        key = ("q", head, question) if sampled is None else ("q", head, question, sampled)
        answer = truth if _unit(*key) < skill else _wrong(truth)
        if sampled is not None and _unit("untagged", *key) < 0.2:
            return f" The answer is {answer}."
        return f" The answer is {answer}. <ans>{answer}</ans>"

    def loglikelihood(self, requests: Sequence[tuple[str, str]]) -> list[float]:
        return [-(1.0 + 5.0 * _unit("ll", c, x)) * max(1, len(x.split())) for c, x in requests]

    def close(self) -> None:
        pass
