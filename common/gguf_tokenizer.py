"""Fix the tokenizer transformers builds from a GGUF file (used for the embedded model's HF copy
and whenever the hf backend loads a .gguf directly)."""

from __future__ import annotations

from pathlib import Path


def repair_gguf_tokenizer(tokenizer, gguf_file: str | Path) -> None:
    """Make a tokenizer that transformers built from a GGUF say what the GGUF says.

    transformers 4.57's GGUFLlamaConverter sets eos to the *BOS* token and always adds BOS (for
    SmolLM2: eos '<|im_start|>', every prompt prefixed with it), while the GGUF has eos '<|im_end|>'
    and tokenizer.ggml.add_bos_token = false, which llama.cpp follows. It also drops the digit split
    of the 'smollm' pre-tokenizer ("x\n\n4" -> "\n", "\n", "4" instead of "\n\n", "4"). This puts
    back the bos/eos tokens, the add_bos/add_eos flags and the 'smollm' pre-tokenizer (llama.cpp's
    regexes for it: each digit alone, then the GPT-2 split). The pad token is left alone.
    """
    import gguf

    reader = gguf.GGUFReader(str(gguf_file))

    def value(key: str):
        field = reader.fields.get(key)
        return field.contents() if field is not None else None

    tokens = reader.fields.get("tokenizer.ggml.tokens")
    for attr in ("bos", "eos"):
        token_id = value(f"tokenizer.ggml.{attr}_token_id")
        if tokens is not None and token_id is not None:
            setattr(tokenizer, f"{attr}_token", tokens.contents(int(token_id)))
    for attr in ("add_bos_token", "add_eos_token"):
        flag = value(f"tokenizer.ggml.{attr}")
        if flag is not None and hasattr(tokenizer, f"_{attr}"):
            setattr(tokenizer, f"_{attr}", bool(flag))
    if hasattr(tokenizer, "update_post_processor"):
        tokenizer.update_post_processor()
    if value("tokenizer.ggml.pre") == "smollm" and hasattr(tokenizer, "backend_tokenizer"):
        from tokenizers import pre_tokenizers

        tokenizer.backend_tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
            [
                pre_tokenizers.Digits(individual_digits=True),
                pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True),
            ]
        )
