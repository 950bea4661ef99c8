"""llama.cpp runtime (llama-cpp-python) for the GGUF variants. Only the last position's logits are
computed (`logits_all=False`), as in real generation, and read straight from the context.

llama.cpp times its own work: `internal_timings()` returns the context's perf counters
(`llama_perf_context`: prompt-eval and eval milliseconds and token counts) since the last
`reset_internal_timings()`, so the harness can compare its decode tokens/s with llama.cpp's figure
for the same run. llama.cpp counts a decode call of one token as "eval" and a larger batch as
"prompt eval"; the time runs until the logits are synchronized, which our `decode` does at once.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from common.llama_cpp_loader import open_llama
from edge_bench.hugepages import anon_huge_pages_bytes


class LlamaCppRuntime:
    """`llama_cpp.Llama` with `threads` for both decode and batch (prompt) evaluation.

    use_mmap: map the file instead of reading it (llama.cpp's default). With mmap, the weights are
    page cache shared with other processes and RSS counts only the file pages touched. Read into
    memory instead, they can sit in huge pages (`edge_bench.hugepages`), which decodes faster.
    flash_attn: llama.cpp's fused attention. llama.cpp's own default ("auto") turns it on wherever
    the backend supports it, the CPU included; llama-cpp-python turns it off unless asked.
    n_ctx: the context (KV cache) size, allocated at load: prompt + decoded tokens must fit.
    extra_bufts: llama.cpp's extra buffer types (repacked weights): "auto" (off where llama.cpp
    reports AMX, whose path segfaults), "on" or "off"; see `common.llama_cpp_loader`.

    `settings` records what the load actually got, including how many bytes of anonymous memory
    the load added in huge pages (None where /proc can't say).
    """

    name = "llama_cpp"

    def __init__(
        self,
        path: Path,
        threads: int = 1,
        *,
        use_mmap: bool = True,
        flash_attn: bool = False,
        n_ctx: int = 2048,
        extra_bufts: str = "auto",
    ):
        try:
            import llama_cpp
        except ImportError as e:
            raise ImportError(
                "runtime llama_cpp needs llama-cpp-python: pip install llama-cpp-python==0.3.36"
            ) from e
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"runtime llama_cpp: no GGUF file at {path}")
        self._lib = llama_cpp
        self.threads, self.use_mmap, self.n_ctx = threads, use_mmap, n_ctx
        huge_before = anon_huge_pages_bytes()
        self.llm = open_llama(
            path,
            extra_bufts=extra_bufts,
            n_ctx=n_ctx,
            n_threads=threads,
            n_threads_batch=threads,
            logits_all=False,
            use_mmap=use_mmap,
            flash_attn=flash_attn,
            verbose=False,
        )
        self.n_vocab = self.llm.n_vocab()
        huge_after = anon_huge_pages_bytes()
        self.settings = {
            "use_mmap": use_mmap,
            "flash_attn": flash_attn,
            "use_extra_bufts": bool(self.llm.model_params.use_extra_bufts),
            "extra_bufts_source": self.llm.extra_bufts_decision.source,
            "huge_pages_added_bytes": huge_after - huge_before
            if None not in (huge_before, huge_after)
            else None,
        }

    def _last_logits(self) -> np.ndarray:
        """The logits of the batch's last token (llama_get_logits_ith(-1) also synchronizes)."""
        ptr = self._lib.llama_get_logits_ith(self.llm.ctx, -1)
        return np.ctypeslib.as_array(ptr, shape=(self.n_vocab,)).astype(np.float32)  # a copy

    def prefill(self, ids: Sequence[int]) -> np.ndarray:
        if not ids:
            raise ValueError("prefill needs at least one token id")
        if len(ids) >= self.n_ctx:
            raise ValueError(f"prompt of {len(ids)} tokens does not fit n_ctx={self.n_ctx}")
        self.llm.reset()
        self.llm.eval([int(t) for t in ids])
        return self._last_logits()

    def decode(self, token: int) -> np.ndarray:
        if self.llm.n_tokens == 0:
            raise RuntimeError("decode before prefill")
        if self.llm.n_tokens >= self.n_ctx:
            raise ValueError(f"context full: n_ctx={self.n_ctx}")
        self.llm.eval([int(token)])
        return self._last_logits()

    def parallel_decode(self, ids: Sequence[int], n_decode: int, sequences: int) -> dict:
        """`sequences` prompts of len(ids) tokens (rotations of `ids`: distinct, as from different
        users) decoded together for `n_decode` greedy tokens each, as a batching server does
        (`common.llama_cpp_batch`). Aggregate tokens/s over the whole call, and over the decode
        steps once every sequence has its first token."""
        import time

        from common.llama_cpp_batch import BatchedDecoder
        from common.token_sampling import SamplingSetup

        prompts = [[int(t) for t in (list(ids[k:]) + list(ids[:k]))] for k in range(sequences)]
        decoder = BatchedDecoder(
            self._lib,
            self.llm.model,
            self.llm.context_params,
            width=sequences,
            n_ctx_per_seq=len(ids) + n_decode + 1,
            n_batch=512,
        )
        firsts: list[float] = []

        def never_stop(index: int, tokens: list[int]) -> None:
            if len(tokens) == 1:
                firsts.append(time.perf_counter())

        try:
            started = time.perf_counter()
            out = decoder.generate(
                prompts, [n_decode] * sequences, SamplingSetup(), [0] * sequences, never_stop
            )
            seconds = time.perf_counter() - started
        finally:
            decoder.close()
        tokens = sum(len(t) for t, _ in out)
        decode_s = seconds - (max(firsts) - started)
        return {
            "sequences": sequences,
            "prompt_tokens": len(ids),
            "decode_steps": n_decode,
            "seconds": round(seconds, 6),
            "tokens_per_s": round(tokens / seconds, 2),
            "decode_tokens_per_s": round((tokens - sequences) / decode_s, 2) if decode_s > 0 else None,
        }

    def reset_internal_timings(self) -> None:
        """Zero llama.cpp's perf counters (`llama_perf_context_reset`)."""
        self._lib.llama_perf_context_reset(self.llm.ctx)

    def internal_timings(self) -> dict:
        """llama.cpp's own timing since the last reset: prompt eval (batches of more than one token)
        and eval (one-token decode calls), in ms and tokens, plus the derived tokens/s."""
        data = self._lib.llama_perf_context(self.llm.ctx)
        # llama.cpp reports max(1, n) tokens; a phase that has not run has 0 ms: count 0 tokens.
        out = {
            "prefill_ms": float(data.t_p_eval_ms),
            "prefill_tokens": int(data.n_p_eval) if data.t_p_eval_ms > 0 else 0,
            "decode_ms": float(data.t_eval_ms),
            "decode_tokens": int(data.n_eval) if data.t_eval_ms > 0 else 0,
        }
        out["decode_tokens_per_s"] = (
            1000 * out["decode_tokens"] / out["decode_ms"] if out["decode_ms"] else None
        )
        out["prefill_tokens_per_s"] = (
            1000 * out["prefill_tokens"] / out["prefill_ms"] if out["prefill_ms"] else None
        )
        return out

    def close(self) -> None:
        if self.llm is not None:
            self.llm.close()
            self.llm = None
