"""Generations as they finish (`arte.backends.streaming`): the llama_cpp backend's continuous batch
over all of a stage's prompts against its `generate`, completion order, abandoned streams, the
call-by-call fallback of backends without `stream` (same seeds, same texts), and groups."""

from __future__ import annotations

import pytest

from arte.backends import BackendConfig, Generation, load_backend
from arte.backends.base import SamplingParams
from arte.backends.streaming import generate_stream, stream_groups

PROMPTS = [
    "Question: what is 2 + 3? Answer:",
    "The capital of France is",
    "def fibonacci(n):",
    "1, 2, 3, 4,",
    "Question: what is 7 * 6? Answer:",
    "Once upon a time",
    "Zebra",
]


def tiny_backend(tiny_model, width: int):
    llama_cpp = pytest.importorskip("llama_cpp")
    assert llama_cpp.__name__
    cfg = BackendConfig(
        name="llama_cpp", model=str(tiny_model.gguf_path), threads=1, n_ctx=256, batch_size=width
    )
    return load_backend(cfg)


class CallsOnly:
    """A backend without `stream`: the fallback path (calls of `call_size` prompts)."""

    def __init__(self, inner):
        self.inner, self.calls = inner, []

    def generate(self, prompts, params):
        self.calls.append(len(prompts))
        return self.inner.generate(prompts, params)


def test_stream_gives_generate_s_texts_as_each_finishes(tiny_model):
    """One continuous batch (width 2) over prompts with budgets that differ through their stop
    strings: every prompt comes out once, with generate's text, and a short one before a long one
    that started with it."""
    b = tiny_backend(tiny_model, 2)
    try:
        params = SamplingParams(max_new_tokens=24, stop=(" the", "\n"))
        want = b.generate(PROMPTS, params)
        order, got = [], {}
        for i, gen in generate_stream(b, PROMPTS, params, call_size=2):
            order.append(i)
            got[i] = gen
        assert sorted(order) == list(range(len(PROMPTS)))
        assert [got[i].text for i in range(len(PROMPTS))] == [g.text for g in want]
    finally:
        b.close()


def test_short_sequences_leave_and_waiting_ones_join_before_a_long_one_ends(tiny_model):
    """Two slots, budgets 20, 2, 2, 2: the three short prompts pass through the second slot while
    the first prompt is still decoding, and each is yielded the moment it is done."""
    from common.token_sampling import SamplingSetup

    b = tiny_backend(tiny_model, 2)
    try:
        ids = [b.encode(p) for p in PROMPTS[:4]]
        out = list(b._decoder().stream(ids, [20, 2, 2, 2], SamplingSetup(), [0] * 4, lambda i, t: None))
        assert [i for i, _, _ in out] == [1, 2, 3, 0]
        assert [len(tokens) for _, tokens, _ in out] == [2, 2, 2, 20]
    finally:
        b.close()


def test_an_abandoned_stream_frees_its_sequences(tiny_model):
    """Stopping after the first generation leaves no sequence behind: the next call on the same
    decoder gives what a fresh backend gives."""
    b, fresh = tiny_backend(tiny_model, 3), tiny_backend(tiny_model, 3)
    try:
        params = SamplingParams(max_new_tokens=16)
        stream = generate_stream(b, PROMPTS, params, call_size=3)
        next(stream)
        stream.close()
        assert [g.text for g in b.generate(PROMPTS, params)] == [
            g.text for g in fresh.generate(PROMPTS, params)
        ]
    finally:
        b.close()
        fresh.close()


def test_sampled_texts_do_not_depend_on_streaming_or_on_the_call_size(tiny_model):
    """Seeded sampling: the continuous batch, and calls of 2 or 5 prompts on a backend without
    `stream`, give every prompt the same text (its seed is its own, not its place in a call)."""
    b = tiny_backend(tiny_model, 4)
    try:
        params = SamplingParams(max_new_tokens=16, temperature=1.0, top_p=0.95, seed=3)
        streamed = dict(generate_stream(b, PROMPTS, params, call_size=4))
        for size in (2, 5):
            calls = CallsOnly(b)
            chunked = dict(generate_stream(calls, PROMPTS, params, call_size=size))
            assert calls.calls == [size] * (len(PROMPTS) // size) + (
                [len(PROMPTS) % size] if len(PROMPTS) % size else []
            )
            assert {i: g.text for i, g in chunked.items()} == {i: g.text for i, g in streamed.items()}
        other = dict(
            generate_stream(b, PROMPTS, SamplingParams(max_new_tokens=16, temperature=1.0, seed=4), 4)
        )
        assert [other[i].text for i in range(len(PROMPTS))] != [streamed[i].text for i in range(len(PROMPTS))]
    finally:
        b.close()


class Echo:
    """Each prompt's generation is the prompt itself, with `stream` in reverse order."""

    def __init__(self):
        self.streamed = []

    def _gen(self, p: str) -> Generation:
        return Generation(p, "stop", 1, 1)

    def generate(self, prompts, params):
        return [self._gen(p) for p in prompts]

    def stream(self, prompts, params):
        assert len(params.seeds) == len(prompts)
        self.streamed.append(len(prompts))
        for i in reversed(range(len(prompts))):
            yield i, self._gen(prompts[i])


def test_groups_come_out_whole_and_in_prompt_order_as_each_completes():
    backend = Echo()
    groups = [["a0", "a1"], [], ["b0"], ["c0", "c1", "c2"]]
    out = list(stream_groups(backend, groups, SamplingParams(), call_size=2))
    assert backend.streamed == [6]  # one stream for all groups
    assert [g for g, _ in out] == [1, 3, 2, 0]  # the empty group first, then as they complete
    assert {g: [x.text for x in gens] for g, gens in out} == {i: list(p) for i, p in enumerate(groups)}


def test_wrong_seed_count_is_refused():
    with pytest.raises(ValueError, match="2 seeds for 3 prompts"):
        list(generate_stream(Echo(), ["a", "b", "c"], SamplingParams(seeds=(1, 2)), call_size=2))
