"""The prompt texts of the ARTE paper (arXiv 2406.19227, see docs/method.md), in one place.

The student's in-context prompt (preference scoring and evaluation):

    Task Description: {description} {ANSWER_HINT}
    Question: {demo question} Answer: Let's think step by step. {demo rationale}
    Question: {question} Answer: Let's think step by step.

where ANSWER_HINT is "Remember you should include your final answer with the tag <ans> and </ans>."

The teacher's rationale prompts (strategy prompts, `arte.stages.elicit`; the naive prompt, here) all
end their instructions with ANSWER_FORMAT. Prompt erasure removes the reasoning strategy from the
naive prompt, not the output format (docs/method.md, "Output format").
"""

from __future__ import annotations

from collections.abc import Sequence

ANSWER_HINT = "Remember you should include your final answer with the tag <ans> and </ans>."
STEP_BY_STEP = "Let's think step by step."
ANSWER_FORMAT = "Give your final answer as <ans>...</ans>."
STUDENT_STOP = ("</ans>", "\nQuestion:")
"""Stop decoding at the closing tag, or when the model starts inventing the next question."""
TEACHER_STOP = STUDENT_STOP
"""The same for the teacher's rationales: a small teacher that skips the tag goes on with a new
"Question:"; what it wrote before is kept (and may be repaired: `arte.stages.generate.tag_repair`)."""


def demonstration(question: str, rationale: str) -> str:
    """One solved example: the question and a rationale that ends with `<ans>...</ans>`."""
    return f"Question: {question} Answer: {STEP_BY_STEP} {rationale}"


def answer_only_rationale(target: str) -> str:
    """The rationale used for a labelled example that has no written reasoning (e.g. task seeds)."""
    return f"<ans>{target}</ans>"


def icl_prompt(description: str, demos: Sequence[tuple[str, str]], question: str) -> str:
    """The student prompt: task description, 0..n demonstrations (question, rationale), the question."""
    lines = [f"Task Description: {description} {ANSWER_HINT}"]
    lines += [demonstration(q, r) for q, r in demos]
    lines.append(f"Question: {question} Answer: {STEP_BY_STEP}")
    return "\n".join(lines)


def worked_example(question: str, target: str, rationale: str | None = None) -> str:
    """A solved example placed before the question in the teacher's rationale prompts (optional:
    `RunConfig.teacher_worked_example`). Small teachers need it to stay on the `<ans>` format; the
    paper's 70B teacher did not. `rationale` is written reasoning ending in `<ans>target</ans>` (the
    seed's, or the task's explainer); without one the example only states the answer."""
    shown = rationale.strip() if rationale else f"The answer is {target}. <ans>{target}</ans>"
    return f"Question: {question} Answer: {STEP_BY_STEP} {shown}\n"


def naive_prompt(description: str, question: str, example: str = "") -> str:
    """The rationale prompt without a reasoning strategy (prompt erasure): the aligned teacher must
    choose one itself. It keeps the output format (ANSWER_FORMAT). Used for rationale-level DPO pairs
    and tailored generation. `example` is an optional `worked_example` shown before the question."""
    head = f"Task Description: {description} {ANSWER_FORMAT}\n"
    return f"{head}{example}Question: {question} Answer: {STEP_BY_STEP}"


def render_question_block(input: str, target: str, index: int) -> str:
    """One question in the format the brainstorm prompt asks the teacher for."""
    return f"<Question_{index}><input>{input}</input><target>{target}</target></Question_{index}>"
