"""`arte export`: pre-export checks, LoRA adapters, the manifest, through the real CLI."""

from __future__ import annotations

import json
import shutil

import pytest

from arte.cli import main
from common.errors import UserError
from export.checks import pre_export_checks


def test_checks_pass_on_a_sound_model_and_record_tied_embeddings(tiny_model):
    checks = pre_export_checks(tiny_model.hf_dir)
    assert checks["tied_embeddings"] is True and checks["architecture"] == "LlamaForCausalLM"
    assert checks["embedding_rows"] == checks["vocab_size"] >= checks["tokenizer_tokens"]


def test_safetensors_header_reader_agrees_with_safetensors(tiny_model, tmp_path):
    from safetensors import safe_open

    from common.safetensors_header import DTYPE_BYTES, safetensors_tensors

    tensors = safetensors_tensors(tiny_model.hf_dir)
    (file,) = {t.file for t in tensors}
    with safe_open(str(file), "np") as f:
        assert sorted(t.name for t in tensors) == sorted(f.keys())
        for t in tensors:
            array = f.get_tensor(t.name)
            assert t.shape == array.shape and t.numel == array.size
            assert t.nbytes == array.nbytes == t.numel * DTYPE_BYTES[t.dtype]
    assert safetensors_tensors(file) == tensors and safetensors_tensors(tmp_path) == []
    (tmp_path / "bad.safetensors").write_bytes(b"GGUF\x03\x00\x00\x00")
    with pytest.raises(UserError, match="bad.safetensors is not a safetensors file"):
        safetensors_tensors(tmp_path)


def test_eos_disagreement_is_refused(tiny_model, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(tiny_model.hf_dir, bad)
    gen = json.loads((bad / "generation_config.json").read_text())
    gen["eos_token_id"] = 1234
    (bad / "generation_config.json").write_text(json.dumps(gen))
    with pytest.raises(UserError, match=r"EOS: tokenizer says \d+, generation_config.json says \[1234\]"):
        pre_export_checks(bad)


def test_unsupported_architecture_lists_the_tested_ones(tmp_path, capsys):
    (tmp_path / "config.json").write_text(
        json.dumps({"model_type": "nope", "architectures": ["NotARealModelForCausalLM"]})
    )
    assert main(["export", "gguf", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "'NotARealModelForCausalLM' is not supported by llama.cpp's converter" in err
    assert "LlamaForCausalLM" in err and "Gemma3ForCausalLM" in err and "Phi3ForCausalLM" in err
    assert main(["export", "onnx", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    assert "Supported: Llama, Qwen2, Qwen3, Mistral, Phi-3, Gemma 2" in capsys.readouterr().err


def test_adapter_without_base_is_refused(tmp_path, capsys):
    (tmp_path / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": "org/not-here"}))
    assert main(["export", "gguf", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    assert "pass the base model with --base" in capsys.readouterr().err


def test_lora_adapter_is_merged_then_exported_and_manifested(tiny_model, tmp_path, capsys):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny_model.hf_dir)
    peft = get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    with torch.no_grad():  # a small update: the tiny model's logits stay peaked, so greedy text is stable
        for name, param in peft.named_parameters():
            if "lora_B" in name:
                param.mul_(0.05)
    adapter = tmp_path / "adapter"
    peft.save_pretrained(adapter)
    out = tmp_path / "out"
    args = [
        "export",
        "all",
        str(adapter),
        "--base",
        str(tiny_model.hf_dir),
        "--gguf",
        "f32",
        "--onnx",
        "",
        "--out",
        str(out),
    ]
    assert main(args) == 0, capsys.readouterr().err
    manifest = json.loads((out / "manifest.json").read_text())
    (variant,) = manifest["variants"]
    assert variant["format"] == "gguf" and variant["quant"] == "f32"
    assert variant["verification"]["top1_agreement"] >= 0.99
    assert manifest["checks"]["tied_embeddings"] and manifest["source"]["weights_sha256"]
    assert "gguf" in manifest["tool_versions"] and "llama-cpp-python" in manifest["tool_versions"]
    assert "| gguf | f32 |" in (out / "README.md").read_text()  # issue 28: the model card
    merged = AutoModelForCausalLM.from_pretrained(out / "merged-source")
    ids = torch.tensor([[1, 2, 3, 4]])
    untouched = AutoModelForCausalLM.from_pretrained(tiny_model.hf_dir)(ids).logits
    ref = peft.merge_and_unload()
    assert torch.allclose(merged(ids).logits, ref(ids).logits, atol=1e-5)  # the adapter really is in
    assert not torch.allclose(merged(ids).logits, untouched, atol=1e-4)


def test_an_export_folder_holds_one_source_model(tiny_model, tiny_model_b, tmp_path, capsys):
    """Issue 29 (3): B exported into A's folder was mixed with A's variants; now refused, or
    --overwrite clears A's exports first. Models compare by weights sha256."""
    from export.manifest import check_same_source, update_manifest

    out = tmp_path / "x"
    (out / "gguf").mkdir(parents=True)
    (out / "gguf" / "a-f16.gguf").write_bytes(b"A")
    record = {"format": "gguf", "quant": "f16", "file": "gguf/a-f16.gguf"}
    update_manifest(out, tiny_model.hf_dir, {}, [record])
    before = (out / "manifest.json").read_bytes()
    code = main(["export", "gguf", str(tiny_model_b.hf_dir), "--quant", "q8_0", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert f"--out {out} holds the exports of another model ({tiny_model.hf_dir.resolve()}" in err
    assert "--overwrite" in err
    assert (out / "manifest.json").read_bytes() == before and (out / "gguf" / "a-f16.gguf").is_file()
    check_same_source(out, tiny_model.hf_dir)  # the same model: more variants may join it
    check_same_source(out, tiny_model_b.hf_dir, overwrite=True)
    assert not (out / "manifest.json").exists() and not (out / "gguf").exists()
