"""Generations as they finish, and groups of them (a draft's k answers, a task's test answers).

A stage used to hand a backend `call_size` prompts at a time and wait for the slowest of them: on
llama.cpp the batch then drained to a few sequences at the end of every call (scoring 32 drafts,
266 of 648 decode steps had at most 5 of 16 sequences in flight; streamed, 78 of 459, docs/measurements.md).
`generate_stream` decodes all of a stage's prompts as one continuous batch where the backend can
(`stream`, the llama_cpp backend) and yields each generation as soon as it is done; other backends
get `generate` calls of `call_size` prompts, yielded call by call. `stream_groups` turns that into
whole groups, so that a stage writes a record the moment its last generation arrives: a kill loses
only the groups still in flight.

Sampling seeds do not depend on how the prompts are cut into calls: prompt i of the stream samples
with `params.seeds[i]`, or, where no seeds are given, with `row_seed(params.seed, i)`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence

from arte.backends.base import Backend, Generation, SamplingParams
from arte.backends.decoding import row_seed


def generate_stream(
    backend: Backend, prompts: Sequence[str], params: SamplingParams, call_size: int
) -> Iterator[tuple[int, Generation]]:
    """(prompt index, generation) for every prompt, in the order they finish."""
    if not prompts:
        return
    if not params.seeds:
        params = dataclasses.replace(
            params, seeds=tuple(row_seed(params.seed, i) for i in range(len(prompts)))
        )
    if len(params.seeds) != len(prompts):
        raise ValueError(f"{len(params.seeds)} seeds for {len(prompts)} prompts")
    stream = getattr(backend, "stream", None)
    if stream is not None:
        yield from stream(prompts, params)
        return
    size = max(1, call_size)
    for start in range(0, len(prompts), size):
        stop = min(len(prompts), start + size)
        gens = backend.generate(
            prompts[start:stop], dataclasses.replace(params, seeds=params.seeds[start:stop])
        )
        if len(gens) != stop - start:
            raise RuntimeError(f"backend returned {len(gens)} generations for {stop - start} prompts")
        yield from enumerate(gens, start)


def stream_groups(
    backend: Backend, groups: Sequence[Sequence[str]], params: SamplingParams, call_size: int
) -> Iterator[tuple[int, list[Generation]]]:
    """(group index, its generations in prompt order) for every group, as each one completes.

    All prompts of all groups go into one `generate_stream`; `params.seeds`, when given, holds one
    seed per prompt of the flattened groups. An empty group is yielded first, with no generations."""
    owner: list[tuple[int, int]] = []
    for g, prompts in enumerate(groups):
        owner += [(g, j) for j in range(len(prompts))]
    got: list[list[Generation | None]] = [[None] * len(p) for p in groups]
    left = [len(p) for p in groups]
    for g, n in enumerate(left):
        if n == 0:
            yield g, []
    flat = [p for prompts in groups for p in prompts]
    for i, gen in generate_stream(backend, flat, params, call_size):
        g, j = owner[i]
        got[g][j] = gen
        left[g] -= 1
        if left[g] == 0:
            yield g, got[g]  # type: ignore[misc]
