"""Backends hf and llama_cpp on tiny random Llamas (same weights in both formats): fast, offline.

References: a plain torch forward (logits, log-likelihoods), the GGUF-vs-torch logits, and each
backend against itself with batching / prefix reuse switched off.
"""

from __future__ import annotations

import sys

import numpy as np
import pytest

from arte.backends import BackendConfig
from arte.backends.base import SamplingParams
from common.errors import UserError
from common.threads import available_cores, pick_threads

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

PROMPTS = [
    "Question: 2 + 3 = ? Answer:",
    "Hi",
    "The quick brown fox jumps over the lazy dog, and then it runs away into the dark forest.",
    "Résumé: naïve café ☕ — 東京",
    "def f(x):\n    return",
]
DEMO = (
    "Question: What is 7 + 5? Think step by step.\nAnswer: 7 + 5 = 12. <ans>12</ans>\n\n"
    "Question: What is 9 - 4? Think step by step.\nAnswer:"
)
QUESTIONS = [" 3 * 3?", " What is 10 + 10? Please answer.", " 1?", " How many legs has a spider?"]
GREEDY = SamplingParams(max_new_tokens=12)


def make_hf(tiny_model, **kw):
    from arte.backends.hf import HFBackend

    return HFBackend(BackendConfig(name="hf", model=str(tiny_model.hf_dir), threads=1, **kw))


def make_llama(tiny_model, **kw):
    pytest.importorskip("llama_cpp")
    from arte.backends.llama_cpp import LlamaCppBackend

    kw.setdefault("n_ctx", 512)
    return LlamaCppBackend(BackendConfig(name="llama_cpp", model=str(tiny_model.gguf_path), threads=1, **kw))


@pytest.fixture(scope="module")
def hf(tiny_model):
    backend = make_hf(tiny_model, batch_size=4)
    yield backend
    backend.close()


@pytest.fixture(scope="module")
def lcpp(tiny_model):
    backend = make_llama(tiny_model)
    yield backend
    backend.close()


@pytest.fixture(params=["hf", "llama_cpp"])
def backend(request):
    return request.getfixturevalue({"hf": "hf", "llama_cpp": "lcpp"}[request.param])


# ---- the tiny GGUF is the tiny HF model -------------------------------------------------------


def test_gguf_logits_match_torch(tiny_model, hf):
    """llama.cpp on the written GGUF gives torch's logits: proves the writer (names, Q/K permute)."""
    pytest.importorskip("llama_cpp")
    from common.llama_cpp_loader import open_llama

    f32 = 0  # GGML_TYPE_F32 KV cache: the default F16 cache alone puts ~1e-2 into these logits
    llm = open_llama(
        tiny_model.gguf_path,
        n_ctx=256,
        n_threads=1,
        logits_all=True,
        type_k=f32,
        type_v=f32,
        verbose=False,
    )
    try:
        for prompt in PROMPTS:
            ids = hf.encode(prompt)
            llm.reset()
            llm.eval(ids)
            ours = np.asarray(llm.scores[: len(ids)])
            with torch.inference_mode():
                ref = hf.model(torch.tensor([ids])).logits[0].numpy()
            assert np.abs(ours - ref).max() < 1e-4  # 4e-6 seen; a writer without the Q/K permute: 6.6
            assert (ours.argmax(-1) == ref.argmax(-1)).all()
    finally:
        llm.close()


def test_tokenizers_agree(hf, lcpp):
    """The GGUF-derived HF tokenizer (repaired) tokenizes like llama.cpp, incl. no BOS and the
    'smollm' digit split ("\\n\\n4" is "\\n\\n" + "4")."""
    import random

    rng = random.Random(0)
    pieces = [
        *"ab XY\n\t0123456789.,:!?'\"()-+=<>_é東☕",
        "'s",
        " 12",
        "\n\n1",
        "<|im_end|>",
        "  \n",
        " Answer:",
    ]
    texts = ["".join(rng.choice(pieces) for _ in range(rng.randint(1, 24))) for _ in range(300)]
    for text in [*PROMPTS, DEMO, "<|im_start|>user\nhi<|im_end|>\n", *texts]:
        assert hf.encode(text) == lcpp.encode(text), repr(text)
    assert hf.encode("x\n\n4") == [hf.tokenizer.convert_tokens_to_ids(t) for t in ("x", "ĊĊ", "4")]


