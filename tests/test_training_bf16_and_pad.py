"""bf16 training with gradient checkpointing on CPU, precomputed DPO reference log-probs, and pad
tokens for tokenizers that have none: a Llama-3-style tokenizer built in memory (no pad, no unk,
`<|reserved_special_token_N|>`, `<|eot_id|>` ends a turn) and one with no usable token at all (a pad
is added, the embeddings resized for training and shrunk back before saving).

Checked against independent facts: the loaded parameters' dtypes, the logged losses falling, the
labels of the collated batches, greedy generation of the saved model stopping at EOS."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("trl")
pytest.importorskip("peft")

from arte.stages.align import AlignConfig, align_teacher, build_dpo_trainer  # noqa: E402
from arte.stages.train import TrainConfig, build_sft_trainer, train_student  # noqa: E402
from arte.training.finetune import run_training  # noqa: E402

FAST = dict(batch_size=4, gradient_accumulation_steps=1, checkpoint_steps=0, threads=1, logging_steps=1)
LLAMA3_SPECIALS = [
    "<|begin_of_text|>",
    "<|end_of_text|>",
    "<|reserved_special_token_0|>",
    "<|reserved_special_token_1|>",
    "<|reserved_special_token_2|>",
    "<|reserved_special_token_3|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|reserved_special_token_4|>",
    "<|eot_id|>",
    *(f"<|reserved_special_token_{i}|>" for i in range(5, 12)),
]
"""Llama 3.0's first special tokens in their order (ids 128000...), shifted to follow a small vocabulary."""


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


SFT_ROWS = [
    {"prompt": f"Question: What is {i} + 2? Answer:", "completion": f" {i + 2}. <ans>{i + 2}</ans>"}
    for i in range(8)
]
DPO_ROWS = [
    {"prompt": f"Question: is {i} smaller than {i + 3}? Answer:", "chosen": " yes", "rejected": " no"}
    for i in range(8)
]


