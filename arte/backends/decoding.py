"""Decoding rules shared by every backend, so they stop and seed identically."""

from __future__ import annotations

from collections.abc import Sequence

from common.token_ids import common_prefix_len


def find_stop(text: str, stops: Sequence[str]) -> int | None:
    """End index (exclusive) of the stop string that completes first in `text`, or None."""
    ends = [i + len(s) for s in stops if s and (i := text.find(s)) >= 0]
    return min(ends) if ends else None


def row_seed(seed: int, index: int) -> int:
    return (seed * 1_000_003 + index) % (2**63)


def prompt_seed(params, index: int) -> int:
    """The sampling seed of prompt `index` of a call: from `params.seeds` when given (prompt i then
    samples exactly as the only prompt of a call with seed seeds[i]), else from (seed, index)."""
    if params.seeds:
        return row_seed(params.seeds[index], 0)
    return row_seed(params.seed, index)


def split_context(encode, rendered_context: str, continuation: str, tokenizer) -> tuple[list[int], list[int]]:
    """(context ids, continuation ids) of `rendered_context + continuation` tokenized as one text.

    The boundary is where the tokens of the context alone stop matching the tokens of the whole; a
    token that merges across the boundary counts as continuation. An empty context is conditioned on
    the tokenizer's BOS (or EOS where there is no BOS)."""
    whole = encode(rendered_context + continuation)
    n = common_prefix_len(encode(rendered_context), whole)
    ctx, cont = whole[:n], whole[n:]
    start = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    return (ctx or [start]), cont
