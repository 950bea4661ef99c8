"""The one small interface every inference backend implements (hf, llama_cpp, ...).

A backend takes raw prompt strings. It returns, for each prompt, the completion text *including*
the stop string that ended it (so a stop at "</ans>" keeps the closing tag for answer extraction).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol


@dataclass(frozen=True)
class SamplingParams:
    """How to decode. temperature 0 means greedy."""

    max_new_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    seed: int = 0
    seeds: tuple[int, ...] = ()
    """Per-prompt seeds: prompt i samples as it would alone in a call with seed seeds[i] (so calls
    can be grouped without changing their samples). Empty: derived from `seed` and the prompt's
    index (`arte.backends.decoding.prompt_seed`)."""


@dataclass(frozen=True)
class Generation:
    """One completion: its text (ending with the stop string when one matched) and token counts."""

    text: str
    finish_reason: Literal["stop", "length"]
    prompt_tokens: int
    completion_tokens: int


class Backend(Protocol):
    """Generate for a batch of prompts; score continuations by log-likelihood."""

    name: str

    def generate(self, prompts: Sequence[str], params: SamplingParams) -> list[Generation]:
        """One `Generation` per prompt, in the order given."""
        ...

    def loglikelihood(self, requests: Sequence[tuple[str, str]]) -> list[float]:
        """For each (context, continuation): sum of log p(continuation tokens | context), nats."""
        ...

    def close(self) -> None:
        """Free the model (and any threads/processes) now."""
        ...