def byte_level_tokenizer(specials: list[str], bos: str | None, eos: str):
    """A byte-level BPE fast tokenizer (~300 tokens) trained on the test rows, with `specials` after
    the learned vocabulary, BOS added in front of every text (as Llama 3), no pad and no unk."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    corpus = [" ".join(str(v) for v in row.values()) for row in SFT_ROWS + DPO_ROWS]
    tokenizer.train_from_iterator(corpus * 4, trainer)
    tokenizer.add_special_tokens(specials)
    if bos:
        bos_id = tokenizer.token_to_id(bos)
        tokenizer.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, bos_id)]
        )
    others = [t for t in specials if t not in (bos, eos)]
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, bos_token=bos, eos_token=eos, additional_special_tokens=others
    )
    assert fast.pad_token is None and fast.unk_token is None
    return fast


def save_tiny_llama(tokenizer, out_dir: Path, stop_ids: list[int]) -> Path:
    """A tiny random Llama for `tokenizer` whose generation stops at `stop_ids` (Llama-3-Instruct:
    end_of_text and eot_id)."""
    import torch

    from arte.tiny_model import build_tiny_llama, save_hf

    torch.set_num_threads(1)
    model = build_tiny_llama(tokenizer, seed=0)
    model.generation_config.eos_token_id = stop_ids
    model.generation_config.pad_token_id = None
    return save_hf(model, tokenizer, out_dir)


@pytest.fixture(scope="module")
def llama3_dir(module_tmp) -> Path:
    tokenizer = byte_level_tokenizer(LLAMA3_SPECIALS, "<|begin_of_text|>", "<|eot_id|>")
    stops = [tokenizer.convert_tokens_to_ids(t) for t in ("<|end_of_text|>", "<|eot_id|>")]
    return save_tiny_llama(tokenizer, module_tmp.mktemp("llama3") / "hf", stops)


@pytest.fixture(scope="module")
def data(module_tmp) -> dict[str, Path]:
    root = module_tmp.mktemp("data")
    return {
        "sft": write_jsonl(root / "sft.jsonl", SFT_ROWS),
        "dpo": write_jsonl(root / "dpo.jsonl", DPO_ROWS),
    }


def logged_losses(stats: dict) -> list[float]:
    return [e["loss"] for e in stats["log"] if "loss" in e]


def base_model_of(trainer):
    model = trainer.model
    return model.get_base_model() if hasattr(model, "get_base_model") else model


# ---- bf16 + gradient checkpointing ------------------------------------------------------------------


def test_bf16_lora_dpo_with_checkpointing_lowers_the_loss(tiny_model, data, tmp_path):
    import torch

    cfg = AlignConfig(dtype="bfloat16", gradient_checkpointing=True, learning_rate=1e-2, epochs=3, **FAST)
    run = build_dpo_trainer(str(tiny_model.hf_dir), data["dpo"], tmp_path / "t", cfg)
    frozen = {p.dtype for p in run.trainer.model.parameters() if not p.requires_grad}
    assert frozen == {torch.bfloat16}  # the base as loaded; the adapters are peft's fp32
    assert run.trainer.args.bf16 and not run.trainer.args.fp16 and run.trainer.ref_model is None
    stats = run_training(run, tmp_path / "t", "align_stats.json", ("rewards/accuracies",))
    assert base_model_of(run.trainer).is_gradient_checkpointing
    losses = logged_losses(stats)
    assert len(losses) == 6 and losses[-1] < losses[0] - 0.1, losses
    assert stats["precision"]["load_dtype"] == "bfloat16" and stats["memory_estimate"]["weights_gb"] >= 0


def test_bf16_full_sft_with_checkpointing_lowers_the_loss(tiny_model, data, tmp_path):
    import torch

    cfg = TrainConfig(dtype="bfloat16", gradient_checkpointing=True, learning_rate=1e-2, epochs=3, **FAST)
    run = build_sft_trainer(str(tiny_model.hf_dir), data["sft"], tmp_path / "s", cfg)
    assert {p.dtype for p in run.model.parameters()} == {torch.bfloat16}
    stats = run_training(run, tmp_path / "s", "train_stats.json", ("mean_token_accuracy",))
    assert base_model_of(run.trainer).is_gradient_checkpointing
    losses = logged_losses(stats)
    assert len(losses) == 6 and losses[-1] < losses[0] - 1.0, losses
    estimate = stats["memory_estimate"]
    assert estimate["settings"]["gradient_checkpointing"] and estimate["settings"]["dtype"] == "bfloat16"
    assert estimate["parameters"] == sum(p.numel() for p in run.model.parameters())


def test_full_dpo_precomputes_the_reference_without_a_copy(tiny_model, data, tmp_path):
    import torch

    cfg = AlignConfig(method="full", dtype="bfloat16", learning_rate=1e-3, epochs=2, **FAST)
    run = build_dpo_trainer(str(tiny_model.hf_dir), data["dpo"], tmp_path / "t", cfg)
    assert run.trainer.ref_model is None  # the untrained model computed the reference log-probs
    assert {"ref_chosen_logps", "ref_rejected_logps"} <= set(run.trainer.train_dataset.column_names)
    stats = run_training(run, tmp_path / "t", "align_stats.json", ())
    assert stats["memory_estimate"]["reference_gb"] == 0 and stats["steps"] == 4
    assert logged_losses(stats)[-1] < logged_losses(stats)[0]
    copy_cfg = AlignConfig(method="full", dtype="bfloat16", precompute_ref_log_probs=False, **FAST)
    with_copy = build_dpo_trainer(str(tiny_model.hf_dir), data["dpo"], tmp_path / "c", copy_cfg)
    assert {p.dtype for p in with_copy.trainer.ref_model.parameters()} == {torch.bfloat16}
    assert (
        with_copy.notes["memory_estimate"]["reference_gb"] == with_copy.notes["memory_estimate"]["weights_gb"]
    )


# ---- pad tokens ---------------------------------------------------------------------------------------


def greedy_new_tokens(model_dir: Path, prompt: str, max_new_tokens: int = 40) -> list[int]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(model_dir, local_files_only=True).eval()
    ids = tokenizer(prompt, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        out = model.generate(ids, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=None)
    return out[0, ids.shape[1] :].tolist()


def test_llama3_style_tokenizer_gets_a_reserved_pad_and_eos_keeps_its_label(llama3_dir, data, tmp_path):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(llama3_dir)
    eot, reserved0 = (
        tokenizer.convert_tokens_to_ids(t) for t in ("<|eot_id|>", "<|reserved_special_token_0|>")
    )
    run = build_sft_trainer(str(llama3_dir), data["sft"], tmp_path / "probe", TrainConfig(**FAST))
    assert (run.notes["pad_token"], run.notes["pad_token_id"]) == ("<|reserved_special_token_0|>", reserved0)
    assert run.notes["pad_token_origin"] == "existing" and run.notes["eos_token_id"] == eot
    batch = run.trainer.data_collator([run.trainer.train_dataset[i] for i in range(4)])
    for ids, labels, mask in zip(batch["input_ids"], batch["labels"], batch["attention_mask"]):
        n = int(mask.sum())
        assert ids[n - 1] == eot and labels[n - 1] == eot  # the EOS that ends the completion is learned
        assert (ids[n:] == reserved0).all() and (labels[n:] == -100).all()


def test_llama3_style_sft_and_dpo_train_and_eos_still_stops_generation(llama3_dir, data, tmp_path):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(llama3_dir)
    eot, pad = tokenizer.convert_tokens_to_ids(["<|eot_id|>", "<|reserved_special_token_0|>"])
    out = tmp_path / "student"
    stats = train_student(
        str(llama3_dir), data["sft"], out, TrainConfig(learning_rate=1e-2, epochs=12, **FAST)
    )
    assert stats["pad_token"] == "<|reserved_special_token_0|>" and stats["pad_token_origin"] == "existing"
    assert logged_losses(stats)[-1] < logged_losses(stats)[0] * 0.5
    for row in SFT_ROWS[:3]:
        new = greedy_new_tokens(out, row["prompt"])
        assert eot in new and len(new) < 40, tokenizer.decode(new)  # stopped at EOS, not at the limit
        assert new.index(eot) == len(new) - 1 and pad not in new
    dpo = align_teacher(str(llama3_dir), data["dpo"], tmp_path / "teacher", AlignConfig(**FAST))
    assert dpo["steps"] == 2 and dpo["pad_token_id"] == pad
    saved = json.loads((tmp_path / "teacher" / "generation_config.json").read_text())
    assert (
        saved["eos_token_id"]
        == json.loads((llama3_dir / "generation_config.json").read_text())["eos_token_id"]
    )


def test_tokenizer_without_any_candidate_gets_an_added_pad(data, tmp_path):
    from safetensors.torch import load_file
    from transformers import AutoTokenizer

    from arte.training.special_tokens import ADDED_PAD

    tokenizer = byte_level_tokenizer(["<s>", "</s>"], "<s>", "</s>")  # no pad, no unk, nothing reserved
    src = save_tiny_llama(tokenizer, tmp_path / "src", [tokenizer.eos_token_id])
    rows = len(tokenizer)
    run = build_sft_trainer(str(src), data["sft"], tmp_path / "probe", TrainConfig(**FAST))
    assert (run.notes["pad_token"], run.notes["pad_token_id"]) == (ADDED_PAD, rows)
    assert run.notes["pad_token_origin"] == "added" and run.notes["embedding_rows"] == [rows, rows + 1]
    assert run.model.get_input_embeddings().weight.shape[0] == rows + 1
    out = tmp_path / "out"
    stats = train_student(str(src), data["sft"], out, TrainConfig(learning_rate=3e-3, epochs=2, **FAST))
    assert stats["pad_token_origin"] == "added" and stats["steps"] == 4
    weights = load_file(out / "model.safetensors")
    assert weights["model.embed_tokens.weight"].shape[0] == rows  # shrunk back: the input's vocabulary
    assert json.loads((out / "config.json").read_text())["vocab_size"] == rows
    saved = AutoTokenizer.from_pretrained(out)
    assert saved.pad_token is None and len(saved) == rows


# ---- plumbing of the device facts (faked: no GPU here) ------------------------------------------------


def test_a_run_that_cannot_fit_stops_before_loading(tiny_model, data, tmp_path, monkeypatch):
    import arte.training.finetune as finetune
    from arte.training.precision import DeviceFacts
    from common.errors import UserError

    def no_loading(*args, **kwargs):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(finetune, "device_facts", lambda: DeviceFacts(True, True, 10**6, "fake 1 MB GPU"))
    monkeypatch.setattr(finetune, "load_for_training", no_loading)
    with pytest.raises(
        UserError, match=r"train: the training run needs about .* fake 1 MB GPU has 0.0 GB free"
    ):
        build_sft_trainer(str(tiny_model.hf_dir), data["sft"], tmp_path / "s", TrainConfig(**FAST))


def test_4bit_plumbing_and_the_merge_into_the_unquantized_base(tiny_model, data, tmp_path, monkeypatch):
    """With faked facts and a fake 4-bit loader (the real one needs a GPU and bitsandbytes): the
    quantization config reaches the loader, the memory estimate counts NF4 weights, and the trained
    adapter is merged into the base re-loaded unquantised, which changes only the LoRA'd projections."""
    from patching import patch_everywhere

    import arte.training.finetune as finetune
    from common.hf_models import load_hf_model

    loaded = {}

    def fake_load_quantized(model_dir, quantization, allow_pickle, flag):
        loaded["quantization"] = quantization
        return load_hf_model(model_dir, "float32", allow_pickle=allow_pickle, flag=flag)

    monkeypatch.setattr(finetune, "quantization_config", lambda q, p, f, s: f"BNB[{q}, {p.compute_dtype}]")
    patch_everywhere(monkeypatch, "arte.training.precision.load_quantized", fake_load_quantized)
    cfg = TrainConfig(
        method="lora", quantization="4bit", dtype="float32", learning_rate=1e-2, epochs=1, **FAST
    )
    out = tmp_path / "student"
    run = build_sft_trainer(str(tiny_model.hf_dir), data["sft"], out, cfg)
    assert loaded["quantization"] == "BNB[4bit, float32]" and run.quantized
    assert run.notes["memory_estimate"]["settings"]["quantization"] == "4bit"
    assert run.notes["precision"]["load_dtype"] == "nf4"
    stats = run_training(run, out, "train_stats.json", ())
    assert stats["steps"] == 2 and (tmp_path / "student-adapter" / "adapter_config.json").is_file()
    from safetensors.torch import load_file

    before, after = load_file(tiny_model.hf_dir / "model.safetensors"), load_file(out / "model.safetensors")
    changed = {k for k in before if not (before[k] == after[k]).all()}
    assert changed and all("proj" in k for k in changed)