def test_chat_templates_agree(tiny_model):
    chat_hf, chat_lcpp = make_hf(tiny_model, chat=True), make_llama(tiny_model, chat=True)
    try:
        for prompt in PROMPTS[:2]:
            rendered = chat_hf.render(prompt)
            assert prompt in rendered and rendered != prompt
            assert rendered == chat_lcpp.render(prompt)
            assert chat_hf.encode(rendered) == chat_lcpp.encode(rendered)
        out_hf = chat_hf.generate(PROMPTS[:2], GREEDY)
        assert [g.text for g in out_hf] == [g.text for g in chat_lcpp.generate(PROMPTS[:2], GREEDY)]
    finally:
        chat_lcpp.close()


# ---- generation -------------------------------------------------------------------------------


def test_greedy_is_deterministic(backend):
    first = backend.generate(PROMPTS, GREEDY)
    assert backend.generate(PROMPTS, GREEDY) == first
    assert all(g.completion_tokens > 0 for g in first)
    assert [g.prompt_tokens for g in first] == [len(backend.encode(p)) for p in PROMPTS]


def test_backends_agree_greedy(hf, lcpp):
    """Same weights, same tokenizer: the same greedy text."""
    assert [g.text for g in hf.generate(PROMPTS, GREEDY)] == [g.text for g in lcpp.generate(PROMPTS, GREEDY)]


