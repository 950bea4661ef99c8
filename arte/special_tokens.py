"""Special tokens through fine-tuning: what trl and transformers do to them, and how they are kept.

trl pads with the EOS token when the tokenizer has no pad token, and transformers'
`Trainer.train()` rewrites the model's eos/bos/pad ids to the tokenizer's. `prepare_special_tokens`
(on a copy of the tokenizer) picks a pad token that is neither EOS nor BOS and makes the EOS that
trl appends to completions one the model stops at. After training, `restore_special_tokens` puts
the model's original ids back and `saved_special_token_mismatches` reloads the saved config,
generation config and tokenizer to compare them with the input model's (`arte.finetune`).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from common.errors import UserError

PAD_CANDIDATES = ("<|endoftext|>", "<|finetune_right_pad_id|>", "<pad>", "<|pad|>", "[PAD]")
"""Existing tokens tried, in order, as the pad token when the tokenizer has none (never EOS/BOS)."""
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


def choose_pad_token(tokenizer, avoid: set[int]) -> str:
    """An existing token to pad with: the first of PAD_CANDIDATES, else the unknown token, that is in
    the vocabulary and not in `avoid` (EOS and BOS ids). Never adds a token (no embedding resize)."""
    vocab = tokenizer.get_vocab()
    for token in (*PAD_CANDIDATES, tokenizer.unk_token):
        if token is not None and token in vocab and vocab[token] not in avoid:
            return token
    raise UserError(
        "the tokenizer has no pad token and none of "
        f"{', '.join(PAD_CANDIDATES)} (or an unknown token) to pad with; set tokenizer.pad_token in "
        "the model's tokenizer_config.json"
    )


def prepare_special_tokens(tokenizer, model) -> dict[str, Any]:
    """Set the training tokenizer's pad and EOS deliberately (in place; pass a copy). Returns notes.

    - EOS: trl appends `tokenizer.eos_token` to every completion, so the model learns to end with
      it. If it is not one of the ids the model stops at, the model's own EOS is used instead.
    - pad: kept if the tokenizer has one; else an existing, otherwise unused token (PAD_CANDIDATES;
      for SmolLM2 '<|endoftext|>', id 0), never EOS: trl would then also set the model's pad id to
      EOS, and transformers would align the model's config to the tokenizer. Padding positions are
      masked by the trainers (attention mask, labels -100), so the choice does not change the loss.
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
        avoid = {*eos_ids, tokenizer.eos_token_id, tokenizer.bos_token_id} - {None}
        tokenizer.pad_token = choose_pad_token(tokenizer, avoid)
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
