"""Teacher DPO (arte.stages.align, ARTE step 3) and student SFT (arte.stages.train, step 4) on the
tiny random Llama.

What is checked against an independent computation (a plain forward pass here, not trl's numbers):
DPO raises log p(chosen) - log p(rejected) on a trivially learnable preference; SFT lowers the NLL of
the training completions; the SFT labels mask exactly the prompt tokens. Also: LoRA is merged (a
plain model comes back), the special tokens survive, a killed run resumes, bad rows name file:line.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("trl")
pytest.importorskip("peft")

from arte.stages.align import AlignConfig, align_teacher, truncate_prompt  # noqa: E402
from arte.stages.train import TrainConfig, build_sft_trainer, train_student  # noqa: E402
from arte.training.finetune import choose_pad_token  # noqa: E402
from common.config import from_dict  # noqa: E402
from common.errors import UserError  # noqa: E402

FAST = dict(batch_size=4, gradient_accumulation_steps=1, checkpoint_steps=0, threads=1, logging_steps=1)
"""Settings for seconds-long runs: 8 rows = 2 optimizer steps per epoch."""


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


@pytest.fixture(scope="module")
def pairs_path(module_tmp) -> Path:
    """8 DPO pairs whose preference is trivially learnable: always ' yes' over ' no'."""
    rows = [
        {
            "prompt": f"Question: is {i} smaller than {i + 3}? Answer:",
            "chosen": " yes",
            "rejected": " no",
            "level": "rationale",
            "task": "toy",
        }
        for i in range(8)
    ]
    return write_jsonl(module_tmp.mktemp("pairs") / "pairs.jsonl", rows)


@pytest.fixture(scope="module")
def sft_path(module_tmp) -> Path:
    rows = [
        {
            "prompt": f"Question: What is {i} + 2? Answer: Let's think step by step.",
            "completion": f" {i} + 2 = {i + 2}. <ans>{i + 2}</ans>",
            "task": "toy",
        }
        for i in range(8)
    ]
    return write_jsonl(module_tmp.mktemp("sft") / "sft.jsonl", rows)


def load(path: Path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True).eval()
    return AutoTokenizer.from_pretrained(path, local_files_only=True), model


def completion_logprob(model, tokenizer, prompt: str, completion: str) -> float:
    """Sum of log p(completion tokens | prompt) from one plain forward pass."""
    import torch

    prompt_ids = tokenizer(prompt)["input_ids"]
    ids = tokenizer(prompt + completion)["input_ids"]
    assert ids[: len(prompt_ids)] == prompt_ids
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0].float()
    logp = torch.log_softmax(logits[:-1], dim=-1)
    return float(sum(logp[i - 1, ids[i]] for i in range(len(prompt_ids), len(ids))))


def special_tokens(path: Path) -> dict:
    from transformers import AutoConfig, AutoTokenizer, GenerationConfig

    config = AutoConfig.from_pretrained(path, local_files_only=True)
    gen = GenerationConfig.from_pretrained(path, local_files_only=True)
    tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
    ids = ("bos_token_id", "eos_token_id", "pad_token_id")
    return {
        "config": [getattr(config, k) for k in ids],
        "generation": [getattr(gen, k) for k in ids],
        "tokenizer": [tok.bos_token, tok.eos_token, tok.pad_token, tok("a <ans>1</ans>")["input_ids"]],
    }


def changed_tensors(dir_a: Path, dir_b: Path) -> set[str]:
    from safetensors.torch import load_file

    a, b = load_file(dir_a / "model.safetensors"), load_file(dir_b / "model.safetensors")
    assert a.keys() == b.keys()
    return {k for k in a if not (a[k] == b[k]).all()}


# ---- DPO ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dpo_lora(tiny_model, pairs_path, module_tmp):
    """(out_dir, stats) of LoRA DPO with a large learning rate, 3 epochs."""
    out = module_tmp.mktemp("dpo") / "teacher"
    cfg = AlignConfig(learning_rate=1e-2, epochs=3, **FAST)
    return out, align_teacher(str(tiny_model.hf_dir), pairs_path, out, cfg)


def test_dpo_lora_raises_chosen_over_rejected_margin(tiny_model, pairs_path, dpo_lora):
    out, stats = dpo_lora
    rows = [json.loads(line) for line in pairs_path.read_text().splitlines()]

    def mean_margin(path: Path) -> float:
        tokenizer, model = load(path)
        eos = tokenizer.eos_token  # trl appends it to both completions
        return sum(
            completion_logprob(model, tokenizer, r["prompt"], r["chosen"] + eos)
            - completion_logprob(model, tokenizer, r["prompt"], r["rejected"] + eos)
            for r in rows
        ) / len(rows)

    before, after = mean_margin(tiny_model.hf_dir), mean_margin(out)
    assert after > before + 1.0, (before, after)
    assert stats["steps"] == 6 and stats["rewards_accuracies_last"] == 1.0
    assert stats["train_loss_last"] < stats["train_loss_first"]


def test_dpo_lora_output_is_a_merged_plain_model(tiny_model, dpo_lora):
    out, stats = dpo_lora
    names = {p.name for p in out.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "align_stats.json"} <= names
    assert not {"adapter_config.json", "tokenizer.model", "checkpoints"} & names
    assert not [n for n in names if n.startswith(".saving")]
    changed = changed_tensors(tiny_model.hf_dir, out)
    assert any("q_proj" in k for k in changed) and any("down_proj" in k for k in changed)
    assert not any("embed_tokens" in k or "norm" in k for k in changed)  # LoRA touched only projections
    assert json.loads((out / "align_stats.json").read_text())["steps"] == stats["steps"]


def test_dpo_keeps_special_tokens(tiny_model, dpo_lora):
    out, stats = dpo_lora
    assert special_tokens(out) == special_tokens(tiny_model.hf_dir)
    assert stats["pad_token"] == "<|endoftext|>" and stats["eos_token"] == "<|im_end|>"
    assert stats["pad_token_id"] != stats["eos_token_id"]


def test_dpo_full_runs(tiny_model, pairs_path, tmp_path):
    cfg = AlignConfig(method="full", learning_rate=1e-3, epochs=1, **FAST)
    stats = align_teacher(str(tiny_model.hf_dir), pairs_path, tmp_path / "t", cfg)
    assert stats["steps"] == 2 and stats["method"] == "full"
    assert "model.embed_tokens.weight" in changed_tensors(tiny_model.hf_dir, tmp_path / "t")
    assert special_tokens(tmp_path / "t") == special_tokens(tiny_model.hf_dir)


def test_truncate_prompt_keeps_the_end(smollm2_tokenizer):
    prompt = " ".join(f"word{i}" for i in range(200)) + " Question: q? Answer:"
    kept, cut = truncate_prompt(smollm2_tokenizer, prompt, 20)
    assert cut and prompt.endswith(kept) and kept.endswith("Answer:")
    assert 18 <= len(smollm2_tokenizer(kept, add_special_tokens=False)["input_ids"]) <= 21
    assert truncate_prompt(smollm2_tokenizer, "short", 20) == ("short", False)


# ---- SFT ------------------------------------------------------------------------------------------


def test_sft_labels_cover_only_the_completion_and_eos(tiny_model, sft_path, tmp_path):
    run = build_sft_trainer(str(tiny_model.hf_dir), sft_path, tmp_path / "s", TrainConfig(**FAST))
    trainer, tokenizer = run.trainer, run.tokenizer
    rows = [json.loads(line) for line in sft_path.read_text().splitlines()]
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(4)])
    eos = json.loads((tiny_model.hf_dir / "config.json").read_text())["eos_token_id"]
    for row, ids, labels, mask in zip(rows, batch["input_ids"], batch["labels"], batch["attention_mask"]):
        n_prompt = len(tokenizer(row["prompt"])["input_ids"])
        expected = tokenizer(row["prompt"] + row["completion"])["input_ids"] + [eos]
        n = int(mask.sum())
        assert ids[:n].tolist() == expected
        assert (labels[:n_prompt] == -100).all()
        assert labels[n_prompt:n].tolist() == expected[n_prompt:]
        assert (labels[n:] == -100).all()


def test_sft_full_lowers_completion_loss(tiny_model, sft_path, tmp_path):
    rows = [json.loads(line) for line in sft_path.read_text().splitlines()]

    def completion_nll(path: Path) -> float:
        tokenizer, model = load(path)
        return -sum(completion_logprob(model, tokenizer, r["prompt"], r["completion"]) for r in rows)

    out = tmp_path / "student"
    stats = train_student(
        str(tiny_model.hf_dir), sft_path, out, TrainConfig(learning_rate=3e-3, epochs=3, **FAST)
    )
    assert completion_nll(out) < completion_nll(tiny_model.hf_dir) * 0.9
    assert stats["steps"] == 6 and stats["method"] == "full"
    assert stats["completions_cut_by_max_length"] == 0 and stats["rows_dropped_prompt_too_long"] == 0
    assert special_tokens(out) == special_tokens(tiny_model.hf_dir)
    assert (out / "train_stats.json").is_file() and not (out / "checkpoints").exists()


def test_sft_lora_is_merged(tiny_model, sft_path, tmp_path):
    out = tmp_path / "student"
    cfg = TrainConfig(method="lora", learning_rate=1e-2, epochs=1, **FAST)
    stats = train_student(str(tiny_model.hf_dir), sft_path, out, cfg)
    assert stats["trainable_parameters"] < 20_000
    assert not (out / "adapter_config.json").exists()
    changed = changed_tensors(tiny_model.hf_dir, out)
    assert changed and all("proj" in k for k in changed)
    load(out)  # a plain AutoModelForCausalLM


def test_sft_resumes_a_killed_run(tiny_model, sft_path, tmp_path):
    from transformers import TrainerCallback

    class Kill(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):
            if state.global_step == 2:
                raise KeyboardInterrupt  # as if killed right after checkpoint-2 was written

    out = tmp_path / "student"
    cfg = TrainConfig(learning_rate=1e-3, epochs=2, **{**FAST, "checkpoint_steps": 1})
    run = build_sft_trainer(str(tiny_model.hf_dir), sft_path, out, cfg)
    run.trainer.add_callback(Kill())
    with pytest.raises(KeyboardInterrupt):
        run.trainer.train()
    assert not (out / "config.json").exists()  # nothing that looks like a finished model
    stats = train_student(str(tiny_model.hf_dir), sft_path, out, cfg)
    assert stats["resumed_from"] == "checkpoint-2" and stats["steps"] == 4
    assert not (out / "checkpoints").exists()
    # The mean loss of all 4 steps, not of the 2 after the resume divided by 4 (what trainer reports).
    losses = [e["loss"] for e in stats["log"] if "loss" in e]
    assert len(losses) == 4 and stats["train_loss"] == pytest.approx(sum(losses) / 4, abs=1e-3)


def test_tokenizer_eos_the_model_does_not_stop_at_is_replaced_for_training(tiny_model, sft_path, tmp_path):
    """The input tokenizer says eos '<|im_start|>' (id 1) while the model stops at id 2 (what
    transformers 4.57's GGUF converter produced for SmolLM2): completions must end with 2, and the
    saved model keeps the input's special tokens."""
    from transformers import AutoTokenizer

    src = tmp_path / "odd"
    src.mkdir()
    for name in ("config.json", "generation_config.json", "model.safetensors"):
        (src / name).write_bytes((tiny_model.hf_dir / name).read_bytes())
    tokenizer = AutoTokenizer.from_pretrained(tiny_model.hf_dir)
    tokenizer.eos_token = "<|im_start|>"
    tokenizer.save_pretrained(src)
    cfg = TrainConfig(learning_rate=1e-3, epochs=1, **FAST)
    run = build_sft_trainer(str(src), sft_path, tmp_path / "probe", cfg)
    assert "tokenizer_eos_replaced" in run.notes
    assert all(ex["labels"][-1] == 2 for ex in run.trainer.train_dataset)
    train_student(str(src), sft_path, tmp_path / "out", cfg)
    assert special_tokens(tmp_path / "out") == special_tokens(src)


# ---- input errors and config ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "bad_line", ['{"prompt": "p", "chosen": "c"', '{"prompt": "p", "chosen": "c"}', "[1, 2]"]
)
def test_malformed_pair_row_names_file_and_line(tmp_path, bad_line):
    path = write_jsonl(
        tmp_path / "pairs.jsonl", [{"prompt": "p", "chosen": "c", "rejected": "r"}, "", bad_line]
    )
    with pytest.raises(UserError, match=rf"{path}:3: "):
        align_teacher("unused", path, tmp_path / "o", AlignConfig(threads=1))


