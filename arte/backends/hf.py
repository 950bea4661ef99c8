"""transformers backend: batched greedy/sampled generation with stop strings, and exact log-likelihoods.

Generation runs its own decode loop (not `model.generate`) so that stop strings, per-prompt seeds and
KV-prefix reuse behave exactly as documented here:

- Prompts are tokenized, sorted by token sequence (so prompts sharing a prefix land in one batch) and
  run `batch_size` at a time, left-padded; outputs come back in input order.
- KV-prefix reuse: when every prompt of a batch starts with the same >= `prefix_reuse_min_tokens`
  tokens (ARTE scoring: one demonstration followed by k test questions), that prefix is run once,
  its KV cache repeated over the batch, and only the (left-padded) suffixes are run on top of it.
  Greedy results are the same as without reuse (tested).
- Stop strings: after each token the row's decoded completion is searched; the text is cut right
  after the first stop string that completed, which stays in the text. EOS also stops ('stop').
- Sampling: each prompt gets its own `torch.Generator` seeded from (params.seed, prompt index), so a
  prompt's sample does not depend on how prompts were sorted or batched.
"""

from __future__ import annotations

import gc
from collections.abc import Sequence
from typing import TYPE_CHECKING

from arte.backends import BackendConfig
from arte.backends.base import Generation, SamplingParams
from arte.backends.decoding import find_stop, prompt_seed, split_context
from arte.models import resolve_hf
from common.errors import UserError
from common.hf_models import load_hf_model
from common.threads import configure_torch_threads, pick_threads
from common.token_ids import common_prefix_len

if TYPE_CHECKING:
    import torch


