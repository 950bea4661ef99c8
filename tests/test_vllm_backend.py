"""The vllm backend's adapter logic with a fake engine (these machines have no GPU, and vLLM is not
installed): engine arguments, the SamplingParams of each request, stop strings kept in the text,
LoRA requests, output order, chat prompts as token ids, prompt log-probs, the missing-package error.

The fake mirrors the parts of vLLM's offline API the backend uses (`LLM.generate(prompts,
[SamplingParams], use_tqdm=, lora_request=)` -> `RequestOutput(prompt_token_ids, prompt_logprobs,
outputs=[CompletionOutput(text, token_ids, finish_reason, stop_reason)])`), and it answers *out of
order* internally, as vLLM's scheduler may finish requests, while returning them in input order.
Behaviour on real vLLM is unverified.
"""

from __future__ import annotations

import json
import sys
import types
from dataclasses import dataclass
from typing import Any

import pytest

from arte.backends import BackendConfig, load_backend
from arte.backends.base import Generation, SamplingParams
from common.errors import UserError


@dataclass
class FakeSamplingParams:
    n: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    max_tokens: int | None = 16
    stop: list[str] | None = None
    seed: int | None = None
    include_stop_str_in_output: bool = False
    prompt_logprobs: int | None = None


@dataclass
class FakeLoRARequest:
    lora_name: str
    lora_int_id: int
    lora_path: str


@dataclass
class Logprob:
    logprob: float


@dataclass
class CompletionOutput:
    text: str
    token_ids: list[int]
    finish_reason: str
    stop_reason: Any = None


@dataclass
class RequestOutput:
    prompt_token_ids: list[int]
    outputs: list[CompletionOutput]
    prompt_logprobs: list | None = None


class FakeTokenizer:
    """One token per character (ids = code points); BOS = 1, added unless add_special_tokens=False."""

    bos_token_id, eos_token_id = 1, 2

    def __call__(self, text: str, add_special_tokens: bool = True) -> dict:
        return {"input_ids": ([self.bos_token_id] if add_special_tokens else []) + [ord(c) for c in text]}

    def apply_chat_template(self, messages, tokenize=False, add_generation_prompt=False):
        assert not tokenize and add_generation_prompt
        return "".join(f"<s>[{m['role']}] {m['content']}\n" for m in messages) + "[assistant] "


class FakeLLM:
    """Continues every prompt with the script `SCRIPT[prompt]` (default: the prompt reversed) and
    stops like vLLM: at the first stop string, keeping it only with include_stop_str_in_output."""

    instances: list[FakeLLM] = []
    SCRIPT = {"Q: 2+2?": " 4 so <ans>4</ans> and more", "eos": " bye"}

    def __init__(self, **kwargs):
        self.kwargs, self.calls = kwargs, []
        FakeLLM.instances.append(self)

    def get_tokenizer(self):
        return FakeTokenizer()

    def generate(self, prompts, sampling_params, *, use_tqdm=True, lora_request=None):
        self.calls.append(
            {
                "prompts": prompts,
                "params": sampling_params,
                "lora_request": lora_request,
                "use_tqdm": use_tqdm,
            }
        )
        params = sampling_params if isinstance(sampling_params, list) else [sampling_params] * len(prompts)
        order = sorted(range(len(prompts)), key=lambda i: -i)  # "finishes" last to first ...
        done = {i: self._one(prompts[i], params[i]) for i in order}
        return [done[i] for i in range(len(prompts))]  # ... but returns in input order, like vLLM

    def _one(self, prompt, sp: FakeSamplingParams) -> RequestOutput:
        if isinstance(prompt, dict):
            ids, text = (
                prompt["prompt_token_ids"],
                "".join(chr(i) for i in prompt["prompt_token_ids"] if i > 2),
            )
        else:
            ids, text = FakeTokenizer()(prompt)["input_ids"], prompt
        if sp.prompt_logprobs is not None:
            logprobs = [None] + [{tok: Logprob(-0.01 * tok)} for tok in ids[1:]]
            return RequestOutput(ids, [CompletionOutput("x", [120], "length")], logprobs)
        full = self.SCRIPT.get(text, text[::-1])
        finish, stop_reason, out = "length", None, full[: sp.max_tokens]
        if text == "eos":
            finish = "stop"  # end of sequence: no stop string
        for s in sp.stop or []:
            if (i := full.find(s)) >= 0 and i + len(s) <= sp.max_tokens:
                out = full[: i + len(s)] if sp.include_stop_str_in_output else full[:i]
                finish, stop_reason = "stop", s
                break
        return RequestOutput(ids, [CompletionOutput(out, [ord(c) for c in out], finish, stop_reason)])


@pytest.fixture
def fake_vllm(monkeypatch):
    """A stand-in `vllm` package in sys.modules, so the backend's lazy import finds it."""
    module = types.ModuleType("vllm")
    module.LLM, module.SamplingParams, module.LoRARequest = FakeLLM, FakeSamplingParams, FakeLoRARequest
    monkeypatch.setitem(sys.modules, "vllm", module)
    FakeLLM.instances.clear()
    return module


def make(tmp_path, **kw):
    model = tmp_path / "model"
    model.mkdir(exist_ok=True)
    (model / "config.json").write_text("{}")
    return load_backend(BackendConfig(name="vllm", model=str(model), **kw))


