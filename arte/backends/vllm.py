"""`vllm`: in-process vLLM (`vllm.LLM`) on GPU hosts, behind the `Backend` interface.

UNVERIFIED on real vLLM: these machines have no GPU. The mapping below follows vLLM's documented
offline API (`LLM(...)`, `LLM.generate(prompts, [SamplingParams, ...], lora_request=...)`,
`RequestOutput.outputs[0].{text, token_ids, finish_reason}`, `prompt_logprobs`) and is unit-tested
with a fake engine (tests/test_vllm_backend.py): request mapping, stop strings, LoRA, ordering.

- Engine: `LLM(model, tensor_parallel_size, dtype, enable_prefix_caching=True, enable_lora=...)`.
  Automatic prefix caching is what makes scoring cheap: the k prompts of one draft share the
  demonstration, so its KV blocks are computed once.
- Generation: one `SamplingParams` per prompt (temperature 0 = greedy; the per-prompt seed follows
  `arte.backends.decoding.prompt_seed`; `include_stop_str_in_output=True`, so the text keeps the stop
  string as the `Backend` contract wants). vLLM returns outputs in input order.
- LoRA: with `lora_adapter`, every request carries one `LoRARequest`, so an adapter (e.g. the aligned
  teacher's) is served on top of the base model without merging.
- Chat (`chat: true`): the prompt becomes one user turn through the tokenizer's chat template and is
  passed as token ids (so no second BOS is added).
- Log-likelihoods: `prompt_logprobs` of context + continuation (tokenized like the hf backend:
  the boundary is where the context's own tokens stop matching), one generated token ignored.
- `close()` deletes the engine and frees what it can; vLLM does not always release all GPU memory
  in-process, so on a GPU host run stages as separate commands (`arte elicit`, `arte score`, ...).
"""

from __future__ import annotations

import gc
import json
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

from arte.backends import BackendConfig
from arte.backends.base import Generation, SamplingParams
from arte.backends.decoding import find_stop, prompt_seed, split_context
from arte.models import resolve_hf
from common.errors import UserError, missing_dependency

_PIP_SPEC = "arte-edge[vllm]"
LORA_NAME = "arte-adapter"


def _import_vllm() -> ModuleType:
    try:
        import vllm
    except ImportError as e:
        raise missing_dependency("vllm", _PIP_SPEC, "backend vllm (GPU hosts)") from e
    return vllm


def _lora_request_class(vllm: ModuleType):
    """`LoRARequest`: exported by `vllm` itself in older releases, always by `vllm.lora.request`."""
    cls = getattr(vllm, "LoRARequest", None)
    if cls is None:
        from vllm.lora.request import LoRARequest as cls
    return cls


def adapter_rank(adapter_dir: Path) -> int:
    """The LoRA rank r of a peft adapter directory (adapter_config.json)."""
    config = adapter_dir / "adapter_config.json"
    if not config.is_file():
        raise UserError(
            f"--lora_adapter {adapter_dir}: no adapter_config.json (a peft LoRA adapter directory)"
        )
    return int(json.loads(config.read_text()).get("r", 8))


