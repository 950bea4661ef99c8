"""Training that fits the hardware, without a GPU: the memory estimate's parameter counts against
real models built in memory (and Llama-3-8B's published 8.03B), its parts against hand-computed
bytes, the GPU refusal and `dtype: auto` with faked device facts, the 4-bit refusals, the config
plumbing of the new fields, and the shipped accelerate configs parsed by accelerate itself."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from arte.stages.align import AlignConfig
from arte.stages.train import TrainConfig
from arte.training.memory_estimate import TrainingSettings, count_parameters, lora_parameters, training_memory
from arte.training.precision import (
    DeviceFacts,
    check_memory_fits,
    launcher_sharding,
    plan_memory,
    quantization_config,
    resolve_precision,
    training_settings,
)
from common.config import from_dict
from common.errors import UserError

ROOT = Path(__file__).resolve().parents[1]

LLAMA_3_8B = {  # meta-llama/Meta-Llama-3-8B config.json (the fields that fix the count)
    "model_type": "llama",
    "vocab_size": 128256,
    "hidden_size": 4096,
    "intermediate_size": 14336,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "tie_word_embeddings": False,
    "attention_bias": False,
    "mlp_bias": False,
}
NO_GPU = DeviceFacts(cuda=False)
H100 = DeviceFacts(cuda=True, bf16=True, free_bytes=80 * 10**9, name="fake H100")
V100 = DeviceFacts(cuda=True, bf16=False, free_bytes=32 * 10**9, name="fake V100")


def tiny_model_of(arch: str):
    """A random model of arte.tiny_model's `arch` with a 1000-token vocabulary (no tokenizer needed)."""
    import torch
    import transformers
    from transformers import AutoModelForCausalLM

    from arte.tiny_model import TINY_ARCHITECTURES

    torch.set_num_threads(1)
    config_class, _, fields = TINY_ARCHITECTURES[arch]
    config = getattr(transformers, config_class)(
        vocab_size=1000, pad_token_id=0, bos_token_id=1, eos_token_id=2, **fields
    )
    return AutoModelForCausalLM.from_config(config)


@pytest.mark.parametrize("arch", ["llama", "qwen2", "qwen3", "mistral", "phi3", "gemma2", "gemma3"])
def test_parameter_count_equals_the_real_models(arch):
    pytest.importorskip("transformers")
    model = tiny_model_of(arch)
    counts = count_parameters(model.config.to_dict())
    assert counts["total"] == sum(p.numel() for p in model.parameters())
    linear = sum(m.weight.numel() for n, m in model.named_modules() if n.endswith("_proj"))
    assert counts["projections"] == linear


@pytest.mark.parametrize(
    "arch, targets",
    [
        ("llama", ["o_proj", "down_proj", "q_proj"]),
        ("phi3", ["qkv_proj", "gate_up_proj", "o_proj", "q_proj"]),
    ],
)
def test_lora_parameter_count_equals_peft(arch, targets):
    """peft matches module names: Phi-3 has no q_proj (fused qkv_proj), so that target adds nothing."""
    peft = pytest.importorskip("peft")

    model = tiny_model_of(arch)
    wrapped = peft.get_peft_model(model, peft.LoraConfig(r=4, target_modules=targets, task_type="CAUSAL_LM"))
    trainable = sum(p.numel() for p in wrapped.parameters() if p.requires_grad)
    assert lora_parameters(model.config.to_dict(), 4, targets) == trainable > 0


def test_llama3_8b_has_8_03_billion_parameters():
    assert round(count_parameters(LLAMA_3_8B)["total"] / 1e9, 2) == 8.03


def test_memory_parts_for_full_bf16_and_lora():
    n = count_parameters(LLAMA_3_8B)["total"]
    full = training_memory(LLAMA_3_8B, TrainingSettings(dtype="bfloat16", compute_dtype="bfloat16"))
    assert (full.weights, full.gradients, full.optimizer) == (2 * n, 2 * n, 4 * n)
    copy = training_memory(
        LLAMA_3_8B, TrainingSettings(dtype="bfloat16", compute_dtype="bfloat16", reference="copy")
    )
    assert copy.reference == 2 * n and copy.total == full.total + 2 * n
    lora = training_memory(
        LLAMA_3_8B,
        TrainingSettings("bfloat16", "bfloat16", method="lora", lora_r=8, lora_targets=("q_proj",)),
    )
    trainable = 32 * 8 * (4096 + 4096)
    assert lora.trainable == trainable and lora.gradients == 4 * trainable and lora.reference == 0
    nf4 = training_memory(LLAMA_3_8B, dataclasses.replace(lora.settings, quantization="4bit"))
    counts = count_parameters(LLAMA_3_8B)  # projections at 4.127 bits, embeddings and norms in bf16
    assert nf4.weights == pytest.approx(counts["projections"] * 4.127 / 8 + (n - counts["projections"]) * 2)
    assert 0.25 * lora.weights < nf4.weights < 0.4 * lora.weights