def test_stop_string(backend):
    prompt = PROMPTS[0]
    (full,) = backend.generate([prompt], SamplingParams(max_new_tokens=16))
    # 3 characters from the middle, cut at characters, not tokens: may straddle a token boundary
    windows = [full.text[i : i + 3] for i in range(len(full.text) // 2, len(full.text) - 2)]
    stop = next(w for w in windows if w.strip() and "\ufffd" not in w)
    (out,) = backend.generate([prompt], SamplingParams(max_new_tokens=16, stop=("@@never@@", stop)))
    assert out.finish_reason == "stop"
    assert out.text.endswith(stop)
    assert out.text == full.text[: full.text.find(stop) + len(stop)]
    assert out.completion_tokens <= full.completion_tokens


def test_max_new_tokens(backend):
    out = backend.generate(PROMPTS, SamplingParams(max_new_tokens=5))
    assert all(g.finish_reason == "length" and g.completion_tokens == 5 for g in out)


def test_output_order_is_input_order(backend):
    """Mixed-length prompts are sorted and batched internally; outputs come back in input order."""
    batched = backend.generate(PROMPTS, GREEDY)
    for prompt, got in zip(PROMPTS, batched):
        assert backend.generate([prompt], GREEDY) == [got]


def test_seeded_sampling_repeats(backend):
    params = SamplingParams(max_new_tokens=8, temperature=1.0, top_p=0.9, seed=3)
    first = backend.generate(PROMPTS[:3], params)
    assert backend.generate(PROMPTS[:3], params) == first
    other = backend.generate(
        PROMPTS[:3], SamplingParams(max_new_tokens=8, temperature=1.0, top_p=0.9, seed=4)
    )
    assert [g.text for g in other] != [g.text for g in first]


def test_hf_prefix_reuse_matches_plain_batching(tiny_model, hf, monkeypatch):
    from arte.backends.hf import HFBackend

    prompts = [DEMO + q for q in QUESTIONS]
    calls = []
    real = HFBackend._prefill_shared_prefix
    monkeypatch.setattr(
        HFBackend, "_prefill_shared_prefix", lambda self, *a: calls.append(1) or real(self, *a)
    )
    monkeypatch.setattr(hf, "prefix_reuse_min_tokens", 16)
    reused = hf.generate(prompts, GREEDY)
    assert calls, "the shared demonstration should have been run once as a prefix"
    monkeypatch.setattr(hf, "prefix_reuse_min_tokens", 10**9)
    plain = hf.generate(prompts, GREEDY)
    one_by_one = make_hf(tiny_model, batch_size=1).generate(prompts, GREEDY)
    assert reused == plain == one_by_one


def test_hf_rows_finishing_early_match_unbatched(tiny_model, hf):
    """Rows that stop early are dropped from the batch (KV rows selected): the rest is unchanged."""
    prompts = [*PROMPTS, *(DEMO + q for q in QUESTIONS)]
    full = hf.generate(prompts, SamplingParams(max_new_tokens=16))
    stop = next(w for w in (full[0].text[i : i + 2] for i in range(4)) if w.strip() and "\ufffd" not in w)
    params = SamplingParams(max_new_tokens=16, stop=(stop,))
    batched = hf.generate(prompts, params)
    assert {g.finish_reason for g in batched} == {"stop", "length"}
    assert batched == make_hf(tiny_model, batch_size=1).generate(prompts, params)


def test_hf_sampling_does_not_depend_on_batching(tiny_model, hf):
    params = SamplingParams(max_new_tokens=8, temperature=0.8, seed=11)
    assert hf.generate(PROMPTS, params) == make_hf(tiny_model, batch_size=1).generate(PROMPTS, params)


# ---- log-likelihood ---------------------------------------------------------------------------

REQUESTS = [
    ("Question: 2 + 3 = ? Answer:", " 5"),
    ("The capital of France is", " Paris, of course."),
    ("Hi", " there"),
    (DEMO, " 9 - 4 = 5. <ans>5</ans>"),
]


def test_hf_loglikelihood_matches_torch(hf):
    got = hf.loglikelihood(REQUESTS)
    tok = hf.tokenizer
    for (ctx, cont), value in zip(REQUESTS, got):
        ctx_ids, whole = tok(ctx)["input_ids"], tok(ctx + cont)["input_ids"]
        assert whole[: len(ctx_ids)] == ctx_ids  # clean boundary in these examples
        with torch.inference_mode():
            logp = torch.log_softmax(hf.model(torch.tensor([whole])).logits[0].double(), -1)
        ref = sum(float(logp[t - 1, whole[t]]) for t in range(len(ctx_ids), len(whole)))
        assert value == pytest.approx(ref, abs=1e-4)
        assert value < 0


def test_loglikelihood_boundary_and_empty(hf):
    """A token merging across the boundary belongs to the continuation; empty parts are handled."""
    ctx, cont = hf.split_request("Hello wor", "ld")
    assert hf.tokenizer.decode(ctx + cont) == "Hello world" and cont
    assert hf.loglikelihood([("Hi", "")]) == [0.0]
    assert hf.loglikelihood([("", "Hello")])[0] < 0


def test_llama_cpp_loglikelihood_matches_hf(hf, lcpp):
    requests = [*REQUESTS, ("Hello wor", "ld"), ("", "Hello")]
    ours, ref = lcpp.loglikelihood(requests), hf.loglikelihood(requests)
    np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-3)


# ---- errors -----------------------------------------------------------------------------------


def test_bad_model_path_names_the_path(tmp_path, tiny_model):
    from arte.backends.hf import HFBackend

    missing = tmp_path / "no-such-model"
    with pytest.raises(UserError, match="no-such-model"):
        HFBackend(BackendConfig(name="hf", model=str(missing), threads=1))
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{not json")
    with pytest.raises(UserError, match="broken"):
        HFBackend(BackendConfig(name="hf", model=str(broken), threads=1))
    pytest.importorskip("llama_cpp")
    from arte.backends.llama_cpp import LlamaCppBackend

    bad_gguf = tmp_path / "garbage.gguf"
    bad_gguf.write_bytes(b"GGUF" + b"\0" * 64)
    with pytest.raises(UserError, match="garbage.gguf"):
        LlamaCppBackend(BackendConfig(name="llama_cpp", model=str(bad_gguf), threads=1))


def test_prompt_longer_than_context(tiny_model, hf):
    small = make_llama(tiny_model, n_ctx=64)
    try:
        long_prompt = " ".join(["word"] * 100)
        with pytest.raises(UserError, match=r"prompt 1 is \d+ tokens but n_ctx is 64"):
            small.generate(["ok", long_prompt], GREEDY)
        (near,) = small.generate([" ".join(["word"] * 60)], GREEDY)
        assert near.finish_reason == "length" and near.prompt_tokens + near.completion_tokens <= 64
    finally:
        small.close()
    with pytest.raises(UserError, match="512"):
        hf.generate([" ".join(["word"] * 600)], GREEDY)


def test_missing_llama_cpp_says_how_to_install(monkeypatch):
    from arte.backends import llama_cpp as module

    monkeypatch.setitem(sys.modules, "llama_cpp", None)
    with pytest.raises(UserError, match="pip install 'llama-cpp-python"):
        module._import_llama_cpp()


def test_pick_threads():
    assert pick_threads(3) == 3
    assert 1 <= pick_threads(0) <= len(available_cores())
    with pytest.raises(ValueError):
        pick_threads(-1)
