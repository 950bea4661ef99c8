"""Batched multi-sequence decoding on one llama.cpp model (continuous batching).

A small model on a CPU is memory-bound at one sequence: every decoded token streams all the weights.
Decoding several sequences in one `llama_decode` call shares that stream. `BatchedDecoder` keeps up
to `width` sequences in flight, each in its own llama.cpp sequence id of one context with a unified
KV cache:

- Prompts run in the order given (the backend sorts them by token sequence, so prompts that share a
  prefix, e.g. ARTE's k preference questions behind one demonstration, come one after the other).
- Prefix sharing: the last prompt whose prefill finished is kept in a holder sequence. A new prompt
  gets the KV cells of its common prefix with it by `llama_memory_seq_cp` (no compute, no copy: in
  a unified cache the cells are just tagged with one more sequence id) and prefills only the rest.
  A prompt that would share more with a prompt still prefilling waits one step for it.
- Every step builds one batch: the last token of each generating sequence, then prompt chunks of the
  sequences being prefilled, up to `n_batch` tokens. Finished sequences leave (their cells are
  removed) and waiting prompts take their slot.
- Sampling happens here, vectorised over the rows of a step (`common.token_sampling`): greedy is
  one argmax; with temperature > 0, the exponential race (Gumbel-max) with noise from the
  sequence's own `numpy` generator, seeded by the caller. A sequence's tokens therefore depend only on its own
  prompt, seed and logits, not on which other sequences share the batch; float differences of the
  kernels at other batch shapes change a sampled token about as rarely as a greedy one.
- Stopping is the caller's: `stop(index, tokens)` returns a finish reason or None after each token.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np

from common.token_ids import common_prefix_len
from common.token_sampling import RowSampler, SamplingSetup

StopRule = Callable[[int, list[int]], str | None]
"""(prompt index, tokens so far) -> "stop" / "length" to finish the sequence, or None to go on."""


@dataclass
class _Seq:
    """One prompt in flight: its slot (llama.cpp sequence id), prompt, what is left to prefill."""

    index: int
    slot: int
    prompt: list[int]
    pending: list[int]
    pos: int
    budget: int
    rng: np.random.Generator | None
    tokens: list[int] = field(default_factory=list)
    last: int = -1


class BatchedDecoder:
    """Up to `width` sequences decoded together on `model` (a llama.cpp model pointer).

    `context_params`: llama.cpp context params to start from (threads, flash attention, KV types);
    the context made here holds (width + 1) * n_ctx_per_seq KV cells, shared by all sequences.
    """

    def __init__(self, lib, model, context_params, *, width: int, n_ctx_per_seq: int, n_batch: int = 512):
        if width < 1:
            raise ValueError(f"width must be >= 1, got {width}")
        self.lib, self.width, self.holder = lib, width, width  # seq ids 0..width-1 + the holder
        params = lib.llama_context_params()
        ctypes_copy(params, context_params)
        params.n_ctx = (width + 1) * n_ctx_per_seq
        params.n_batch = params.n_ubatch = n_batch
        params.n_seq_max = width + 1
        params.kv_unified = True
        params.no_perf = True
        # flash attention as the caller's context has it (llama-cpp-python: flash_attn=...). On, it
        # skips the masked cells of the other sequences in the unified cache: measured 1.1x (1
        # sequence) to 1.3x (16) faster here (benchmarks/batched_decode.py, docs/measurements.md).
        self.ctx = lib.llama_init_from_model(model, params)
        if not self.ctx:
            raise RuntimeError(
                f"llama.cpp could not create a context of {params.n_ctx} tokens for {width} sequences"
            )
        self.mem = lib.llama_get_memory(self.ctx)
        self.n_batch = n_batch
        self.n_vocab = lib.llama_vocab_n_tokens(lib.llama_model_get_vocab(model))
        self.batch = lib.llama_batch_init(n_batch, 0, 1)
        self.holder_tokens: list[int] = []
        self.sampler = RowSampler()

    # ---- one call ------------------------------------------------------------------------------

    def generate(self, prompts: Sequence[list[int]], *args, **kwargs) -> list[tuple[list[int], str]]:
        """(generated tokens, finish reason) per prompt, in input order; the arguments are
        `stream`'s. A budget of 0 gives ([], "length") without running the prompt."""
        out: list[tuple[list[int], str] | None] = [None] * len(prompts)
        for i, tokens, reason in self.stream(prompts, *args, **kwargs):
            out[i] = (tokens, reason)
        return out  # type: ignore[return-value]

    def stream(
        self,
        prompts: Sequence[list[int]],
        budgets: Sequence[int],
        setup: SamplingSetup,
        seeds: Sequence[int],
        stop: StopRule,
    ) -> Iterator[tuple[int, list[int], str]]:
        """(prompt index, generated tokens, finish reason) for every prompt, as each one finishes:
        one continuous batch over all of `prompts`, however many there are. Abandoning the iterator
        frees the sequences still in flight."""
        queue = deque(i for i in range(len(prompts)) if budgets[i] > 0)
        for i in range(len(prompts)):
            if budgets[i] <= 0:
                yield i, [], "length"
        free, active = list(range(self.width))[::-1], []
        try:
            while queue or active:
                while free and queue and self._may_admit(prompts[queue[0]], active):
                    i = queue.popleft()
                    rng = np.random.default_rng(seeds[i]) if setup.temperature > 0 else None
                    active.append(self._admit(i, free.pop(), list(prompts[i]), budgets[i], rng))
                rows = self._step(active)
                for seq, reason in self._sample(rows, setup, stop):
                    self.lib.llama_memory_seq_rm(self.mem, seq.slot, -1, -1)
                    active.remove(seq)
                    free.append(seq.slot)
                    yield seq.index, seq.tokens, reason
        finally:
            for seq in active:
                self.lib.llama_memory_seq_rm(self.mem, seq.slot, -1, -1)

    def _may_admit(self, prompt: list[int], active: list[_Seq]) -> bool:
        """False when a sequence still prefilling shares more of `prompt` than the holder does (the
        prompt waits one step and then copies that prefix instead of computing it again)."""
        shared = common_prefix_len(self.holder_tokens, prompt)
        return not any(s.pending and common_prefix_len(s.prompt, prompt) > shared for s in active)

    def _admit(self, index: int, slot: int, prompt: list[int], budget: int, rng) -> _Seq:
        self.lib.llama_memory_seq_rm(self.mem, slot, -1, -1)
        n = min(common_prefix_len(self.holder_tokens, prompt), len(prompt) - 1)
        if n > 0:
            self.lib.llama_memory_seq_cp(self.mem, self.holder, slot, 0, n)
        return _Seq(index, slot, prompt, prompt[n:], n, budget, rng)

    def _step(self, active: list[_Seq]) -> list[tuple[_Seq, bool]]:
        """Decode one batch; returns (sequence, prefill just finished) per row of logits, in order."""
        batch, rows, n = self.batch, [], 0

        def add(token: int, pos: int, slot: int, logits: bool) -> None:
            nonlocal n
            batch.token[n], batch.pos[n], batch.n_seq_id[n] = token, pos, 1
            batch.seq_id[n][0], batch.logits[n] = slot, logits
            n += 1

        for s in active:
            if not s.pending:
                add(s.last, s.pos, s.slot, True)
                s.pos += 1
                rows.append((s, False))
        for s in active:
            if s.pending and n < self.n_batch:
                chunk = s.pending[: self.n_batch - n]
                for j, tok in enumerate(chunk):
                    add(tok, s.pos + j, s.slot, j == len(s.pending) - 1)
                s.pos += len(chunk)
                s.pending = s.pending[len(chunk) :]
                if not s.pending:
                    rows.append((s, True))
        batch.n_tokens = n
        rc = self.lib.llama_decode(self.ctx, batch)
        if rc != 0:
            raise RuntimeError(
                f"llama_decode failed (return code {rc}{': no KV cache slot' if rc == 1 else ''}) with "
                f"{len(active)} sequences in flight; lower batch_size or n_ctx"
            )
        return rows

    def _sample(self, rows: list[tuple[_Seq, bool]], setup: SamplingSetup, stop: StopRule) -> list:
        """Pick each row's next token; returns the sequences that finished, with the reason."""
        if not rows:
            return []
        ptr = self.lib.llama_get_logits(self.ctx)
        logits = np.ctypeslib.as_array(ptr, shape=(len(rows), self.n_vocab))
        picked = self.sampler(logits, setup, [s.rng for s, _ in rows])
        finished = []
        for r, (s, prefilled) in enumerate(rows):
            if prefilled:
                self._hold(s)
            tok = int(picked[r])
            reason = stop(s.index, [*s.tokens, tok])
            if reason != "eog":
                s.tokens.append(tok)
            s.last = tok
            if reason is None and len(s.tokens) >= s.budget:
                reason = "length"
            if reason is not None:
                finished.append((s, "stop" if reason == "eog" else reason))
        return finished

    def _hold(self, s: _Seq) -> None:
        """Make `s`'s prompt the holder's (its KV cells stay after `s` leaves)."""
        self.lib.llama_memory_seq_rm(self.mem, self.holder, -1, -1)
        self.lib.llama_memory_seq_cp(self.mem, s.slot, self.holder, 0, len(s.prompt))
        self.holder_tokens = s.prompt

    def close(self) -> None:
        if self.ctx:
            self.lib.llama_batch_free(self.batch)
            self.lib.llama_free(self.ctx)
            self.ctx = None


def ctypes_copy(dst, src) -> None:
    """Copy every field of a ctypes structure into another of the same type."""
    for name, _ in src._fields_:
        setattr(dst, name, getattr(src, name))