def test_activations_shrink_with_checkpointing_and_scale_with_tokens():
    base = TrainingSettings(compute_dtype="bfloat16", batch_size=2, max_length=1024)
    plain = training_memory(LLAMA_3_8B, base).activations
    assert plain == 2 * 1024 * 32 * (11 * 4096 + 4 * 14336) * 2
    checkpointed = training_memory(LLAMA_3_8B, dataclasses.replace(base, gradient_checkpointing=True))
    assert checkpointed.activations < plain / 10
    dpo = training_memory(LLAMA_3_8B, dataclasses.replace(base, sequences_per_example=2))
    assert dpo.activations == 2 * plain


def test_sharding_divides_the_model_states_not_the_activations():
    one = training_memory(LLAMA_3_8B, TrainingSettings(dtype="bfloat16", compute_dtype="bfloat16"))
    ddp = training_memory(LLAMA_3_8B, dataclasses.replace(one.settings, num_processes=8, sharding="ddp"))
    fsdp = training_memory(LLAMA_3_8B, dataclasses.replace(one.settings, num_processes=8, sharding="fsdp"))
    assert ddp.total == one.total
    assert fsdp.weights == one.weights / 8 and fsdp.optimizer == one.optimizer / 8
    assert fsdp.activations == one.activations
    lines = fsdp.lines()
    assert "8 process(es), fsdp" in lines[0] and lines[-1].split()[:1] == ["total"]
    assert fsdp.as_dict()["total_gb"] == round(fsdp.total / 1e9, 2)


def test_unknown_architecture_is_a_value_error():
    with pytest.raises(ValueError, match="mixtral"):
        count_parameters({**LLAMA_3_8B, "model_type": "mixtral"})


# ---- precision, device facts ----------------------------------------------------------------------


def test_auto_dtype_follows_the_device():
    assert resolve_precision("auto", "full", NO_GPU).load_dtype == "float32"
    on_h100 = resolve_precision("auto", "full", H100)
    assert (on_h100.load_dtype, on_h100.bf16, on_h100.fp16) == ("bfloat16", True, False)
    on_v100 = resolve_precision("auto", "full", V100)  # no bf16: fp32 (fp16 only when asked for)
    assert (on_v100.load_dtype, on_v100.bf16, on_v100.fp16) == ("float32", False, False)


def test_auto_dtype_on_a_cpu_follows_its_bf16_instructions():
    zen4 = DeviceFacts(cuda=False, cpu_bf16=("avx512_bf16",))
    mixed = resolve_precision("auto", "lora", zen4)
    assert (mixed.dtype, mixed.load_dtype, mixed.compute_dtype) == ("bf16_mixed", "float32", "bfloat16")
    assert (mixed.bf16, mixed.fp16) == (True, False)
    assert resolve_precision("auto", "lora", NO_GPU).dtype == "float32"  # AVX2-only, Skylake: emulated bf16
    assert resolve_precision("float32", "lora", zen4).compute_dtype == "float32"  # asked for: kept
    on_gpu = resolve_precision("bf16_mixed", "full", H100)
    assert (on_gpu.load_dtype, on_gpu.compute_dtype, on_gpu.bf16) == ("float32", "bfloat16", True)


def _cpuinfo(flags: str, key: str = "flags") -> list[dict[str, str]]:
    return [{"processor": "0", key: flags}, {"processor": "1", key: flags}]


@pytest.mark.parametrize(
    ("cpu", "info", "expected"),
    [
        ("AMD EPYC Zen 4", _cpuinfo("fma avx2 avx512f avx512bw avx512_vnni avx512_bf16"), ["avx512_bf16"]),
        (
            "Intel Xeon Sapphire Rapids",
            _cpuinfo("avx2 avx512f avx512_bf16 avx512_fp16 amx_bf16 amx_tile amx_int8"),
            ["avx512_bf16", "amx_bf16"],
        ),
        ("Intel Xeon Skylake-SP", _cpuinfo("avx2 avx512f avx512bw avx512vl avx512dq"), []),
        ("AMD EPYC Zen 2", _cpuinfo("sse4_2 avx avx2 fma f16c"), []),
        (
            "AWS Graviton 3 (Arm bf16: not measured)",
            _cpuinfo("fp asimd asimddp bf16 i8mm sve", "Features"),
            [],
        ),
        ("no /proc/cpuinfo", [], []),
    ],
)
def test_native_bf16_flags_of_known_cpus(cpu, info, expected):
    from common.cpu_features import native_bf16

    assert native_bf16(info) == expected, cpu


