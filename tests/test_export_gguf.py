"""GGUF export (export/gguf.py and the gguf_* modules, common/gguf_header.py) and its verification
(export/gguf_verify.py, export/reference.py), checked against references:
the fp32 torch model (llama.cpp logits with the KV cache, top-1 / KL), the HF tokenizer's ids, the
SmolLM2 GGUF that llama.cpp's own converter wrote (tokenizer metadata), gguf.GGUFReader's view of
every written file (census), and KL values computed by hand.

Fast: a tiny random Llama (SmolLM2 tokenizer, tied embeddings) and a tiny random Qwen2
(arte.tiny_model: random q/k/v biases, untied output, an embedding padded beyond the tokenizer like
real Qwen2 checkpoints), both converted by llama.cpp's own converter. A Qwen2 with its own freshly
trained BPE shows what that converter does with a pre-tokenizer it does not know: it refuses.
Slow: the embedded SmolLM2-135M. Every other architecture: tests/test_architectures.py.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
from pathlib import Path

import numpy as np
import pytest

from common.errors import UserError

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
gguf = pytest.importorskip("gguf")
pytest.importorskip("llama_cpp")

from common.gguf_header import read_gguf_header  # noqa: E402
from export.gguf import default_system_prompt, export_gguf  # noqa: E402
from export.gguf_convert import TESTED_ARCHITECTURES, supported_architectures  # noqa: E402
from export.gguf_quantize import QUANT_TYPES, quantize_gguf  # noqa: E402
from export.gguf_verify import gguf_logits, tokenizer_parity, verify_gguf  # noqa: E402
from export.reference import ExportVerificationError, compare_distributions, reference_logits  # noqa: E402

QUANTS = ["f16", "q8_0", "q4_k_m", "f32"]
BPE_CORPUS = [
    "The cat sat on the mat and looked at the birds in the garden.",
    "Il était une fois une petite ville au bord de la mer, où vivait un pêcheur.",
    "Der schnelle braune Fuchs springt über den faulen Hund. Straße, Grüße, Äpfel.",
    "東京は日本の首都です。北京是中国的首都。서울은 한국의 수도입니다.",
    "Numbers like 12, 345 and 6789 appear in tables; 3.14 and 2.71 are constants.",
    "def add(a, b):\n    return a + b\n\nprint(add(2, 3))  # 5\n",
    "Emoji 🙂🚀 and symbols — “quotes”, ‘single’, and ellipses…",
]
CHATML = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + "
    "'<|im_end|>' + '\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)


def build_qwen2_own_bpe(out_dir: Path) -> Path:
    """A 2-layer Qwen2 (hidden 32) with a ~540-token byte-level BPE trained here with Qwen2's
    pre-tokenizer regex: a vocabulary llama.cpp's converter has never seen."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    _QWEN2_SPLIT = QWEN2_SPLIT

    bpe = Tokenizer(models.BPE())
    bpe.normalizer = normalizers.NFC()
    bpe.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(_QWEN2_SPLIT), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False),
        ]
    )
    bpe.decoder = decoders.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)
    trainer = trainers.BpeTrainer(
        vocab_size=600,
        special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(BPE_CORPUS * 4, trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe, eos_token="<|im_end|>", pad_token="<|endoftext|>", chat_template=CHATML
    )
    config = Qwen2Config(
        vocab_size=640,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        tie_word_embeddings=False,
        initializer_range=0.2,
        rope_theta=1e6,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(config).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith(".bias"):  # zero by default: random, so a mishandled bias shows
                param.normal_(0.0, 0.2)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir


@pytest.fixture(scope="module")
def qwen2_dir(module_tmp, smollm2_tokenizer) -> Path:
    from tiny_models import build_tiny_arch

    return build_tiny_arch("qwen2", smollm2_tokenizer, module_tmp.mktemp("tiny-qwen2") / "hf")


@pytest.fixture(scope="module")
def exports(tiny_model, qwen2_dir, module_tmp) -> dict[str, dict[str, dict]]:
    """{"llama"|"qwen2": {quant: record}}: every QUANTS file of both tiny models, verified. Two exports
    per model, so that both converter outputs are tested: F16 (the quantizations' source) and F32
    (asked alone; with others it would become their source and F16 a llama.cpp quantization)."""
    torch.set_num_threads(1)
    out = {}
    for arch, model_dir in (("llama", tiny_model.hf_dir), ("qwen2", qwen2_dir)):
        out_dir = module_tmp.mktemp(f"gguf-{arch}")
        records = [
            *export_gguf(model_dir, out_dir, ["f16", "q8_0", "q4_k_m"], name=f"tiny-{arch}"),
            *export_gguf(model_dir, out_dir, ["f32"], name=f"tiny-{arch}"),
        ]
        out[arch] = {r["quant"]: r for r in records}
    assert all(list(v) == QUANTS for v in out.values())
    return out


@pytest.fixture(params=["llama", "qwen2"])
def arch(request) -> str:
    return request.param


@functools.cache
def _gguf_reader(path: str):
    """gguf's own reader (the reference; ~3 s on a 49k-token vocabulary, so read each file once)."""
    return gguf.GGUFReader(path)


def _reader(record: dict):
    return _gguf_reader(record["path"])


def _field(reader, key: str):
    return reader.fields[key].contents() if key in reader.fields else None


# ---- float exports behave like torch --------------------------------------------------------------


@pytest.mark.parametrize("quant", ["f16", "f32"])
def test_float_exports_match_torch(exports, arch, quant):
    v = exports[arch][quant]["verification"]
    assert v["positions"] == 6 * 17  # 6 prompts x (end of prompt + 16 greedy steps), with the KV cache
    assert v["top1_agreement"] >= 0.99
    assert v["mean_kl"] < 1e-4  # f16 weights ~1e-6 nats here
    assert v["greedy"]["identical"] and v["greedy"]["ids_identical"]
    assert v["tokenizer_parity"]["match"] and v["tokenizer_parity"]["bos_match"]
    assert v["passed"] and not v["flagged"]


def test_f32_logits_equal_a_torch_forward_without_cache(tiny_model, exports):
    """Independent of verify's reference: llama.cpp fed token by token (KV cache) vs one torch forward
    over the whole sequence (no cache)."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model.hf_dir, dtype=torch.float32).eval()
    ids = [504, 3575, 282, 4649, 314, 7042, 30, 216, 33, 32, 31]
    got = gguf_logits(Path(exports["llama"]["f32"]["path"]), [ids], decode_steps=6)[0]
    with torch.inference_mode():
        ref = model(torch.tensor([ids])).logits[0, -7:].numpy()
    assert got.shape == ref.shape
    assert np.abs(got - ref).max() < 0.05  # llama.cpp's default F16 KV cache; a cache bug gives O(1)
    assert (got.argmax(-1) == ref.argmax(-1)).all()


# ---- what the files hold ---------------------------------------------------------------------------


def test_float_layout_and_tied_embeddings(exports, arch):
    meta, tensors = read_gguf_header(Path(exports[arch]["f16"]["path"]))
    types = {t["name"]: t["type"] for t in tensors}
    for t in tensors:
        assert t["type"] == (
            "F32" if len(t["shape"]) == 1 or t["name"].endswith("_norm.weight") else "F16"
        ), t
    assert [t["name"] for t in tensors].count("token_embd.weight") == 1
    if arch == "llama":  # tied: the output matrix is token_embd, written once
        assert "output.weight" not in types
        assert meta["llama.rope.dimension_count"] == 8
    else:  # untied, with Qwen2's q/k/v biases
        assert types["output.weight"] == "F16"
        assert {f"blk.0.attn_{x}.bias" for x in "qkv"} <= set(types)
        assert meta["qwen2.attention.head_count_kv"] == 2
    f32 = read_gguf_header(Path(exports[arch]["f32"]["path"]))[1]
    assert {t["type"] for t in f32} == {"F32"} and len(f32) == len(tensors)


def test_llama_tokenizer_equals_llama_cpp_conversion(exports, smollm2_gguf):
    """Built from the HF tokenizer files, the vocabulary is the one llama.cpp's converter wrote into the
    SmolLM2 GGUF: same tokens, types, merges, pre-tokenizer ('smollm', found by llama.cpp's hash)."""
    ours, theirs = read_gguf_header(Path(exports["llama"]["f16"]["path"]))[0], _gguf_reader(str(smollm2_gguf))
    for key in (
        "model",
        "pre",
        "tokens",
        "token_type",
        "merges",
        "bos_token_id",
        "eos_token_id",
        "add_bos_token",
    ):
        assert ours[f"tokenizer.ggml.{key}"] == _field(theirs, f"tokenizer.ggml.{key}"), key
    assert ours["tokenizer.chat_template"] == _field(theirs, "tokenizer.chat_template")


def test_qwen2_tokenizer_metadata(exports, qwen2_dir):
    """The padded embedding rows become [PADi] tokens (UNUSED), special ids and the template kept."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(qwen2_dir)
    reader = _reader(exports["qwen2"]["f16"])
    assert _field(reader, "tokenizer.ggml.model") == "gpt2"
    assert _field(reader, "tokenizer.ggml.pre") == "smollm"  # found by llama.cpp's hash
    tokens, types = _field(reader, "tokenizer.ggml.tokens"), _field(reader, "tokenizer.ggml.token_type")
    n = len(tok)
    assert len(tokens) == n + 64
    assert tokens[n] == f"[PAD{n}]" and types[n] == gguf.TokenType.UNUSED
    assert types[tok.convert_tokens_to_ids("<|im_end|>")] == gguf.TokenType.CONTROL
    assert _field(reader, "tokenizer.ggml.eos_token_id") == tok.eos_token_id
    assert _field(reader, "tokenizer.ggml.add_bos_token") is False
    assert _field(reader, "tokenizer.chat_template") == tok.chat_template
    assert len(_field(reader, "tokenizer.ggml.merges")) == len(
        json.loads((qwen2_dir / "tokenizer.json").read_text())["model"]["merges"]
    )


# ---- quantizations: census, records, Modelfile ----------------------------------------------------


@pytest.mark.parametrize(
    "arch_quant", [("qwen2", q) for q in QUANTS] + [("llama", "q4_k_m")], ids=lambda x: "-".join(x)
)
def test_census_is_what_the_file_holds(exports, arch_quant):
    """The census (our header parser) against gguf.GGUFReader re-reading the file."""
    record = exports[arch_quant[0]][arch_quant[1]]
    path = Path(record["path"])
    census = json.loads(path.with_name(path.stem + ".census.json").read_text())
    reread: dict[str, dict[str, int]] = {}
    for t in _reader(record).tensors:
        row = reread.setdefault(t.tensor_type.name, {"tensors": 0, "params": 0, "bytes": 0})
        row["tensors"] += 1
        row["params"] += int(t.n_elements)
        row["bytes"] += int(t.n_bytes)
    assert census["types"] == reread == record["census"]
    total_bytes = sum(r["bytes"] for r in reread.values())
    assert math.isclose(record["bits_per_weight"], 8 * total_bytes / census["params"], rel_tol=1e-4)
    assert record["size_bytes"] == path.stat().st_size > total_bytes
    assert record["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()


def test_q4_k_m_census_shows_the_fallback(exports, arch):
    """Rows of 32/64 values cannot be K-quantized (256 per super-block): llama.cpp falls back, and the
    census must say so rather than echo the nominal name."""
    path = Path(exports[arch]["q4_k_m"]["path"])
    census = json.loads(path.with_name(path.stem + ".census.json").read_text())
    assert not any(t.endswith("_K") for t in census["types"])
    assert {"Q5_0", "Q8_0"} <= set(census["types"])
    assert census["k_quant_share"] == 0.0 and "fell back" in census["note"]


def test_quantized_verification_is_recorded(exports, arch):
    q8, q4 = exports[arch]["q8_0"]["verification"], exports[arch]["q4_k_m"]["verification"]
    for v in (q8, q4):
        assert v["flagged"] == (v["top1_agreement"] < 0.9 or v["mean_kl"] > 0.1) == (v["reason"] is not None)
        assert v["tokenizer_parity"]["match"]
    assert q8["mean_kl"] < q4["mean_kl"]  # more bits, closer to torch
    if arch == "llama":  # the tiny Qwen2's larger weights (initializer_range 0.5) quantize worse
        assert q4["mean_kl"] < 0.1


def test_modelfile(exports, arch):
    record = exports[arch]["q8_0"]
    text = Path(record["modelfile"]).read_text()
    assert f"FROM ./{Path(record['path']).name}\n" in text
    assert "<|im_start|>{{ .Role }}" in text
    assert 'PARAMETER stop "<|im_end|>"' in text
    assert record["tied_embeddings"] == (arch == "llama")
    if arch == "llama":  # SmolLM2's template carries a default system prompt
        assert 'SYSTEM """You are a helpful AI assistant named SmolLM' in text


QWEN25_STYLE_TEMPLATE = (  # the shape of Qwen2.5's template: the default system turn is the third literal
    "{%- if tools %}{{- '<|im_start|>system\\n' }}{%- if messages[0]['role'] == 'system' %}"
    "{{- messages[0]['content'] }}{%- else %}{{- 'You are Qwen, created by Alibaba Cloud.' }}{%- endif %}"
    "{{- \"<|im_end|>\\n\" }}{%- else %}{%- if messages[0]['role'] == 'system' %}"
    "{{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}{%- else %}"
    "{{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud.<|im_end|>\\n' }}"
    "{%- endif %}{%- endif %}"
)


def test_default_system_prompt():
    assert default_system_prompt(QWEN25_STYLE_TEMPLATE) == "You are Qwen, created by Alibaba Cloud."
    assert default_system_prompt(CHATML) is None


def test_fast_header_reader_agrees_with_gguf_reader(exports):
    meta, tensors = read_gguf_header(Path(exports["llama"]["q4_k_m"]["path"]))
    reader = _reader(exports["llama"]["q4_k_m"])
    assert [(t["name"], t["type"], t["bytes"]) for t in tensors] == [
        (t.name, t.tensor_type.name, int(t.n_bytes)) for t in reader.tensors
    ]
    assert meta["tokenizer.ggml.tokens"] == _field(reader, "tokenizer.ggml.tokens")
    assert meta["general.file_type"] == _field(reader, "general.file_type")
    assert [t["offset"] for t in tensors] == [int(t.data_offset - reader.data_offset) for t in reader.tensors]
    assert read_gguf_header(Path(exports["llama"]["q4_k_m"]["path"]), metadata=False) == ({}, tensors)


def test_header_reader_refuses_a_file_that_is_not_gguf(exports, tmp_path):
    not_gguf = tmp_path / "model.safetensors.gguf"
    not_gguf.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}")
    with pytest.raises(UserError, match=r"model.safetensors.gguf is not a GGUF v2/v3 file"):
        read_gguf_header(not_gguf)
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(Path(exports["llama"]["q4_k_m"]["path"]).read_bytes()[:4096])
    with pytest.raises(UserError, match=r"cut.gguf: truncated or corrupt GGUF header"):
        read_gguf_header(cut)


# ---- verification catches what it should ----------------------------------------------------------


def test_compare_distributions_known_values():
    ref = np.log([[0.7, 0.3], [0.5, 0.5]]) + 3.0  # shifting logits changes nothing
    got = np.log([[0.4, 0.6], [0.5, 0.5]])
    out = compare_distributions([ref], [got])
    kl0 = 0.7 * math.log(0.7 / 0.4) + 0.3 * math.log(0.3 / 0.6)
    assert math.isclose(out["mean_kl"], kl0 / 2, rel_tol=1e-9)
    assert math.isclose(out["max_kl"], kl0, rel_tol=1e-9)
    assert out["top1_agreement"] == 0.5 and out["positions"] == 2
    with pytest.raises(ValueError, match="shapes differ"):
        compare_distributions(ref, got[:1])


def test_a_different_model_fails_loudly_as_f16_and_is_flagged_as_quant(tiny_model, tiny_model_b):
    """tiny_model_b's GGUF (same tokenizer, other weights) posing as tiny_model's export."""
    reference = reference_logits(tiny_model.hf_dir)
    with pytest.raises(ExportVerificationError, match="F16 export does not behave like the PyTorch"):
        verify_gguf(tiny_model.hf_dir, tiny_model_b.gguf_path, "f16", reference=reference)
    result = verify_gguf(tiny_model.hf_dir, tiny_model_b.gguf_path, "q8_0", reference=reference)
    assert result["flagged"] and "top-1 agreement" in result["reason"] and result["top1_agreement"] < 0.5


def test_tokenizer_parity_reports_the_first_mismatch(exports, gemma3_tokenizer):
    parity = tokenizer_parity(gemma3_tokenizer, Path(exports["llama"]["f16"]["path"]))  # SmolLM2 vocab
    assert not parity["match"] and parity["first_mismatch"]["index"] == 0


def test_an_unknown_pre_tokenizer_is_refused_by_the_converter(tmp_path):
    """llama.cpp identifies a BPE pre-tokenizer by hashing the tokenization of a probe text; for one
    it has never seen it stops rather than guess (our old converter guessed), as one UserError."""
    model_dir = build_qwen2_own_bpe(tmp_path / "hf")
    with pytest.raises(UserError, match="converter failed on .*BPE pre-tokenizer was not recognized"):
        export_gguf(model_dir, tmp_path / "out", ["f16"], verify=False)
    assert not list((tmp_path / "out").glob("*.gguf*"))


# ---- bad input --------------------------------------------------------------------------------------


def test_bad_inputs(tmp_path, tiny_model):
    from transformers import GPT2Config

    with pytest.raises(UserError, match="does not exist"):
        export_gguf(tmp_path / "nope", tmp_path / "out", ["f16"])
    GPT2Config(n_layer=1, n_embd=8, n_head=2, architectures=["NotARealModelForCausalLM"]).save_pretrained(
        tmp_path / "fake"
    )
    with pytest.raises(
        UserError, match="'NotARealModelForCausalLM' is not supported.*LlamaForCausalLM, Qwen2"
    ):
        export_gguf(tmp_path / "fake", tmp_path / "out", ["f16"])
    (tmp_path / "lora").mkdir()
    (tmp_path / "lora" / "adapter_config.json").write_text("{}")
    with pytest.raises(UserError, match="LoRA adapter without its base"):
        export_gguf(tmp_path / "lora", tmp_path / "out", ["f16"])
    with pytest.raises(UserError, match=r"unknown GGUF quant type 'q4_k_x'.*Did you mean.*q4_k_m.*q8_0"):
        export_gguf(tiny_model.hf_dir, tmp_path / "out", ["f16", "q4_k_x"])
    with pytest.raises(UserError, match="unknown GGUF quant type 'q3'.*q2_k"):
        quantize_gguf(tiny_model.gguf_path, tmp_path / "x.gguf", "q3")
    assert not (tmp_path / "out").exists()  # rejected before any work
    assert set(TESTED_ARCHITECTURES) <= supported_architectures()
    assert {"f16", "q8_0", "q4_k_m", "q5_k_m", "q6_k", "q4_0"} <= set(QUANT_TYPES)


def test_a_failed_f16_verification_leaves_no_unverified_file_behind(tiny_model, tmp_path):
    """Token embeddings that differ only below float16's precision (a large shared row plus 1e-3
    noise) all round to the same values in the F16 file: it cannot tell tokens apart, the export is
    broken, and none of the files the call wrote stays on disk to be shipped by mistake."""
    import shutil

    from safetensors.torch import load_file, save_file

    model_dir = tmp_path / "fragile"
    shutil.copytree(tiny_model.hf_dir, model_dir)
    weights = load_file(str(model_dir / "model.safetensors"))
    e = weights["model.embed_tokens.weight"]
    weights["model.embed_tokens.weight"] = (
        e.mean(0, keepdim=True) * 100 + (e - e.mean(0)) * 1e-3
    ).contiguous()
    save_file(weights, str(model_dir / "model.safetensors"), metadata={"format": "pt"})
    out = tmp_path / "out"
    with pytest.raises(
        ExportVerificationError, match=r"F16 export does not behave.*removed the unverified files"
    ):
        export_gguf(model_dir, out, ["f16", "q8_0"])
    assert not out.exists() or not any(out.iterdir())


# ---- the embedded SmolLM2 ---------------------------------------------------------------------------


@pytest.mark.slow
def test_smollm2_export(tmp_path):
    from arte.models import resolve_hf

    torch.set_num_threads(1)
    model_dir = Path(resolve_hf("smollm2-135m"))
    records = {r["quant"]: r for r in export_gguf(model_dir, tmp_path, ["f16", "q8_0", "q4_k_m"])}
    print()
    for quant, r in records.items():
        v = r["verification"]
        print(
            f"{quant:7s} {r['size_bytes'] / 1e6:7.1f} MB {r['bits_per_weight']:6.2f} bpw  top-1 "
            f"{v['top1_agreement']:.3f}  mean KL {v['mean_kl']:.5f}  flagged={v['flagged']}  {r['census']}"
        )
    f16 = records["f16"]["verification"]
    assert f16["top1_agreement"] >= 0.99 and f16["greedy"]["identical"] and f16["tokenizer_parity"]["match"]
    assert records["q8_0"]["verification"]["top1_agreement"] >= 0.9
    assert records["q8_0"]["verification"]["mean_kl"] < records["q4_k_m"]["verification"]["mean_kl"] < 0.1
    q4 = records["q4_k_m"]["census"]
    assert "Q4_K" in q4 and "Q5_0" in q4  # hidden 576 = 2.25 x 256: most rows fall back


def test_a_missing_converter_names_the_command_that_installs_it(tiny_model, tmp_path, monkeypatch):
    monkeypatch.setenv("ARTE_LLAMA_CPP_CONVERTER", str(tmp_path / "nowhere"))
    with pytest.raises(UserError, match=r"converter .*not installed.*export.llama_cpp_converter install"):
        export_gguf(tiny_model.hf_dir, tmp_path / "out", ["f16"])
    assert not (tmp_path / "out").exists()
