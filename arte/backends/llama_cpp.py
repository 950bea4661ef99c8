"""llama.cpp backend (llama-cpp-python): GGUF models on CPU, greedy/sampled generation, log-likelihoods.

Generation decodes up to `batch_size` prompts together (`common.llama_cpp_batch`: one
llama.cpp context with a unified KV cache, continuous batching, prompt prefixes shared between
sequences), with our own stop-string and EOS handling, the same rules as the hf backend: the
completion is detokenized after each token and cut right after the first stop string that
completed, which stays in the text. Prompts are run sorted by token sequence (prompts sharing a
demonstration run back to back and share its KV cells) and the outputs are put back in input order.
Each prompt samples with its own generator seeded from (seed, prompt index), so its text does not
depend on the batch width or on the other prompts of the call. `stream` yields each generation as
it finishes, so that a stage can hand over all its prompts at once and never wait for a batch to
drain (`arte.backends.streaming`).

Log-likelihoods use a second `Llama` created on first use with logits_all=True (logits for every
position), one request at a time with prefix reuse; the weights are shared (mmapped).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from arte.backends import BackendConfig
from arte.backends.base import Generation, SamplingParams
from arte.backends.decoding import find_stop, prompt_seed
from arte.models import resolve_gguf
from common.errors import UserError, missing_dependency
from common.llama_cpp_loader import LlamaCppSettingError, open_llama
from common.threads import pick_threads
from common.token_ids import common_prefix_len

_PIP_SPEC = "llama-cpp-python==0.3.36"


def _import_llama_cpp():
    try:
        import llama_cpp
    except ImportError as e:
        raise missing_dependency("llama_cpp", _PIP_SPEC, "backend llama_cpp") from e
    return llama_cpp


class LlamaCppBackend:
    """A GGUF model run by llama.cpp behind the `Backend` interface."""

    name = "llama_cpp"

    def __init__(self, cfg: BackendConfig):
        self._llama_cpp = _import_llama_cpp()
        self.cfg = cfg
        self.model_path = resolve_gguf(cfg.model)
        self.threads = pick_threads(cfg.threads)
        self.llm = self._open(logits_all=False)
        # llama.cpp may round its context up (n_ctx 64 -> 256), but llama-cpp-python's token buffers
        # hold exactly cfg.n_ctx tokens: the smaller number is the real limit.
        self.n_ctx = min(cfg.n_ctx, self.llm.n_ctx())
        self._scorer = None
        self._batched = None
        self._chat_formatter = None

    def _open(self, logits_all: bool):
        try:
            return open_llama(
                self.model_path,
                extra_bufts=self.cfg.extra_bufts,
                n_ctx=self.cfg.n_ctx,
                n_batch=min(512, self.cfg.n_ctx),
                n_threads=self.threads,
                n_threads_batch=self.threads,
                logits_all=logits_all,
                flash_attn=self.cfg.flash_attn,
                verbose=False,
            )
        except LlamaCppSettingError as e:
            raise UserError(f"backend llama_cpp: {e}") from None
        except Exception as e:  # noqa: BLE001 - llama.cpp reports a bad file as ValueError/RuntimeError
            raise UserError(
                f"backend llama_cpp: cannot load {self.model_path}: {type(e).__name__}: {e}"
            ) from e

    # ---- tokenization -------------------------------------------------------------------------

    def render(self, prompt: str) -> str:
        """The prompt as the model sees it: itself, or one user turn of the GGUF's chat template
        (rendered with jinja2 like transformers' apply_chat_template)."""
        if not self.cfg.chat:
            return prompt
        if self._chat_formatter is None:
            template = self.llm.metadata.get("tokenizer.chat_template")
            if not template:
                raise UserError(f"{self.model_path} has no tokenizer.chat_template; set chat: false")
            from llama_cpp.llama_chat_format import Jinja2ChatFormatter

            self._chat_formatter = Jinja2ChatFormatter(
                template,
                eos_token=self._token_text(self.llm.token_eos()),
                bos_token=self._token_text(self.llm.token_bos()),
                add_generation_prompt=True,
            )
        return self._chat_formatter(messages=[{"role": "user", "content": prompt}]).prompt

    def _token_text(self, token: int) -> str:
        return self.llm.detokenize([token], special=True).decode("utf-8") if token >= 0 else ""

    def encode(self, text: str) -> list[int]:
        """Token ids of a rendered text; special tokens in it are parsed; BOS added where the GGUF
        says so, except for chat (the template brings its own special tokens)."""
        return self.llm.tokenize(text.encode("utf-8"), add_bos=not self.cfg.chat, special=True)

    def _decode_text(self, ids: list[int]) -> str:
        return self.llm.detokenize(ids, special=False).decode("utf-8", errors="replace")

    def _check_length(self, n_tokens: int, what: str) -> None:
        if n_tokens >= self.n_ctx:
            raise UserError(
                f"{what} is {n_tokens} tokens but n_ctx is {self.n_ctx}: raise n_ctx or shorten it"
            )

    # ---- generation ---------------------------------------------------------------------------

    def generate(self, prompts: Sequence[str], params: SamplingParams) -> list[Generation]:
        results: list[Generation | None] = [None] * len(prompts)
        for i, gen in self.stream(prompts, params):
            results[i] = gen
        return results  # type: ignore[return-value]

    def stream(self, prompts: Sequence[str], params: SamplingParams) -> Iterator[tuple[int, Generation]]:
        """(prompt index, generation) for every prompt as it finishes: all of `prompts` in one
        continuous batch (`arte.backends.streaming.generate_stream` is how the stages call it)."""
        from common.token_sampling import SamplingSetup

        encoded = [self.encode(self.render(p)) for p in prompts]
        for i, ids in enumerate(encoded):
            self._check_length(len(ids), f"prompt {i}")
        order = sorted(range(len(encoded)), key=lambda i: encoded[i])
        budgets = [min(params.max_new_tokens, self.n_ctx - len(encoded[i])) for i in order]
        seeds = [prompt_seed(params, i) for i in order]
        setup = SamplingSetup(temperature=params.temperature, top_p=params.top_p)
        vocab = self._llama_cpp.llama_model_get_vocab(self.llm.model)

        def stop(k: int, tokens: list[int]) -> str | None:
            if self._llama_cpp.llama_vocab_is_eog(vocab, tokens[-1]):
                return "eog"
            return "stop" if find_stop(self._decode_text(tokens), params.stop) is not None else None

        done = self._decoder().stream([encoded[i] for i in order], budgets, setup, seeds, stop)
        for k, tokens, finish in done:
            i = order[k]
            text = self._decode_text(tokens)
            cut = find_stop(text, params.stop)
            yield i, Generation(text[:cut] if cut is not None else text, finish, len(encoded[i]), len(tokens))

    def _decoder(self):
        """The batched decoder (created on first use: it allocates the KV cache of every sequence)."""
        if self._batched is None:
            from common.llama_cpp_batch import BatchedDecoder

            self._batched = BatchedDecoder(
                self._llama_cpp,
                self.llm.model,
                self.llm.context_params,
                width=self.cfg.batch_size,
                n_ctx_per_seq=self.n_ctx,
                n_batch=min(512, self.n_ctx),
            )
        return self._batched

    # ---- scoring ------------------------------------------------------------------------------

    def split_request(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
        """(context ids, continuation ids); same boundary rule as the hf backend."""
        rendered = self.render(context)
        whole = self.encode(rendered + continuation)
        n = common_prefix_len(self.encode(rendered), whole)
        ctx, cont = whole[:n], whole[n:]
        if not ctx:
            bos = self.llm.token_bos()
            ctx = [bos if bos >= 0 else self.llm.token_eos()]
        return ctx, cont

    def loglikelihood(self, requests: Sequence[tuple[str, str]]) -> list[float]:
        import numpy as np

        split = [self.split_request(c, x) for c, x in requests]
        for i, (ctx, cont) in enumerate(split):
            self._check_length(len(ctx) + len(cont), f"request {i}")
        if self._scorer is None:
            self._scorer = self._open(logits_all=True)
        llm = self._scorer
        scores = [0.0] * len(split)
        for i in sorted(range(len(split)), key=lambda i: split[i][0] + split[i][1]):
            ctx, cont = split[i]
            if not cont:
                continue
            seq = ctx + cont
            # Logits of positions before the common prefix with the last request are still valid.
            keep = common_prefix_len(llm.input_ids[: llm.n_tokens].tolist(), seq)
            llm.n_tokens = keep  # eval() drops the KV cache from n_tokens on
            llm.eval(seq[keep:])
            logits = llm.scores[len(ctx) - 1 : len(seq) - 1].astype(np.float64)
            top = logits.max(-1, keepdims=True)
            logz = top[:, 0] + np.log(np.exp(logits - top).sum(-1))
            scores[i] = float((logits[np.arange(len(cont)), cont] - logz).sum())
        return scores

    def close(self) -> None:
        if self._batched is not None:
            self._batched.close()
        for llm in (self.llm, self._scorer):
            if llm is not None:
                llm.close()
        self.llm = self._scorer = self._batched = None