def test_engine_arguments(fake_vllm, tmp_path):
    backend = make(tmp_path, tensor_parallel_size=4, dtype="bfloat16")
    assert backend.name == "vllm"
    assert FakeLLM.instances[0].kwargs == {
        "model": str(tmp_path / "model"),
        "tensor_parallel_size": 4,
        "dtype": "bfloat16",
        "enable_prefix_caching": True,  # scoring's shared demonstrations are computed once
        "enable_lora": False,
        "seed": 0,
        "load_format": "safetensors",  # never a pickle, unless allow_pickle
    }
    backend.close()
    backend.close()  # twice is fine


def test_pickle_weights_need_the_opt_in(fake_vllm, tmp_path):
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "pytorch_model.bin").write_bytes(b"not loaded")
    with pytest.raises(UserError, match="holds only PyTorch pickle weights"):
        make(tmp_path)
    make(tmp_path, allow_pickle=True)
    assert "load_format" not in FakeLLM.instances[-1].kwargs


def test_request_mapping_greedy_and_sampled(fake_vllm, tmp_path):
    from arte.backends.decoding import row_seed

    backend = make(tmp_path)
    backend.generate(["a", "b"], SamplingParams(max_new_tokens=7, stop=("</ans>",), seed=3))
    call = backend.llm.calls[-1]
    assert call["prompts"] == ["a", "b"] and call["use_tqdm"] is False and call["lora_request"] is None
    assert call["params"] == [
        FakeSamplingParams(
            temperature=0.0,
            top_p=1.0,
            max_tokens=7,
            stop=["</ans>"],
            seed=row_seed(3, i),
            include_stop_str_in_output=True,
        )
        for i in range(2)
    ]
    backend.generate(["a"], SamplingParams(max_new_tokens=5, temperature=0.8, top_p=0.9))
    sp = backend.llm.calls[-1]["params"][0]
    assert (sp.temperature, sp.top_p, sp.stop, sp.seed) == (0.8, 0.9, None, row_seed(0, 0))


def test_stop_strings_stay_in_the_text_and_finish_reasons(fake_vllm, tmp_path):
    backend = make(tmp_path)
    gens = backend.generate(["Q: 2+2?", "eos", "abcdef"], SamplingParams(max_new_tokens=20, stop=("</ans>",)))
    assert gens[0].text == " 4 so <ans>4</ans>" and gens[0].finish_reason == "stop"
    assert gens[0].completion_tokens == len(" 4 so <ans>4</ans>") and gens[0].prompt_tokens == 1 + 7
    assert (gens[1].text, gens[1].finish_reason) == (" bye", "stop")  # end of sequence
    assert (gens[2].text, gens[2].finish_reason) == ("fedcba", "length")
    # Two stops: the one that completes first wins, as in every backend (arte.backends.decoding).
    two = backend.generate(["Q: 2+2?"], SamplingParams(max_new_tokens=40, stop=("and more", "so")))[0]
    assert two.text == " 4 so"
    assert backend.generate(["x"], SamplingParams(max_new_tokens=0)) == [Generation("", "length", 0, 0)]
    assert backend.generate([], SamplingParams()) == []


def test_outputs_come_back_in_input_order(fake_vllm, tmp_path):
    backend = make(tmp_path)
    prompts = [f"prompt {i}" for i in range(10)]
    gens = backend.generate(prompts, SamplingParams(max_new_tokens=100))
    assert [g.text for g in gens] == [p[::-1] for p in prompts]


def test_lora_adapter_is_requested_with_every_call(fake_vllm, tmp_path):
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"r": 32, "lora_alpha": 64}))
    backend = make(tmp_path, lora_adapter=str(adapter))
    kwargs = FakeLLM.instances[0].kwargs
    assert kwargs["enable_lora"] is True and kwargs["max_lora_rank"] == 32
    backend.generate(["a"], SamplingParams(max_new_tokens=3))
    backend.loglikelihood([("ab", "c")])
    requests = [c["lora_request"] for c in backend.llm.calls]
    assert requests == [FakeLoRARequest("arte-adapter", 1, str(adapter.resolve()))] * 2


def test_lora_adapter_must_be_a_peft_directory(fake_vllm, tmp_path):
    with pytest.raises(UserError, match="adapter_config.json"):
        make(tmp_path, lora_adapter=str(tmp_path))


def test_chat_prompts_go_as_token_ids_without_a_second_bos(fake_vllm, tmp_path):
    backend = make(tmp_path, chat=True)
    backend.generate(["hi"], SamplingParams(max_new_tokens=3))
    (prompt,) = backend.llm.calls[-1]["prompts"]
    rendered = "<s>[user] hi\n[assistant] "
    assert prompt == {"prompt_token_ids": [ord(c) for c in rendered]}  # add_special_tokens=False


def test_loglikelihood_sums_prompt_logprobs_of_the_continuation(fake_vllm, tmp_path):
    backend = make(tmp_path)
    got = backend.loglikelihood([("ab", "cd"), ("", "x"), ("ab", "")])
    # Fake log-prob of token t is -0.01 * t; the continuation's tokens are "c", "d" (and "x" after BOS).
    assert got == pytest.approx([-0.01 * (ord("c") + ord("d")), -0.01 * ord("x"), 0.0])
    call = backend.llm.calls[-1]
    assert call["params"].prompt_logprobs == 1 and call["params"].max_tokens == 1
    assert call["prompts"] == [{"prompt_token_ids": [1, 97, 98, 99, 100]}, {"prompt_token_ids": [1, 120]}]


def test_missing_vllm_names_the_pip_install(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "vllm", None)  # import vllm -> ImportError
    with pytest.raises(UserError, match=r"pip install 'arte-edge\[vllm\]'"):
        make(tmp_path)
