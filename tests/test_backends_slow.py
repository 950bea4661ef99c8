"""The real embedded model (SmolLM2-135M-Instruct, Q4_1 GGUF) through both backends.

hf runs the de-quantized copy (models.materialize_hf, written into the test cache), llama_cpp the
GGUF itself: the weights are the same Q4_1 values, so greedy few-shot answers should mostly agree
(not always: fp32 torch vs llama.cpp's quantized kernels round differently).
"""

from __future__ import annotations

import re
import time

import pytest

from arte.backends import BackendConfig
from arte.backends.base import SamplingParams

pytestmark = pytest.mark.slow

FEW_SHOT = (
    "Answer each question with a short answer between <ans> and </ans>.\n\n"
    "Question: 2 + 3 = ?\nAnswer: <ans>5</ans>\n\n"
    "Question: What color is the sky on a clear day?\nAnswer: <ans>blue</ans>\n\n"
    "Question: 10 - 4 = ?\nAnswer: <ans>6</ans>\n\n"
)
QUESTIONS = [
    "4 + 4 = ?",
    "What is the capital of France?",
    "9 - 3 = ?",
    "How many days are in a week?",
    "What color is grass?",
    "5 + 7 = ?",
    "What is the opposite of hot?",
    "How many legs does a dog have?",
    "3 * 3 = ?",
    "What animal says moo?",
]
PARAMS = SamplingParams(max_new_tokens=16, stop=("</ans>",))


def extract_answer(text: str) -> str:
    found = re.search(r"<ans>(.*?)</ans>", text, re.S)
    return (found.group(1) if found else text).strip().lower()


@pytest.fixture(scope="module")
def backends(smollm2_gguf):
    pytest.importorskip("llama_cpp")
    pytest.importorskip("transformers")
    from arte.backends import load_backend

    started = time.time()
    hf = load_backend(BackendConfig(name="hf", model="smollm2-135m", threads=1, batch_size=8))
    lcpp = load_backend(BackendConfig(name="llama_cpp", model="smollm2-135m", threads=1))
    print(
        f"\nloaded both backends in {time.time() - started:.1f} s (hf copy materialised into the test cache)"
    )
    yield hf, lcpp
    hf.close()
    lcpp.close()


def test_materialised_copy_is_in_the_test_cache(backends, arte_cache_dir):
    hf, _ = backends
    assert str(hf.model_path).startswith(str(arte_cache_dir))


def test_real_tokenizers_and_chat_templates_agree(backends):
    hf, lcpp = backends
    for q in QUESTIONS[:3]:
        assert hf.encode(FEW_SHOT + q) == lcpp.encode(FEW_SHOT + q)
    hf.cfg.chat = lcpp.cfg.chat = True
    try:
        assert hf.render(QUESTIONS[0]) == lcpp.render(QUESTIONS[0])
        assert hf.encode(hf.render(QUESTIONS[0])) == lcpp.encode(lcpp.render(QUESTIONS[0]))
        params = SamplingParams(max_new_tokens=12)
        texts = [[g.text for g in b.generate(QUESTIONS[:4], params)] for b in (hf, lcpp)]
        same = sum(a == b for a, b in zip(*texts))
        print(f"\nchat mode, first 12 tokens identical for {same}/4 prompts: {texts}")
        assert same >= 2
    finally:
        hf.cfg.chat = lcpp.cfg.chat = False


def test_few_shot_answers_agree(backends):
    hf, lcpp = backends
    prompts = [f"{FEW_SHOT}Question: {q}\nAnswer:" for q in QUESTIONS]
    timings, answers = {}, {}
    for backend in (hf, lcpp):
        started = time.time()
        out = backend.generate(prompts, PARAMS)
        timings[backend.name] = time.time() - started
        answers[backend.name] = [extract_answer(g.text) for g in out]
        assert sum(g.finish_reason == "stop" for g in out) >= len(out) // 2
    same = [a == b for a, b in zip(answers["hf"], answers["llama_cpp"])]
    agreement = sum(same) / len(same)
    for q, a, b in zip(QUESTIONS, answers["hf"], answers["llama_cpp"]):
        print(f"{q:34s} hf={a!r:14s} llama_cpp={b!r}")
    print(f"hf<->llama_cpp answer agreement: {agreement:.2f} ({sum(same)}/{len(same)}); seconds: {timings}")
    assert agreement >= 0.7


def test_embedded_f16_is_the_hf_copy_as_f16_converted_once(backends, arte_cache_dir):
    """`smollm2-135m-f16`: the HF copy's weights as an F16 GGUF in the cache, written once; the same
    HF copy for training; its answers are the hf backend's (the de-quantized weights)."""
    from arte.backends import load_backend
    from arte.models import list_models, resolve_gguf, resolve_hf
    from common.gguf_header import read_gguf_header

    hf, _ = backends
    path = resolve_gguf("smollm2-135m-f16")
    assert path.parent == arte_cache_dir / "models" and path.suffix == ".gguf"
    _, tensors = read_gguf_header(path, metadata=False)
    types = {t["type"] for t in tensors if len(t["shape"]) == 2}
    assert types == {"F16"}, types
    mtime = path.stat().st_mtime_ns
    assert resolve_gguf("smollm2-135m-f16") == path and path.stat().st_mtime_ns == mtime  # cached
    assert resolve_hf("smollm2-135m-f16") == resolve_hf("smollm2-135m")
    assert any(m.name == "smollm2-135m-f16" and m.path == str(path) for m in list_models())
    f16 = load_backend(BackendConfig(name="llama_cpp", model="smollm2-135m-f16", threads=1))
    try:
        prompts = [FEW_SHOT + f"Question: {q}\nAnswer:" for q in QUESTIONS]
        a, b = f16.generate(prompts, PARAMS), hf.generate(prompts, PARAMS)
        same = sum(extract_answer(x.text) == extract_answer(y.text) for x, y in zip(a, b))
        assert same >= len(prompts) - 1, [(x.text, y.text) for x, y in zip(a, b)]
    finally:
        f16.close()
