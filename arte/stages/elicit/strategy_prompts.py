"""The teacher's reasoning-strategy prompts (ARTE step 1, n per question): the four generic ones, and
those a run config writes for all tasks or for one task (the paper wrote four per BBH task, Table 12).

Config (`elicit`):

    strategies: [expert, rules, plain, eliminate]       # the names used, n = 4, for every task
    strategy_prompts:                                   # name -> text, for every task
      rules: "{description} Recall the rules of the task first, then apply them one by one."
    task_strategy_prompts:                              # task -> {name -> text}: that task only
      navigate: {expert: "You are a surveyor. Track the position after every move."}

A name's text for a task is its `task_strategy_prompts` entry, else its `strategy_prompts` entry, else
the built-in text. `{task}` and `{description}` in a text are replaced by the task's name and
description; no other brace is read. Every strategy prompt, built-in or not, ends its instructions
with the standard output-format sentence (`common.prompts.ANSWER_FORMAT`), appended here, so strategy
prompts and the naive prompt of prompt erasure differ only by the strategy (docs/method.md). A text
that ends with that exact sentence keeps it once; a text that asks for `<ans>` in any other words is
refused (the two prompts would then differ in the format too).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from common.prompts import ANSWER_FORMAT

DEFAULT_STRATEGIES: dict[str, str] = {
    "expert": "You are an expert in {task}. {description} Solve the question the way an expert would, "
    "following the task's procedure one step at a time.",
    "rules": "{description} First recall the rules needed for this task, then compute the answer step by "
    "step.",
    "plain": "{description}",
    "eliminate": "{description} Consider the candidate answers, eliminate the wrong ones, and pick the best.",
}
"""Generic reasoning strategies (n = 4, as in the paper); overridden by `elicit.strategy_prompts` and
`elicit.task_strategy_prompts`."""

_NAME = re.compile(r"^[A-Za-z0-9_-]+$")
"""Strategy names become part of draft ids ("qid/strategy"): letters, digits, _ and - only."""


def checked_text(key: str, text: object) -> str:
    """A config's strategy text, stripped and without the standard format sentence (appended later);
    ValueError naming `key` when it is not usable."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"{key} must be a non-empty string (the strategy's instructions), got {text!r}")
    body = text.strip()
    if body.endswith(ANSWER_FORMAT):
        body = body.removesuffix(ANSWER_FORMAT).rstrip()
    if "<ans>" in body or "</ans>" in body:
        raise ValueError(
            f"{key} asks for the <ans> tag in its own words; write the strategy only: every strategy prompt "
            f"ends with the standard sentence {ANSWER_FORMAT!r} (appended for you), as the naive prompt does"
        )
    if not body:
        raise ValueError(f"{key} holds only the format sentence; write the strategy's instructions")
    return body


def checked_prompts(key: str, prompts: object) -> dict[str, str]:
    """{name: text} of one config mapping, every name and text checked (ValueError naming the key)."""
    if not isinstance(prompts, Mapping):
        raise ValueError(f"{key} must be a mapping of strategy name -> prompt text, got {prompts!r}")
    out = {}
    for name, text in prompts.items():
        if not isinstance(name, str) or not _NAME.match(name):
            raise ValueError(f"{key}: strategy name {name!r} must be letters, digits, _ or - only")
        out[name] = checked_text(f"{key}.{name}", text)
    return out


def strategy_text(
    name: str,
    task_name: str,
    description: str,
    prompts: Mapping[str, str],
    task_prompts: Mapping[str, Mapping[str, str]],
) -> str:
    """The instructions of strategy `name` for one task, format sentence included."""
    own = task_prompts.get(task_name, {})
    body = own.get(name) or prompts.get(name) or DEFAULT_STRATEGIES[name]
    body = body.replace("{task}", task_name).replace("{description}", description)
    return f"{body} {ANSWER_FORMAT}"


def undefined_strategies(
    strategies: list[str],
    task_names: list[str],
    prompts: Mapping[str, str],
    task_prompts: Mapping[str, Mapping[str, str]],
) -> dict[str, list[str]]:
    """{task: names in `strategies` that have no text for it} (empty when every task has them all)."""
    missing = {}
    for task in task_names:
        known = set(DEFAULT_STRATEGIES) | set(prompts) | set(task_prompts.get(task, {}))
        gaps = [s for s in strategies if s not in known]
        if gaps:
            missing[task] = gaps
    return missing
