"""Architectures users bring, proven rather than claimed: a tiny random model of each family in
arte.tiny_model.TINY_ARCHITECTURES (Llama, Qwen2, Qwen3, Mistral, Phi-3, Gemma 2, Gemma 3 text) is
exported to GGUF F16 (llama.cpp's converter) and ONNX fp32 (optimum-onnx), and each file is verified
against the torch model through its KV cache: top-1 agreement >= 0.99, identical greedy text, the
tokenizer's ids. Gemma's specifics are checked on top: the sliding window (8 tokens, exceeded by the
verification), soft-capping kept in the file and acting on the logits, and the chat template with
its BOS agreeing across transformers, llama.cpp and onnxruntime.
"""

from __future__ import annotations

from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("llama_cpp")
pytest.importorskip("optimum.exporters.onnx")

from arte.tiny_model import TINY_ARCHITECTURES  # noqa: E402
from common.gguf_header import read_gguf_header  # noqa: E402
from export.gguf import export_gguf  # noqa: E402
from export.gguf_convert import TESTED_ARCHITECTURES  # noqa: E402
from export.onnx import export_onnx  # noqa: E402

ARCHS = list(TINY_ARCHITECTURES)


@pytest.fixture(scope="module")
def exported(request, module_tmp) -> dict:
    """{arch: (hf_dir, gguf f16 record, onnx fp32 record)}, built and exported once per arch."""
    return {}


def _export(arch: str, request, module_tmp, cache: dict):
    if arch in cache:
        return cache[arch]
    from tiny_models import build_tiny_arch

    tokenizer = request.getfixturevalue(
        "gemma3_tokenizer" if TINY_ARCHITECTURES[arch][1].startswith("gemma") else "smollm2_tokenizer"
    )
    torch.set_num_threads(1)
    root = module_tmp.mktemp(f"arch-{arch}")
    hf_dir = build_tiny_arch(arch, tokenizer, root / "hf")
    (gguf,) = export_gguf(hf_dir, root / "gguf", ["f16"], name=f"tiny-{arch}")
    (onnx,) = export_onnx(hf_dir, root / "onnx", ["fp32"])
    cache[arch] = (hf_dir, gguf, onnx)
    return cache[arch]


@pytest.fixture(params=ARCHS)
def arch_export(request, module_tmp, exported):
    return request.param, *_export(request.param, request, module_tmp, exported)


def test_every_tested_architecture_has_a_tiny_model():
    built = {TINY_ARCHITECTURES[a][0].removesuffix("Config").removesuffix("Text") for a in ARCHS}
    assert {a.removesuffix("ForCausalLM") for a in TESTED_ARCHITECTURES} == built


def test_gguf_f16_and_onnx_fp32_match_torch(arch_export):
    arch, hf_dir, gguf, onnx = arch_export
    for what, v in (("gguf f16", gguf["verification"]), ("onnx fp32", onnx["verification"])):
        assert v["positions"] == 6 * 17, what  # 6 prompts x (prompt end + 16 cached decode steps)
        assert v["top1_agreement"] >= 0.99, (arch, what, v["top1_agreement"])
        assert v["mean_kl"] < 1e-3, (arch, what, v["mean_kl"])
        assert v["greedy"]["identical"], (arch, what)
        assert v["tokenizer_parity"]["match"], (arch, what, v["tokenizer_parity"])
        assert v["passed"] and not v["flagged"], (arch, what)
    meta = read_gguf_header(Path(gguf["path"]))[0]
    expected = {"mistral": "llama", "qwen3": "qwen3", "gemma3": "gemma3"}.get(arch, arch)
    assert meta["general.architecture"] == expected