def test_bf16_lora_sft_with_checkpointing_lowers_the_loss(tiny_model, data, tmp_path):
    cfg = TrainConfig(
        method="lora", dtype="bfloat16", gradient_checkpointing=True, learning_rate=2e-2, epochs=3, **FAST
    )
    stats = train_student(str(tiny_model.hf_dir), data["sft"], tmp_path / "s", cfg)
    losses = logged_losses(stats)
    assert len(losses) == 6 and losses[-1] < losses[0] - 0.5, losses
    from arte.training.precision import device_facts

    assert stats["precision"] == {
        "dtype": "bfloat16",
        "load_dtype": "bfloat16",
        "bf16": True,
        "fp16": False,
        "device": "cpu",
        "cpu_bf16": list(device_facts().cpu_bf16),
    }


def test_bf16_mixed_lora_sft_keeps_fp32_weights_and_computes_in_bf16(tiny_model, data, tmp_path):
    """bf16_mixed (auto on a CPU with AVX512_BF16/AMX_BF16): the weights, adapters and so the
    optimizer stay fp32, while the layers' outputs during training steps are bf16 (autocast)."""
    import torch

    cfg = TrainConfig(method="lora", dtype="bf16_mixed", learning_rate=2e-2, epochs=3, **FAST)
    run = build_sft_trainer(str(tiny_model.hf_dir), data["sft"], tmp_path / "s", cfg)
    assert {p.dtype for p in run.trainer.model.parameters()} == {torch.float32}
    assert run.trainer.args.bf16 and not run.trainer.args.fp16
    seen: set = set()
    linear = next(m for n, m in base_model_of(run.trainer).named_modules() if n.endswith("mlp.down_proj"))
    handle = linear.register_forward_hook(lambda _m, _i, out: seen.add(out.dtype))
    stats = run_training(run, tmp_path / "s", "train_stats.json", ("mean_token_accuracy",))
    handle.remove()
    assert seen == {torch.bfloat16}, seen
    losses = logged_losses(stats)
    assert len(losses) == 6 and losses[-1] < losses[0] - 0.5, losses
    assert (stats["precision"]["dtype"], stats["precision"]["load_dtype"]) == ("bf16_mixed", "float32")
    assert stats["memory_estimate"]["settings"]["compute_dtype"] == "bfloat16"