def test_malformed_sft_row_names_file_and_line(tmp_path):
    path = write_jsonl(
        tmp_path / "sft.jsonl", [{"prompt": "p", "completion": "c"}, {"prompt": "p", "completion": 3}]
    )
    with pytest.raises(UserError, match=rf"{path}:2: 'completion' must be a non-empty string"):
        train_student("unused", path, tmp_path / "o", TrainConfig(threads=1))
    with pytest.raises(UserError, match="not found"):
        train_student("unused", tmp_path / "missing.jsonl", tmp_path / "o", TrainConfig(threads=1))


def test_config_validation_names_the_flag():
    with pytest.raises(UserError, match="--max_prompt_length"):
        from_dict(AlignConfig, {"max_prompt_length": 1024, "max_length": 512})
    with pytest.raises(UserError, match="--warmup_ratio"):
        from_dict(TrainConfig, {"warmup_ratio": 1.5})
    with pytest.raises(UserError, match="method"):
        from_dict(TrainConfig, {"method": "qlora"})


def test_pad_token_is_an_existing_non_eos_token(smollm2_tokenizer):
    assert choose_pad_token(smollm2_tokenizer, {1, 2}) == "<|endoftext|>"
    assert choose_pad_token(smollm2_tokenizer, {0, 1, 2}) is None  # nothing left: the caller adds one


