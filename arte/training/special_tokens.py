"""Special tokens through fine-tuning: what trl and transformers do to them, and how they are kept.

trl pads with the EOS token when the tokenizer has no pad token, and transformers'
`Trainer.train()` rewrites the model's eos/bos/pad ids to the tokenizer's. `prepare_special_tokens`
(on a copy of the tokenizer) picks a pad token that is neither EOS, BOS nor an end-of-turn token (an
existing one, else one it adds, with the embeddings resized for training and shrunk back before
saving) and makes the EOS that trl appends to completions one the model stops at. After training,
`restore_special_tokens` puts the model's original ids back and `saved_special_token_mismatches`
reloads the saved config, generation config and tokenizer to compare them with the input model's
(`arte.training.finetune`).
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

PAD_CANDIDATES = ("<|endoftext|>", "<|finetune_right_pad_id|>", "<pad>", "<|pad|>", "[PAD]")
"""Existing tokens tried, in order, as the pad token when the tokenizer has none (never EOS/BOS)."""
RESERVED_TOKEN = re.compile(r"<\|reserved_special_token_(\d+)\|>|<unused(\d+)>")
"""Unused special tokens (Llama 3's `<|reserved_special_token_N|>`, Gemma's `<unusedN>`): pad
candidates after PAD_CANDIDATES, lowest N first."""
END_OF_TURN = ("<|eot_id|>", "<|eom_id|>", "<|im_end|>", "<end_of_turn>", "<|end|>", "<|end_of_text|>")
"""Tokens that end a turn or a text in common chat formats: never the pad (padding positions are
masked, so a pad equal to an end token would hide the end from the loss)."""
ADDED_PAD = "<|arte_pad|>"
"""The pad token added when no existing token qualifies (embeddings resized for training, shrunk back
before saving: the saved model keeps the input's vocabulary)."""
PROBE_TEXT = "Question: What is 17 + 25? Answer: Let's think step by step. 17 + 25 = 42. <ans>42</ans>"
"""Encoded by the input and the saved tokenizer: the ids must agree (catches lost add_bos flags)."""
SPECIAL_IDS = ("bos_token_id", "eos_token_id", "pad_token_id")


def _as_list(value: Any) -> list:
    return [] if value is None else list(value) if isinstance(value, (list, tuple)) else [value]


def model_eos_ids(model) -> list[int]:
    """Ids the model stops generating at: config eos first, then the generation config's."""
    gen = getattr(model, "generation_config", None)
    ids = _as_list(model.config.eos_token_id) + _as_list(getattr(gen, "eos_token_id", None))
    return list(dict.fromkeys(ids))


def tokens_to_avoid(tokenizer, model) -> set[int]:
    """Ids the pad must not be: every EOS of the model and tokenizer, BOS, and end-of-turn tokens."""
    vocab = tokenizer.get_vocab()
    ends = {vocab[t] for t in END_OF_TURN if t in vocab}
    return {*model_eos_ids(model), tokenizer.eos_token_id, tokenizer.bos_token_id, *ends} - {None}


def choose_pad_token(tokenizer, avoid: set[int]) -> str | None:
    """An existing token to pad with, not in `avoid` (EOS, BOS, end-of-turn ids): the first of
    PAD_CANDIDATES in the vocabulary, else the lowest reserved special token (RESERVED_TOKEN),
    else the unknown token; None when there is none (the caller adds ADDED_PAD)."""
    vocab = tokenizer.get_vocab()
    for token in (*PAD_CANDIDATES, *reserved_tokens(tokenizer), tokenizer.unk_token):
        if token is not None and token in vocab and vocab[token] not in avoid:
            return token
    return None


def reserved_tokens(tokenizer) -> list[str]:
    """The tokenizer's special tokens that match RESERVED_TOKEN, by their number."""
    numbered = []
    for token in tokenizer.get_vocab():
        match = RESERVED_TOKEN.fullmatch(token)
        if match:
            numbered.append((int(match.group(1) or match.group(2)), token))
    return [token for _, token in sorted(numbered)]


def set_pad_token(tokenizer, model) -> dict[str, Any]:
    """Give the training tokenizer (a copy) a pad that is not EOS, BOS or an end-of-turn token:
    an existing one (`choose_pad_token`), else ADDED_PAD, with the model's embeddings resized when
    the new id does not fit. Returns notes: pad_token_origin (existing / added) and, on a resize,
    embedding_rows [before, after]."""
    chosen = choose_pad_token(tokenizer, tokens_to_avoid(tokenizer, model))
    if chosen is not None:
        tokenizer.pad_token = chosen
        return {"pad_token_origin": "existing"}
    tokenizer.add_special_tokens({"pad_token": ADDED_PAD})
    notes: dict[str, Any] = {"pad_token_origin": "added"}
    rows = model.get_input_embeddings().weight.shape[0]
    if tokenizer.pad_token_id >= rows:
        model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
        notes["embedding_rows"] = [rows, model.get_input_embeddings().weight.shape[0]]
    return notes


def prepare_special_tokens(tokenizer, model) -> dict[str, Any]:
    """Set the training tokenizer's pad and EOS deliberately (in place; pass a copy). Returns notes.

    - EOS: trl appends `tokenizer.eos_token` to every completion, so the model learns to end with
      it. If it is not one of the ids the model stops at, the model's own EOS is used instead.
    - pad: kept if the tokenizer has one (pad_token_origin "tokenizer"); else `set_pad_token`: an
      existing, otherwise unused token (SmolLM2: '<|endoftext|>', id 0; Llama 3.0, which has no pad
      and no unk: '<|reserved_special_token_0|>'), never EOS: trl would then also set the model's
      pad id to EOS, and transformers would align the model's config to the tokenizer; else an
      added one. Padding positions are masked by the trainers (attention mask, labels -100), so the
      choice does not change the loss, and the EOS that ends each completion keeps its label.
    """
    notes: dict[str, Any] = {}
    eos_ids = model_eos_ids(model)
    if eos_ids and tokenizer.eos_token_id not in eos_ids:
        notes["tokenizer_eos_replaced"] = (
            f"tokenizer eos {tokenizer.eos_token!r} (id {tokenizer.eos_token_id}) is not one the model "
            f"stops at ({eos_ids}); completions end with id {eos_ids[0]} instead"
        )
        tokenizer.eos_token = tokenizer.convert_ids_to_tokens(eos_ids[0])
    if tokenizer.pad_token is None:
        notes.update(set_pad_token(tokenizer, model))
    else:
        notes["pad_token_origin"] = "tokenizer"
    notes.update(
        eos_token=tokenizer.eos_token,
        eos_token_id=tokenizer.eos_token_id,
        pad_token=tokenizer.pad_token,
        pad_token_id=tokenizer.pad_token_id,
    )
    return notes


def special_token_snapshot(model, tokenizer) -> dict[str, Any]:
    """What must survive training unchanged: special ids of the config, the generation config and
    the tokenizer, and the tokenizer's ids for PROBE_TEXT."""
    gen = getattr(model, "generation_config", None)
    return {
        "config": {k: getattr(model.config, k, None) for k in SPECIAL_IDS},
        "generation_config": {k: getattr(gen, k, None) for k in SPECIAL_IDS} if gen is not None else None,
        "tokenizer": tokenizer_specials(tokenizer),
    }


def tokenizer_specials(tokenizer) -> dict[str, Any]:
    return {
        "bos_token": tokenizer.bos_token,
        "eos_token": tokenizer.eos_token,
        "pad_token": tokenizer.pad_token,
        "probe_ids": tokenizer(PROBE_TEXT)["input_ids"],
    }


def restore_special_tokens(model, original: dict[str, Any], generation_config) -> dict[str, list]:
    """Put the input model's special-token ids back (trl/transformers align them to the training
    tokenizer, e.g. the pad chosen here); returns {field: [original, value during training]}."""
    changed = {}
    for key, value in original["config"].items():
        if getattr(model.config, key, None) != value:
            changed[f"config.{key}"] = [value, getattr(model.config, key, None)]
            setattr(model.config, key, value)
    gen = getattr(model, "generation_config", None)
    if gen is not None and generation_config is not None:
        for key, value in original["generation_config"].items():
            if getattr(gen, key, None) != value:
                changed[f"generation_config.{key}"] = [value, getattr(gen, key, None)]
        model.generation_config = copy.deepcopy(generation_config)
    return changed


def saved_special_token_mismatches(saved_dir: Path, original: dict[str, Any]) -> list[str]:
    """Reload the saved config, generation config and tokenizer; list every difference from `original`."""
    from transformers import AutoConfig, AutoTokenizer, GenerationConfig

    config = AutoConfig.from_pretrained(saved_dir, local_files_only=True)
    tokenizer = AutoTokenizer.from_pretrained(saved_dir, local_files_only=True)
    saved = {"config": {k: getattr(config, k, None) for k in SPECIAL_IDS}}
    if original["generation_config"] is not None:
        gen = GenerationConfig.from_pretrained(saved_dir, local_files_only=True)
        saved["generation_config"] = {k: getattr(gen, k, None) for k in SPECIAL_IDS}
    saved["tokenizer"] = tokenizer_specials(tokenizer)
    return [
        f"{part}.{key}: input model {value!r}, saved {saved[part].get(key)!r}"
        for part in saved
        for key, value in (original[part] or {}).items()
        if saved[part].get(key) != value
    ]