def test_fused_adamw_is_auto_for_full_training_and_updates_like_the_plain_one(tiny_model, data, tmp_path):
    """adamw_fused (one kernel; auto's choice for method full) and adamw (PyTorch's default
    implementation; auto's for lora) train the same full SFT run to the same weights up to float
    rounding, and the fused setting really builds torch's fused AdamW."""
    from safetensors.torch import load_file

    from arte.training.precision import resolve_optimizer

    weights, fused = {}, {}
    for optimizer in ("adamw_fused", "adamw"):
        cfg = TrainConfig(dtype="float32", optimizer=optimizer, learning_rate=1e-2, epochs=1, **FAST)
        run = build_sft_trainer(str(tiny_model.hf_dir), data["sft"], tmp_path / optimizer, cfg)
        run.trainer.train()
        torch_optimizer = getattr(run.trainer.optimizer, "optimizer", run.trainer.optimizer)
        fused[optimizer] = bool(torch_optimizer.defaults.get("fused"))
        weights[optimizer] = {k: v.detach().clone() for k, v in run.trainer.model.state_dict().items()}
    assert TrainConfig().optimizer == "auto" and AlignConfig().optimizer == "auto"
    assert resolve_optimizer("auto", "full") == "adamw_torch_fused"
    assert resolve_optimizer("auto", "lora") == resolve_optimizer("adamw", "full") == "adamw_torch"
    assert fused == {"adamw_fused": True, "adamw": False}
    before = load_file(tiny_model.hf_dir / "model.safetensors")
    moved = max((weights["adamw"][k] - before[k]).abs().max().item() for k in before if k in weights["adamw"])
    apart = max((weights["adamw"][k] - weights["adamw_fused"][k]).abs().max().item() for k in before)
    assert moved > 1e-3 and apart < 1e-5 * max(1.0, moved), (moved, apart)


def test_train_after_a_bf16_align_in_the_same_process_keeps_its_own_precision(tiny_model, data, tmp_path):
    """A plain `arte run` trains align then train in one process: train's float32 must not inherit
    align's bf16 autocast from accelerate's per-process state."""
    import torch

    fast = {**FAST, "epochs": 1}
    align = build_dpo_trainer(
        str(tiny_model.hf_dir), data["dpo"], tmp_path / "a", AlignConfig(dtype="bf16_mixed", **fast)
    )
    align.trainer.train()
    run = build_sft_trainer(
        str(tiny_model.hf_dir), data["sft"], tmp_path / "s", TrainConfig(dtype="float32", **fast)
    )
    seen: set = set()
    linear = next(m for n, m in base_model_of(run.trainer).named_modules() if n.endswith("mlp.down_proj"))
    linear.register_forward_hook(lambda _m, _i, out: seen.add(out.dtype))
    run.trainer.train()
    assert run.trainer.accelerator.mixed_precision == "no" and seen == {torch.float32}, seen
