"""ONNX export (export/onnx.py and the onnx_* modules, common/onnx_decode.py): fp32 / int8 / int4 of a
tiny random Llama and a tiny random Qwen2,
loaded back with ORTModelForCausalLM and a plain InferenceSession, checked against PyTorch (logits
with the KV cache, greedy generation), tied embedding stored once, bad input. The slow test exports
the embedded SmolLM2-135M."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("optimum.onnxruntime")

from common.errors import UserError  # noqa: E402
from common.onnx_decode import EXTERNAL_DATA_FILE, ONNX_FILE, session_options  # noqa: E402
from common.onnx_tensors import tensor_bytes  # noqa: E402
from export import onnx as ox  # noqa: E402
from export import onnx_verify as ov  # noqa: E402
from export.onnx_export import (  # noqa: E402
    _share_duplicate_weights,
    embedding_copies,
    load_model,
    save_model,
)
from export.onnx_quantize import quantize_onnx_int4, quantize_onnx_int8  # noqa: E402
from export.reference import ExportVerificationError, load_reference  # noqa: E402


@pytest.fixture(scope="module")
def tiny_qwen2_dir(module_tmp, smollm2_tokenizer) -> Path:
    """A tiny random Qwen2 (2 layers, hidden 32, tied embeddings) with the SmolLM2 tokenizer."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from arte.tiny_model import save_hf

    tok = smollm2_tokenizer
    config = Qwen2Config(
        vocab_size=len(tok),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        tie_word_embeddings=True,
        initializer_range=0.2,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(config).eval()
    # save_hf: tokenizer.save_pretrained, then delete the GGUF-derived tokenizer.model
    return save_hf(model, tok, module_tmp.mktemp("tiny-qwen2") / "hf")


@pytest.fixture(scope="module", params=["llama", "qwen2"])
def exported(request, tiny_model, tiny_qwen2_dir, module_tmp):
    """(model_dir, records) of all three variants, exported once per architecture."""
    model_dir = Path(tiny_model.hf_dir) if request.param == "llama" else tiny_qwen2_dir
    out = module_tmp.mktemp(f"onnx-{request.param}")
    return model_dir, {r["quant"]: r for r in ox.export_onnx(model_dir, out, ["fp32", "int8", "int4"])}


def _torch_model(model_dir: Path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(model_dir, dtype="float32").eval()


def test_every_variant_exported_loaded_and_recorded(exported):
    _, records = exported
    assert list(records) == ["fp32", "int8", "int4"]
    on_disk = json.loads((Path(records["fp32"]["path"]).parent / "onnx_export.json").read_text())
    assert [r["quant"] for r in on_disk] == ["fp32", "int8", "int4"]
    for quant, rec in records.items():
        onnx_dir = Path(rec["path"])
        assert rec["load"]["ort_model_for_causal_lm"] and rec["load"]["inference_session"]
        assert any(name.startswith("past_key_values.") for name in rec["load"]["inputs"]), (
            "no KV cache inputs"
        )
        for name in ("tokenizer.json", "tokenizer_config.json", "config.json", "generation_config.json"):
            assert (onnx_dir / name).is_file(), f"{quant}: {name} missing"
        files = [onnx_dir / f for f in rec["files"]]
        assert rec["size_bytes"] == sum(f.stat().st_size for f in files)
        assert rec["sha256"] == {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in files}
        assert rec["verification"]["tokenizer_parity"]["match"]
        v = rec["verification"]
        assert 0.0 <= v["top1_agreement"] <= 1.0 and v["mean_kl"] >= 0.0 and v["positions"] > 0
        assert isinstance(rec["flagged"], bool) and (rec["flagged"] == bool(v["reason"]))
    assert records["fp32"]["bits_per_weight"] > 31.5
    assert records["int8"]["bits_per_weight"] < 8.5
    assert records["int4"]["bits_per_weight"] < 5.5
    assert records["int8"]["quantization"]["preset"] in ("avx512_vnni", "avx512", "avx2", "arm64")
    assert (
        records["int4"]["quantization"]["symmetric"] and records["int4"]["quantization"]["block_size"] == 32
    )


def test_fp32_matches_pytorch_over_kv_cache_decode_steps(exported):
    _, records = exported
    v = records["fp32"]["verification"]
    assert v["decode_steps"] >= 4  # several cached steps, not a single forward
    assert v["top1_agreement"] >= 0.99
    assert v["mean_kl"] < 1e-4
    assert v["greedy"]["identical"] and not records["fp32"]["flagged"]


def test_onnx_kv_cache_logits_equal_a_full_pytorch_forward(exported):
    """The incremental (cached) ONNX logits against PyTorch run once over the whole sequence without
    a cache: a wrong cache layout, position id or mask would show here."""
    import torch

    model_dir, records = exported
    ids = [1, 504, 3458, 314, 4649, 30, 216, 42, 7, 900, 12, 3]
    got = ov.onnx_logits(Path(records["fp32"]["path"]), [ids], decode_steps=8)[0]
    with torch.no_grad():
        full = _torch_model(model_dir)(torch.tensor([ids]), use_cache=False).logits[0].numpy()
    expected = full[len(ids) - 9 :]  # positions predicting after the prompt and after each fed token
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=1e-4)


def test_ort_model_generate_matches_pytorch_generate(exported):
    """optimum's loader with its own generate loop (KV cache) vs transformers' generate."""
    import torch
    from optimum.onnxruntime import ORTModelForCausalLM

    model_dir, records = exported
    ids = torch.tensor([[1, 504, 3458, 314, 4649]])
    ort_model = ORTModelForCausalLM.from_pretrained(
        records["fp32"]["path"], session_options=session_options(1)
    )
    kw = dict(max_new_tokens=6, do_sample=False, min_new_tokens=6, attention_mask=torch.ones_like(ids))
    with torch.no_grad():
        assert ort_model.generate(ids, **kw).tolist() == _torch_model(model_dir).generate(ids, **kw).tolist()


def test_tied_embedding_stored_once_in_every_variant(exported):
    model_dir, records = exported
    config = json.loads((model_dir / "config.json").read_text())
    assert config["tie_word_embeddings"]
    vocab, hidden = config["vocab_size"], config["hidden_size"]
    for quant, rec in records.items():
        model = load_model(Path(rec["path"]), external=False)
        shapes = [(list(t.dims), tensor_bytes(t)) for t in model.graph.initializer if vocab in t.dims]
        big = [(dims, n) for dims, n in shapes if n >= vocab * hidden // 2]  # any layout, >= 4 bits/value
        assert len(big) == 1, f"{quant}: the embedding is stored {len(big)} times: {big}"
        limit = {"fp32": 4, "int8": 1, "int4": 0.5}[quant] * vocab * hidden
        assert big[0][1] == limit, f"{quant}: {big[0][1]} embedding bytes, expected {limit}"
        assert len(rec["embedding_copies"]) == 1


def test_share_duplicate_weights_dedups_a_transposed_copy(exported):
    """The fallback for an export that would hold a tied matrix twice: the copy becomes a Transpose of
    the kept initializer, and the model computes the same logits."""
    import onnx
    from onnx import numpy_helper

    _, records = exported
    fp32_dir = Path(records["fp32"]["path"])
    model = load_model(fp32_dir)
    embed = next(t for t in model.graph.initializer if t.name == "model.embed_tokens.weight")
    transpose = next(n for n in model.graph.node if n.op_type == "Transpose" and n.input[0] == embed.name)
    copy = numpy_helper.from_array(np.ascontiguousarray(numpy_helper.to_array(embed).T), "lm_head_copy")
    model.graph.initializer.append(copy)
    model.graph.node.remove(transpose)
    for node in model.graph.node:
        node.input[:] = ["lm_head_copy" if x == transpose.output[0] else x for x in node.input]
    assert len(embedding_copies(model, *numpy_helper.to_array(embed).shape)) == 2
    assert _share_duplicate_weights(model) == ["lm_head_copy"]
    assert len(embedding_copies(model, *numpy_helper.to_array(embed).shape)) == 1
    onnx.checker.check_model(model)
    out = fp32_dir.parent / "dedup-check"
    shutil.copytree(fp32_dir, out, dirs_exist_ok=True)
    save_model(model, out)
    ids = [[1, 504, 3458, 314, 4649, 30]]
    np.testing.assert_allclose(ov.onnx_logits(out, ids, 2)[0], ov.onnx_logits(fp32_dir, ids, 2)[0], atol=1e-6)
    # int8 of the deduplicated model holds the matrix once, as 1 byte a value (Gemma 3 kept both)
    int8 = load_model(quantize_onnx_int8(out, fp32_dir.parent / "dedup-int8"), external=False)
    vocab, hidden = numpy_helper.to_array(embed).shape
    assert [c["bytes"] for c in embedding_copies(int8, vocab, hidden)] == [vocab * hidden]


def test_int4_with_external_data_loads_in_both_runtimes(exported, tmp_path):
    _, records = exported
    fp32_dir, int4_dir = Path(records["fp32"]["path"]), Path(records["int4"]["path"])
    out = quantize_onnx_int4(fp32_dir, tmp_path / "int4-ext", external_data=True)
    assert (out / EXTERNAL_DATA_FILE).stat().st_size > (out / ONNX_FILE).stat().st_size
    assert ov.load_checks(out)["ort_model_for_causal_lm"]
    ids = [[1, 504, 3458, 314, 4649, 30]]
    np.testing.assert_array_equal(ov.onnx_logits(out, ids, 2)[0], ov.onnx_logits(int4_dir, ids, 2)[0])
    assert ox.file_record(out, 1)["files"] == [ONNX_FILE, EXTERNAL_DATA_FILE]


def test_broken_fp32_export_fails_loudly_and_a_quant_is_only_flagged(exported, tmp_path):
    """A corrupted fp32 file must raise ExportVerificationError; the same file verified as a
    quantization comes back flagged with a reason instead."""
    from onnx import numpy_helper

    model_dir, records = exported
    broken = tmp_path / "broken"
    shutil.copytree(records["fp32"]["path"], broken)
    model = load_model(broken)
    for i, t in enumerate(model.graph.initializer):
        if "embed_tokens" in t.name:
            noisy = numpy_helper.to_array(t) + np.random.default_rng(0).normal(0, 0.5, t.dims).astype(
                np.float32
            )
            model.graph.initializer[i].CopyFrom(numpy_helper.from_array(noisy, t.name))
    save_model(model, broken)
    with pytest.raises(ExportVerificationError, match="fp32 ONNX export does not behave like the PyTorch"):
        ov.verify_onnx(model_dir, broken, "fp32")
    result = ov.verify_onnx(model_dir, broken, "int8")
    assert result["flagged"] and "top-1 agreement" in result["reason"]


def test_tokenizer_drift_is_caught(exported, tmp_path):
    model_dir, records = exported
    drifted = tmp_path / "drifted"
    shutil.copytree(records["fp32"]["path"], drifted)
    cfg = json.loads((drifted / "tokenizer_config.json").read_text())
    cfg["add_bos_token"] = not cfg.get("add_bos_token", False)
    (drifted / "tokenizer_config.json").write_text(json.dumps(cfg))
    parity = ov.tokenizer_parity(load_reference(model_dir).tokenizer, drifted)
    assert not parity["match"] and not parity["bos_match"] and parity["body_match"]


def test_missing_directory_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        ox.export_onnx(tmp_path / "nope", tmp_path / "out", ["fp32"])


def test_unsupported_architecture_lists_the_supported_ones(tmp_path):
    (tmp_path / "config.json").write_text(
        json.dumps({"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"]})
    )
    with pytest.raises(UserError, match="Supported: Llama, Qwen2, Qwen3, Mistral, Phi-3, Gemma 2"):
        ox.export_onnx(tmp_path, tmp_path / "out", ["fp32"])


def test_unknown_quant_and_lora_adapter_are_user_errors(tmp_path, tiny_model):
    with pytest.raises(UserError, match="int3.*Valid: fp32, int4, int8"):
        ox.export_onnx(tiny_model.hf_dir, tmp_path / "out", ["fp32", "int3"])
    (tmp_path / "adapter_config.json").write_text("{}")
    with pytest.raises(UserError, match="LoRA adapter"):
        ox.export_onnx(tmp_path, tmp_path / "out", ["fp32"])


@pytest.mark.slow
def test_smollm2_exports_and_verifies_every_variant(tmp_path):
    from arte.models import resolve_hf

    model_dir = Path(resolve_hf("smollm2-135m"))
    records = ox.export_onnx(model_dir, tmp_path / "onnx", ["fp32", "int8", "int4"])
    header = ("quant", "MB", "bits/w", "top1", "mean KL", "greedy", "flagged", "export s")
    print("\n" + " ".join(f"{h:>9}" for h in header))
    for r in records:
        v = r["verification"]
        mb, bits, top1, kl = r["size_bytes"] / 1e6, r["bits_per_weight"], v["top1_agreement"], v["mean_kl"]
        row = (r["quant"], f"{mb:.1f}", f"{bits:.2f}", f"{top1:.3f}", f"{kl:.4f}", v["greedy"]["identical"])
        row += (r["flagged"], r["export_seconds"])
        print(" ".join(f"{str(x):>9}" for x in row))
    by_quant = {r["quant"]: r for r in records}
    assert by_quant["fp32"]["verification"]["top1_agreement"] >= 0.99
    assert by_quant["fp32"]["verification"]["greedy"]["identical"]
    for quant in ("int8", "int4"):
        v = by_quant[quant]["verification"]
        assert v["tokenizer_parity"]["match"] and v["positions"] >= 100
        assert by_quant[quant]["flagged"] == bool(v["reason"])
    assert (
        by_quant["int4"]["size_bytes"] < by_quant["int8"]["size_bytes"] < by_quant["fp32"]["size_bytes"] / 3
    )
    for r in records:
        assert len(r["embedding_copies"]) == 1