@pytest.mark.parametrize("arch", ["gemma2", "gemma3"])
def test_gemma_sliding_window_and_soft_capping_are_kept(arch, request, module_tmp, exported):
    """The GGUF carries the window and the caps, and the verification ran past the window: its
    sequences are longer than 8 tokens, so a runtime that ignored the window (or the caps, which
    here change every logit) would have failed the KL bound above."""
    hf_dir, gguf, onnx = _export(arch, request, module_tmp, exported)
    from export.reference import PROMPTS

    meta = read_gguf_header(Path(gguf["path"]))[0]
    fields = TINY_ARCHITECTURES[arch][2]
    assert meta[f"{arch}.attention.sliding_window"] == fields["sliding_window"] == 8
    tokenizer = request.getfixturevalue("gemma3_tokenizer")
    shortest = min(len(tokenizer(p)["input_ids"]) for p in PROMPTS) + 16
    assert shortest > 8  # every verified sequence runs beyond the window
    if arch == "gemma2":
        assert meta["gemma2.attn_logit_softcapping"] == fields["attn_logit_softcapping"]
        assert meta["gemma2.final_logit_softcapping"] == fields["final_logit_softcapping"]
        _assert_caps_act(hf_dir, tokenizer, fields["final_logit_softcapping"])


def _assert_caps_act(hf_dir: Path, tokenizer, cap: float) -> None:
    """Without the caps the tiny Gemma 2 gives other next-token distributions (so the KL bound of
    the verification could not pass with a runtime that dropped them)."""
    from transformers import AutoModelForCausalLM

    from export.reference import compare_distributions

    ids = torch.tensor([tokenizer("The capital of France is")["input_ids"]])
    model = AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32).eval()
    with torch.inference_mode():
        capped = model(ids).logits[0].numpy()
        model.config.final_logit_softcapping = model.config.attn_logit_softcapping = None
        for layer in model.model.layers:
            layer.self_attn.config.attn_logit_softcapping = None
            layer.self_attn.softcap = None
        uncapped = model(ids).logits[0].numpy()
    assert abs(capped).max() <= cap + 1e-4 < abs(uncapped).max()
    assert compare_distributions([capped], [uncapped])["mean_kl"] > 1e-2


def test_gemma_chat_template_and_bos_agree_across_runtimes(request, module_tmp, exported):
    """One user turn, rendered and tokenized as each backend does it (arte/backends): transformers
    (apply_chat_template, no added specials), llama.cpp (the GGUF's template through llama-cpp-python's
    Jinja2 formatter, add_bos off) and onnxruntime (the ONNX directory's tokenizer files): the same
    ids, with exactly one BOS in front. Plain text: BOS added by all three."""
    from llama_cpp import Llama
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter
    from transformers import AutoTokenizer

    hf_dir, gguf, onnx = _export("gemma3", request, module_tmp, exported)
    hf_tok = AutoTokenizer.from_pretrained(hf_dir)
    ort_tok = AutoTokenizer.from_pretrained(onnx["path"])
    llm = Llama(gguf["path"], vocab_only=True, verbose=False)
    messages = [{"role": "user", "content": "What is 17 + 25?"}]
    ids = {}
    for name, tok in (("hf", hf_tok), ("onnx", ort_tok)):
        text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        ids[name] = tok(text, add_special_tokens=False)["input_ids"]
    template = llm.metadata["tokenizer.chat_template"]
    bos = llm.detokenize([llm.token_bos()], special=True).decode()
    eos = llm.detokenize([llm.token_eos()], special=True).decode()
    text = Jinja2ChatFormatter(template, eos_token=eos, bos_token=bos, add_generation_prompt=True)(
        messages=messages
    ).prompt
    assert text.startswith("<bos><start_of_turn>user\n") and text.endswith("<start_of_turn>model\n")
    ids["llama_cpp"] = llm.tokenize(text.encode(), add_bos=False, special=True)
    assert ids["hf"] == ids["onnx"] == ids["llama_cpp"]
    assert ids["hf"][0] == hf_tok.bos_token_id and ids["hf"].count(hf_tok.bos_token_id) == 1
    plain = "Hello world"
    assert hf_tok(plain)["input_ids"] == ort_tok(plain)["input_ids"] == llm.tokenize(plain.encode())
    assert hf_tok(plain)["input_ids"][0] == hf_tok.bos_token_id