class HFBackend:
    """A transformers causal LM behind the `Backend` interface (CPU, fp32 by default)."""

    name = "hf"
    prefix_reuse_min_tokens: int = 16
    """Reuse a batch's shared prompt prefix only when it is at least this many tokens (it pays)."""

    def __init__(self, cfg: BackendConfig):
        self.cfg = cfg
        self.threads = pick_threads(cfg.threads)
        configure_torch_threads(self.threads)
        self.model_path = resolve_hf(cfg.model)
        self.tokenizer, self.model = load_hf_model(
            self.model_path, cfg.dtype, allow_pickle=cfg.allow_pickle, flag="--<role>.allow_pickle"
        )
        tok = self.tokenizer
        # Padding positions are masked out, so any id works; the tokenizer and model are not changed.
        self.pad_id = next(i for i in (tok.pad_token_id, tok.eos_token_id, 0) if i is not None)
        eos = self.model.generation_config.eos_token_id
        eos = eos if isinstance(eos, list) else [eos]
        self.eos_ids = {i for i in [*eos, tok.eos_token_id] if i is not None}
        self.max_len = int(getattr(self.model.config, "max_position_embeddings", 0) or 1 << 30)

    # ---- tokenization -------------------------------------------------------------------------

    def render(self, prompt: str) -> str:
        """The prompt as the model sees it: itself, or one user turn of the chat template."""
        if not self.cfg.chat:
            return prompt
        if not getattr(self.tokenizer, "chat_template", None):
            raise UserError(f"model {self.cfg.model!r} has no chat template; set chat: false")
        messages = [{"role": "user", "content": prompt}]
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    def encode(self, text: str) -> list[int]:
        """Token ids of an already rendered text (the chat template brings its own special tokens)."""
        return self.tokenizer(text, add_special_tokens=not self.cfg.chat)["input_ids"]

    def _check_length(self, n_tokens: int, what: str) -> None:
        if n_tokens >= self.max_len:
            raise UserError(
                f"{what} is {n_tokens} tokens; the model's context (max_position_embeddings) is "
                f"{self.max_len}: shorten it"
            )

    # ---- generation ---------------------------------------------------------------------------

    def generate(self, prompts: Sequence[str], params: SamplingParams) -> list[Generation]:
        import torch

        encoded = [self.encode(self.render(p)) for p in prompts]
        for i, ids in enumerate(encoded):
            self._check_length(len(ids), f"prompt {i}")
        order = sorted(range(len(encoded)), key=lambda i: encoded[i])
        results: list[Generation | None] = [None] * len(encoded)
        bs = self.cfg.batch_size
        with torch.inference_mode():
            for start in range(0, len(order), bs):
                idx = order[start : start + bs]
                gens = self._generate_batch([encoded[i] for i in idx], params, idx)
                for i, g in zip(idx, gens):
                    results[i] = g
        return results  # type: ignore[return-value]

    def _generate_batch(self, batch: list[list[int]], params: SamplingParams, idx: list[int]):
        max_new = [min(params.max_new_tokens, self.max_len - len(ids)) for ids in batch]
        if max(max_new) <= 0:
            return [Generation("", "length", len(ids), 0) for ids in batch]
        prefix = min(common_prefix_len(batch[0], ids) for ids in batch)
        prefix = min(prefix, min(len(ids) for ids in batch) - 1)  # every row keeps >= 1 suffix token
        if len(batch) > 1 and prefix >= self.prefix_reuse_min_tokens and self._cache_allows_reuse():
            state = self._prefill_shared_prefix(batch, prefix)
        else:
            state = self._prefill(batch)
        return self._decode(state, batch, max_new, params, idx)

    def _new_cache(self):
        from transformers import DynamicCache

        return DynamicCache(config=self.model.config)

    def _cache_allows_reuse(self) -> bool:
        """Prefix reuse is done for plain full-attention caches only (no sliding window)."""
        return not any(getattr(layer, "is_sliding", False) for layer in self._new_cache().layers)

    def _left_pad(self, rows: list[list[int]]):
        import torch

        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, width - len(r) :] = torch.tensor(r, dtype=torch.long)
            mask[i, width - len(r) :] = 1
        return ids, mask

    def _forward_last(self, ids, mask, positions, cache):
        out = self.model(
            input_ids=ids,
            attention_mask=mask,
            position_ids=positions,
            past_key_values=cache,
            use_cache=True,
            logits_to_keep=1,
        )
        return out.logits[:, -1, :].float()

    def _prefill(self, batch: list[list[int]]):
        """Run the left-padded prompts; return (cache, last logits, attention mask, next positions)."""
        ids, mask = self._left_pad(batch)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        cache = self._new_cache()
        logits = self._forward_last(ids, mask, positions, cache)
        return cache, logits, mask, positions[:, -1] + 1

    def _prefill_shared_prefix(self, batch: list[list[int]], prefix: int):
        """Run the shared prefix once, repeat its KV over the batch, then run only the suffixes,
        left-padded after the prefix: [prefix][pad..][suffix]. Positions count only real tokens."""
        import torch

        cache = self._new_cache()
        head = torch.tensor([batch[0][:prefix]], dtype=torch.long)
        self._forward_last(head, torch.ones_like(head), torch.arange(prefix)[None], cache)
        cache.batch_repeat_interleave(len(batch))
        ids, suffix_mask = self._left_pad([r[prefix:] for r in batch])
        mask = torch.cat([torch.ones((len(batch), prefix), dtype=torch.long), suffix_mask], dim=1)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)[:, prefix:]
        logits = self._forward_last(ids, mask, positions, cache)
        return cache, logits, mask, positions[:, -1] + 1

    def _decode(self, state, batch, max_new: list[int], params: SamplingParams, idx: list[int]):
        import torch

        cache, logits, mask, next_pos = state
        gens = [torch.Generator().manual_seed(prompt_seed(params, i)) for i in idx]
        alive = list(range(len(batch)))  # batch rows still generating, in cache row order
        tokens: list[list[int]] = [[] for _ in batch]
        done: dict[int, tuple[str, str]] = {}
        while True:
            chosen = self._choose(logits, params, [gens[r] for r in alive])
            keep = []
            for j, row in enumerate(alive):
                tok = int(chosen[j])
                if tok in self.eos_ids:
                    done[row] = (self._decode_text(tokens[row]), "stop")
                    continue
                tokens[row].append(tok)
                text = self._decode_text(tokens[row])
                cut = find_stop(text, params.stop)
                if cut is not None:
                    done[row] = (text[:cut], "stop")
                elif len(tokens[row]) >= max_new[row]:
                    done[row] = (text, "length")
                else:
                    keep.append(j)
            if not keep:
                break
            if len(keep) < len(alive):  # drop finished rows from the batch
                sel = torch.tensor(keep, dtype=torch.long)
                cache.batch_select_indices(sel)
                chosen, mask, next_pos = chosen[sel], mask[sel], next_pos[sel]
                alive = [alive[j] for j in keep]
            mask = torch.cat([mask, torch.ones((len(alive), 1), dtype=torch.long)], dim=1)
            logits = self._forward_last(chosen[:, None], mask, next_pos[:, None], cache)
            next_pos = next_pos + 1
        return [Generation(done[r][0], done[r][1], len(batch[r]), len(tokens[r])) for r in range(len(batch))]

    def _decode_text(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)

    @staticmethod
    def _choose(logits: torch.Tensor, params: SamplingParams, gens: list) -> torch.Tensor:
        """Greedy (temperature 0) or temperature + top-p sampling, one generator per row."""
        import torch

        if params.temperature <= 0:
            return logits.argmax(-1)
        probs = torch.softmax(logits / params.temperature, dim=-1)
        if params.top_p < 1.0:
            sorted_p, order = probs.sort(dim=-1, descending=True)
            drop = sorted_p.cumsum(-1) - sorted_p > params.top_p  # keep the smallest set reaching top_p
            sorted_p[drop] = 0.0
            probs = torch.zeros_like(probs).scatter(-1, order, sorted_p)
        return torch.cat([torch.multinomial(probs[j], 1, generator=g) for j, g in enumerate(gens)])

    # ---- scoring ------------------------------------------------------------------------------

    def split_request(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
        """(context ids, continuation ids) of `context + continuation` tokenized as one text.

        The boundary is where the tokens of the context alone stop matching the tokens of the whole;
        a token that merges across the boundary counts as continuation. An empty context is
        conditioned on BOS (or EOS where there is no BOS)."""
        return split_context(self.encode, self.render(context), continuation, self.tokenizer)

    def loglikelihood(self, requests: Sequence[tuple[str, str]]) -> list[float]:
        import torch

        split = [self.split_request(c, x) for c, x in requests]
        for i, (ctx, cont) in enumerate(split):
            self._check_length(len(ctx) + len(cont), f"request {i}")
        order = sorted(range(len(split)), key=lambda i: -len(split[i][0]) - len(split[i][1]))
        scores = [0.0] * len(split)
        bs = self.cfg.batch_size
        with torch.inference_mode():
            for start in range(0, len(order), bs):
                idx = [i for i in order[start : start + bs] if split[i][1]]
                if idx:
                    for i, s in zip(idx, self._score_batch([split[i] for i in idx])):
                        scores[i] = s
        return scores

    def _score_batch(self, rows: list[tuple[list[int], list[int]]]) -> list[float]:
        """Right-padded forward; sum of log-softmax at the continuation tokens of each row."""
        import torch

        seqs = [ctx + cont for ctx, cont in rows]
        width = max(len(s) for s in seqs) - 1
        ids = torch.full((len(seqs), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for i, s in enumerate(seqs):
            ids[i, : len(s) - 1] = torch.tensor(s[:-1], dtype=torch.long)
            mask[i, : len(s) - 1] = 1
        first = min(len(ctx) for ctx, _ in rows) - 1  # logits are needed from here on only
        logits = self.model(input_ids=ids, attention_mask=mask, logits_to_keep=width - first).logits
        out = []
        for i, (ctx, cont) in enumerate(rows):
            at = torch.arange(len(ctx) - 1, len(ctx) - 1 + len(cont)) - first
            logprobs = torch.log_softmax(logits[i, at].double(), dim=-1)
            out.append(float(logprobs[torch.arange(len(cont)), torch.tensor(cont)].sum()))
        return out

    def close(self) -> None:
        self.model = None
        self.tokenizer = None
        gc.collect()