def test_device_facts_on_a_cpu_read_its_flags(monkeypatch, tmp_path):
    import torch

    from arte.training.precision import device_facts
    from common import cpu_features

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    info = tmp_path / "cpuinfo"
    info.write_text(
        "processor\t: 0\nflags\t\t: fpu avx2 avx512f amx_bf16 amx_tile\n\nprocessor\t: 1\nflags\t: fpu\n"
    )
    monkeypatch.setattr(cpu_features, "CPUINFO", str(info))
    assert device_facts() == DeviceFacts(cuda=False, cpu_bf16=("amx_bf16",))
    monkeypatch.setattr(cpu_features, "CPUINFO", str(tmp_path / "absent"))
    assert resolve_precision("auto", "lora", device_facts()).dtype == "float32"


def test_explicit_dtypes():
    cpu_bf16 = resolve_precision("bfloat16", "full", NO_GPU)
    assert (cpu_bf16.load_dtype, cpu_bf16.bf16) == ("bfloat16", True)
    full_fp16 = resolve_precision("float16", "full", V100)
    assert (full_fp16.load_dtype, full_fp16.compute_dtype, full_fp16.fp16) == ("float32", "float16", True)
    assert resolve_precision("float16", "lora", V100).load_dtype == "float16"
    with pytest.raises(UserError, match=r"--train.dtype float16 needs a CUDA GPU"):
        resolve_precision("float16", "full", NO_GPU, "train")


def test_4bit_refusals_name_the_flag_and_the_install():
    cfg = from_dict(AlignConfig, {"quantization": "4bit"})
    precision = resolve_precision("auto", "lora", NO_GPU)
    with pytest.raises(UserError, match=r"--align.quantization 4bit needs a CUDA GPU"):
        quantization_config(cfg.quantization, precision, NO_GPU, "align")
    pytest.importorskip("transformers")
    try:
        import bitsandbytes  # noqa: F401

        pytest.skip("bitsandbytes is installed: the missing-package refusal cannot be shown")
    except ImportError:
        pass
    with pytest.raises(UserError, match=r"pip install 'bitsandbytes>=0.43'"):
        quantization_config("4bit", resolve_precision("auto", "lora", H100), H100, "align")
    assert quantization_config("none", precision, NO_GPU, "align") is None


def test_4bit_needs_lora():
    with pytest.raises(UserError, match="--quantization 4bit needs --method lora"):
        from_dict(TrainConfig, {"quantization": "4bit"})  # train's default method is full
    assert from_dict(TrainConfig, {"quantization": "4bit", "method": "lora"}).quantization == "4bit"
    with pytest.raises(UserError, match="dtype"):
        from_dict(AlignConfig, {"dtype": "int8"})


def test_runtime_only_fields_do_not_change_the_fingerprint():
    from arte.training.finetune import TRAINING_RUNTIME_ONLY

    assert {"gradient_checkpointing", "memory_check", "precompute_ref_log_probs"} <= set(
        TRAINING_RUNTIME_ONLY
    )
    assert "dtype" not in TRAINING_RUNTIME_ONLY and "quantization" not in TRAINING_RUNTIME_ONLY


def test_gpu_refusal_when_the_estimate_exceeds_free_memory(capsys):
    cfg = AlignConfig(method="full", dtype="bfloat16", precompute_ref_log_probs=False)
    precision = resolve_precision(cfg.dtype, cfg.method, H100)
    with pytest.raises(UserError, match=r"needs about .* GB per device, but fake H100 has 80.0 GB free") as e:
        plan_memory("dpo", LLAMA_3_8B, cfg, precision, H100, 1)
    assert "--align.gradient_checkpointing true" in str(e.value) and "reference" in str(e.value)
    assert "memory estimate per device" in capsys.readouterr().out
    lora = dataclasses.replace(cfg, method="lora", gradient_checkpointing=True)
    fits = plan_memory("dpo", LLAMA_3_8B, lora, precision, H100, 1)  # 16 GB of bf16 weights + adapters
    assert 16 < fits["total_gb"] < 40 and fits["reference_gb"] == 0
    unchecked = dataclasses.replace(cfg, memory_check=False)
    assert plan_memory("dpo", LLAMA_3_8B, unchecked, precision, H100, 1)["total_gb"] > 80
    check_memory_fits(training_memory(LLAMA_3_8B, TrainingSettings()), NO_GPU, "align")  # CPU: no check