class VLLMBackend:
    """A model run in this process by vLLM (see module docstring). `vllm_module` injects a stand-in
    for the `vllm` package (tests)."""

    name = "vllm"

    def __init__(self, cfg: BackendConfig, vllm_module: ModuleType | None = None):

        self.vllm = vllm_module or _import_vllm()
        self.cfg = cfg
        kwargs: dict[str, Any] = dict(
            model=resolve_hf(cfg.model),
            tensor_parallel_size=cfg.tensor_parallel_size,
            dtype=cfg.dtype,
            enable_prefix_caching=True,
            enable_lora=bool(cfg.lora_adapter),
            seed=0,
        )
        if not str(kwargs["model"]).endswith(".gguf"):  # safetensors only, unless opted in
            from common.weights import check_model_weights

            if Path(kwargs["model"]).is_dir():
                check_model_weights(Path(kwargs["model"]), cfg.allow_pickle, "--<role>.allow_pickle")
            if not cfg.allow_pickle:
                kwargs["load_format"] = "safetensors"
        self.lora_request = None
        if cfg.lora_adapter:
            adapter = Path(cfg.lora_adapter).expanduser().resolve()
            # vLLM sizes its LoRA buffers by max_lora_rank (default 16): raise it to the adapter's r.
            kwargs["max_lora_rank"] = max(16, 1 << (adapter_rank(adapter) - 1).bit_length())
            self.lora_request = _lora_request_class(self.vllm)(LORA_NAME, 1, str(adapter))
        self.llm = self.vllm.LLM(**kwargs)
        self.tokenizer = self.llm.get_tokenizer()

    # ---- prompts ------------------------------------------------------------------------------

    def encode(self, text: str) -> list[int]:
        """Token ids of a (rendered) text; special tokens added unless chat (the template has them)."""
        return self.tokenizer(text, add_special_tokens=not self.cfg.chat)["input_ids"]

    def render(self, prompt: str) -> str:
        if not self.cfg.chat:
            return prompt
        messages = [{"role": "user", "content": prompt}]
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    def _engine_prompt(self, prompt: str) -> str | dict[str, list[int]]:
        """Plain prompts go as text (vLLM tokenizes them); chat turns as token ids."""
        return {"prompt_token_ids": self.encode(self.render(prompt))} if self.cfg.chat else prompt

    def sampling_params(self, params: SamplingParams, seed: int):
        greedy = params.temperature <= 0
        return self.vllm.SamplingParams(
            n=1,
            temperature=0.0 if greedy else params.temperature,
            top_p=1.0 if greedy else params.top_p,
            max_tokens=params.max_new_tokens,
            stop=list(params.stop) or None,
            seed=seed,
            include_stop_str_in_output=True,
        )

    # ---- generation ---------------------------------------------------------------------------

    def generate(self, prompts: Sequence[str], params: SamplingParams) -> list[Generation]:
        if not prompts:
            return []
        if params.max_new_tokens <= 0:  # vLLM wants max_tokens >= 1
            return [Generation("", "length", 0, 0) for _ in prompts]
        outputs = self.llm.generate(
            [self._engine_prompt(p) for p in prompts],
            [self.sampling_params(params, prompt_seed(params, i)) for i in range(len(prompts))],
            use_tqdm=False,
            lora_request=self.lora_request,
        )
        if len(outputs) != len(prompts):
            raise RuntimeError(f"vllm returned {len(outputs)} outputs for {len(prompts)} prompts")
        return [self._generation(out, params.stop) for out in outputs]

    @staticmethod
    def _generation(out, stops: Sequence[str]) -> Generation:
        completion = out.outputs[0]
        text = completion.text
        finish = "length" if completion.finish_reason == "length" else "stop"
        cut = find_stop(text, stops)  # the same "first stop to complete" rule as the other backends
        if cut is not None:
            text, finish = text[:cut], "stop"
        return Generation(text, finish, len(out.prompt_token_ids or ()), len(completion.token_ids))

    # ---- scoring ------------------------------------------------------------------------------

    def split_request(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
        """(context ids, continuation ids): the hf backend's boundary rule; an empty context is
        conditioned on BOS (or EOS where there is no BOS)."""
        return split_context(self.encode, self.render(context), continuation, self.tokenizer)

    def loglikelihood(self, requests: Sequence[tuple[str, str]]) -> list[float]:
        split = [self.split_request(c, x) for c, x in requests]
        todo = [i for i, (_, cont) in enumerate(split) if cont]
        scores = [0.0] * len(split)
        if not todo:
            return scores
        params = self.vllm.SamplingParams(n=1, temperature=0.0, max_tokens=1, prompt_logprobs=1)
        outputs = self.llm.generate(
            [{"prompt_token_ids": split[i][0] + split[i][1]} for i in todo],
            params,
            use_tqdm=False,
            lora_request=self.lora_request,
        )
        for i, out in zip(todo, outputs, strict=True):
            ctx, cont = split[i]
            seq = ctx + cont
            # prompt_logprobs[j]: {token id: Logprob} for position j (None at j = 0).
            scores[i] = sum(out.prompt_logprobs[j][seq[j]].logprob for j in range(len(ctx), len(seq)))
        return scores

    def close(self) -> None:
        """Drop the engine and free what vLLM lets go of (best effort; see module docstring)."""
        if getattr(self, "llm", None) is None:
            return
        self.llm = None
        try:
            from vllm.distributed.parallel_state import (
                destroy_distributed_environment,
                destroy_model_parallel,
            )
        except ImportError:  # a stand-in module, or a vLLM that moved them
            pass
        else:
            destroy_model_parallel()
            destroy_distributed_environment()
        gc.collect()
        try:
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        except ImportError:
            pass