@pytest.mark.parametrize("kind", ["sft", "dpo"])
def test_training_that_diverges_to_nan_stops_and_saves_no_model(
    tiny_model, sft_path, pairs_path, tmp_path, kind
):
    """Issue 29 (2): lr 1e6 makes every weight NaN while trl logs loss 0.0; nothing may be saved."""
    out = tmp_path / "model"
    if kind == "sft":
        cfg, section = TrainConfig(learning_rate=1e6, epochs=2, **FAST), "train"
        run = lambda: train_student(str(tiny_model.hf_dir), sft_path, out, cfg)  # noqa: E731
    else:
        cfg, section = AlignConfig(method="full", learning_rate=1e6, epochs=2, **FAST), "align"
        run = lambda: align_teacher(str(tiny_model.hf_dir), pairs_path, out, cfg)  # noqa: E731
    with pytest.raises(UserError, match=rf"{section}: training diverged .*no model was saved") as e:
        run()
    assert f"--{section}.learning_rate" in str(e.value) and f"--{section}.dtype float32" in str(e.value)
    assert not (out / "config.json").exists() and not list(out.glob("*.safetensors"))
    assert not (out / "checkpoints").exists()


@pytest.mark.parametrize("precompute", [True, False], ids=["precomputed-reference", "reference-copy"])
def test_dpo_resumes_a_killed_run_to_the_weights_of_an_uninterrupted_one(
    tiny_model, pairs_path, tmp_path, precompute
):
    """Issue 29 (untested resume path): DPO killed after checkpoint-2 and resumed (reference
    log-probs precomputed again, or a reference copy) ends where an uninterrupted run ends."""
    import torch
    from safetensors.torch import load_file
    from transformers import TrainerCallback

    from arte.stages.align import build_dpo_trainer

    class Kill(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):
            if state.global_step == 2:
                raise KeyboardInterrupt  # as if killed right after checkpoint-2 was written

    cfg = AlignConfig(
        method="full",
        learning_rate=1e-3,
        epochs=2,
        precompute_ref_log_probs=precompute,
        **{**FAST, "checkpoint_steps": 1},
    )
    whole = align_teacher(str(tiny_model.hf_dir), pairs_path, tmp_path / "whole", cfg)
    out = tmp_path / "resumed"
    run = build_dpo_trainer(str(tiny_model.hf_dir), pairs_path, out, cfg)
    run.trainer.add_callback(Kill())
    with pytest.raises(KeyboardInterrupt):
        run.trainer.train()
    assert not (out / "config.json").exists()
    stats = align_teacher(str(tiny_model.hf_dir), pairs_path, out, cfg)
    assert stats["resumed_from"] == "checkpoint-2" and stats["steps"] == whole["steps"] == 4
    assert changed_tensors(tiny_model.hf_dir, out)  # it trained
    a, b = load_file(tmp_path / "whole" / "model.safetensors"), load_file(out / "model.safetensors")
    assert a.keys() == b.keys()
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a), [
        k for k in a if not torch.allclose(a[k], b[k], atol=1e-6)
    ]