def test_cuda_facts_are_read_from_torch(monkeypatch):
    torch = pytest.importorskip("torch")
    from arte.training.precision import device_facts

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda i: (10**9 * (i + 5), 10**11))
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: False)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda i: f"gpu{i}")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert device_facts() == DeviceFacts(cuda=True, bf16=False, free_bytes=6 * 10**9, name="gpu1")


def test_settings_of_a_run_and_the_launchers_sharding(monkeypatch):
    for var in ("ACCELERATE_USE_FSDP", "ACCELERATE_USE_DEEPSPEED", "FSDP_SHARDING_STRATEGY"):
        monkeypatch.delenv(var, raising=False)
    precision = resolve_precision("bfloat16", "full", NO_GPU)
    dpo = training_settings("dpo", AlignConfig(method="full"), precision, 1)
    assert (dpo.reference, dpo.sequences_per_example, dpo.sharding) == ("precomputed", 2, "none")
    no_pre = AlignConfig(method="full", precompute_ref_log_probs=False)
    assert training_settings("dpo", no_pre, precision, 1).reference == "copy"
    sft = training_settings("sft", TrainConfig(gradient_checkpointing=True), precision, 4)
    assert (sft.reference, sft.gradient_checkpointing, sft.sharding) == ("none", True, "ddp")
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    assert launcher_sharding(8) == "fsdp" and launcher_sharding(1) == "none"
    monkeypatch.setenv("FSDP_SHARDING_STRATEGY", "SHARD_GRAD_OP")
    assert launcher_sharding(8) == "ddp"
    monkeypatch.delenv("ACCELERATE_USE_FSDP")
    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "true")
    monkeypatch.setenv("ACCELERATE_DEEPSPEED_ZERO_STAGE", "3")
    assert launcher_sharding(8) == "zero3"


# ---- shipped accelerate configs ----------------------------------------------------------------------

ACCELERATE_CONFIGS = {
    "ddp.yaml": ("MULTI_GPU", {}),
    "fsdp_full_shard.yaml": (
        "FSDP",
        {"fsdp_sharding_strategy": "FULL_SHARD", "fsdp_state_dict_type": "FULL_STATE_DICT"},
    ),
    "zero3.yaml": ("DEEPSPEED", {"zero_stage": 3, "zero3_save_16bit_model": True}),
}


@pytest.mark.parametrize("name", sorted(ACCELERATE_CONFIGS))
def test_shipped_accelerate_configs_parse(name):
    pytest.importorskip("accelerate")
    from accelerate.commands.config.config_args import ClusterConfig, load_config_from_file

    config = load_config_from_file(str(ROOT / "configs" / "accelerate" / name))
    distributed, fields = ACCELERATE_CONFIGS[name]
    assert isinstance(config, ClusterConfig) and config.distributed_type.value == distributed
    assert config.mixed_precision == "no"  # precision comes from --align.dtype / --train.dtype
    section = config.fsdp_config if distributed == "FSDP" else config.deepspeed_config
    assert {k: section.get(k) for k in fields} == fields
    assert sorted(p.name for p in (ROOT / "configs" / "accelerate").glob("*.yaml")) == sorted(
        ACCELERATE_CONFIGS
    )


LLAMA_3_70B = {**LLAMA_3_8B, "hidden_size": 8192, "intermediate_size": 28672, "num_hidden_layers": 80}
LLAMA_3_70B["num_attention_heads"] = 64


def test_paper_config_fits_8_gpus_of_80_gb_under_fsdp(monkeypatch):
    """configs/paper.yaml's align settings on Llama-3-70B's shape: under the shipped FSDP config on
    8 x 80 GB they fit; without gradient checkpointing, or on one process, they would not."""
    from arte.run_config import RunConfig
    from common.config import load_config

    cfg = load_config(RunConfig, str(ROOT / "configs" / "paper.yaml"), {})
    assert (cfg.align.dtype, cfg.align.gradient_checkpointing, cfg.train.dtype) == (
        "bfloat16",
        True,
        "bfloat16",
    )
    assert round(count_parameters(LLAMA_3_70B)["total"] / 1e9, 1) == 70.6
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    monkeypatch.delenv("FSDP_SHARDING_STRATEGY", raising=False)
    precision = resolve_precision(cfg.align.dtype, cfg.align.method, H100)
    assert plan_memory("dpo", LLAMA_3_70B, cfg.align, precision, H100, 8)["total_gb"] < 80
    no_checkpointing = dataclasses.replace(cfg.align, gradient_checkpointing=False)
    with pytest.raises(UserError, match="gradient_checkpointing"):
        plan_memory("dpo", LLAMA_3_70B, no_checkpointing, precision, H100, 8)
    with pytest.raises(UserError, match="fsdp_full_shard.yaml"):
        plan_memory("dpo", LLAMA_3_70B, cfg.align, precision, H100, 1)
