"""Task questions too long for a model's context, refused when the tasks are loaded (before any
stage), naming the file and line, instead of at evaluate after the whole pipeline.

No tokenizer is loaded here: a question of C characters is at least C / CHARS_PER_TOKEN tokens
(English BPE averages ~4 characters a token; 8 leaves room for long tokens), and one whose lower
bound is above the smallest context of the models that read task questions is refused. A question
just under that bound is still checked exactly, in tokens, by the engine that runs it.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from arte.backends import BackendConfig
from arte.models import BUILT_IN_RANDOM, materialize_tiny_random
from common.errors import UserError

if TYPE_CHECKING:
    from arte.run_config import RunConfig

CHARS_PER_TOKEN = 8
"""At most this many characters a token, on average over a long text (a lower bound on tokens)."""


def _context_of(b: BackendConfig, flag: str) -> tuple[int, str] | None:
    """(tokens, what sets it) for an engine: llama_cpp's --n_ctx, or a local HF model's
    max_position_embeddings; None where it is not known without loading anything."""
    if b.name == "llama_cpp":
        return b.n_ctx, f"{flag}.n_ctx"
    if b.name not in ("hf", "vllm") or not b.model:
        return None
    from pathlib import Path

    # a tiny random model is built (once, a second) as the model check right after would build it
    local = materialize_tiny_random(b.model) if b.model in BUILT_IN_RANDOM else Path(b.model).expanduser()
    try:
        n = json.loads((local / "config.json").read_text()).get("max_position_embeddings")
    except (OSError, ValueError):
        return None
    return (n, f"{b.model}'s max_position_embeddings, {flag}") if isinstance(n, int) else None


def smallest_context(cfg: RunConfig) -> tuple[int, str] | None:
    """The smallest known context of the engines that read task questions, and what sets it."""
    ev = cfg.evaluate.backend
    roles = {"--teacher": cfg.teacher, "--student": cfg.student, "--evaluate.backend": ev}
    if not ev.model:  # evaluate runs the student's model on its engine
        import dataclasses

        roles["--evaluate.backend"] = dataclasses.replace(ev, model=cfg.student.model)
    known = [c for flag, b in roles.items() if (c := _context_of(b, flag)) is not None]
    return min(known) if known else None


def check_example_lengths(tasks: list, cfg: RunConfig) -> None:
    """UserError naming FILE:LINE for the first question that cannot fit the smallest context."""
    context = smallest_context(cfg)
    if context is None:
        return
    tokens, what = context
    for task in tasks:
        for split in ("seeds", "validation", "test"):
            for i, e in enumerate(getattr(task, split)):
                if len(e.input) > CHARS_PER_TOKEN * tokens:
                    where = e.where or f"task {task.name} {split} question {i}"
                    raise UserError(
                        f"{where}: the question is {len(e.input):,} characters, at least "
                        f"{len(e.input) // CHARS_PER_TOKEN:,} tokens; the context is {tokens} tokens "
                        f"({what}): shorten or remove it"
                    )
