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
    regexes for it: each digit alone, then the GPT-2 split). A byte-level BPE ("gpt2") vocabulary
    also gets the byte-level decoder and no SentencePiece byte fallback, as in the original
    tokenizer.json: llama.cpp's converter reads a byte-fallback BPE as a SentencePiece ("llama")
    vocabulary. The pad token is left alone.
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
    if value("tokenizer.ggml.model") == "gpt2" and hasattr(tokenizer, "backend_tokenizer"):
        _as_byte_level_bpe(tokenizer.backend_tokenizer)
    if value("tokenizer.ggml.pre") == "smollm" and hasattr(tokenizer, "backend_tokenizer"):
        from tokenizers import pre_tokenizers

        tokenizer.backend_tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
            [
                pre_tokenizers.Digits(individual_digits=True),
                pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True),
            ]
        )


def _as_byte_level_bpe(backend) -> None:
    """A GPT-2 style byte-level BPE: no byte fallback, no normalizer, the ByteLevel decoder."""
    from tokenizers import decoders, normalizers

    backend.model.byte_fallback = False
    backend.normalizer = normalizers.Sequence([])
    backend.decoder = decoders.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True)


def write_sentencepiece_model(gguf_file: str | Path, out_path: str | Path) -> Path:
    """Write the SentencePiece vocabulary of a GGUF (tokenizer.ggml.model "llama": Gemma, Llama 2,
    Phi-3) as a `tokenizer.model` protobuf: every token with its score and type, BPE with byte
    fallback, no normalisation. This is the file llama.cpp's converter reads the vocabulary from
    (transformers would save the whole GGUF under that name instead)."""
    import gguf
    from sentencepiece import sentencepiece_model_pb2 as sp

    reader = gguf.GGUFReader(str(gguf_file))

    def value(key: str, default=None):
        field = reader.fields.get(key)
        return field.contents() if field is not None else default

    if value("tokenizer.ggml.model") != "llama":
        raise ValueError(f"{gguf_file}: not a SentencePiece vocabulary ({value('tokenizer.ggml.model')!r})")
    tokens, scores, types = (value(f"tokenizer.ggml.{k}") for k in ("tokens", "scores", "token_type"))
    model = sp.ModelProto()
    for token, score, kind in zip(tokens, scores, types):
        # GGUF token types use SentencePiece's numbering: 1 normal, 2 unknown, 3 control,
        # 4 user-defined, 5 unused, 6 byte.
        model.pieces.add(piece=token, score=float(score), type=int(kind))
    spec = model.trainer_spec
    spec.model_type = sp.TrainerSpec.BPE
    spec.vocab_size = len(tokens)
    spec.byte_fallback = True
    for name in ("unk", "bos", "eos", "pad"):
        key = "unknown" if name == "unk" else {"pad": "padding"}.get(name, name)
        setattr(spec, f"{name}_id", int(value(f"tokenizer.ggml.{key}_token_id", -1)))
    norm = model.normalizer_spec
    norm.name = "identity"
    norm.add_dummy_prefix = bool(value("tokenizer.ggml.add_space_prefix", False))
    norm.remove_extra_whitespaces = False
    norm.escape_whitespaces = True
    out_path = Path(out_path)
    out_path.write_bytes(model.SerializeToString())
    return out_path


GEMMA_CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{%- if messages[0]['role'] == 'system' -%}"
    "{%- set first_user_prefix = messages[0]['content'] + '\n\n' -%}"
    "{%- set loop_messages = messages[1:] -%}"
    "{%- else -%}{%- set first_user_prefix = '' -%}{%- set loop_messages = messages -%}{%- endif -%}"
    "{%- for message in loop_messages -%}"
    "{%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}"
    "{%- endif -%}"
    "{%- set role = 'model' if message['role'] == 'assistant' else message['role'] -%}"
    "{{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else '') }}"
    "{{ message['content'] | trim }}{{ '<end_of_turn>\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<start_of_turn>model\n' }}{%- endif -%}"
)
"""Gemma's turn format (`<start_of_turn>user ... <end_of_turn>`, the assistant's role is "model"),
text content only, as in the chat template of Google's Gemma 3 HF repositories. Given to a Gemma
GGUF that carries no tokenizer.chat_template (the embedded Gemma 3 270M base model)."""


def sentencepiece_tokenizer_from_gguf(gguf_file: str | Path, workdir: str | Path):
    """The fast tokenizer of a Gemma GGUF's SentencePiece vocabulary, built the way Google's own
    tokenizer.json was: `write_sentencepiece_model` into `workdir/tokenizer.model`, then transformers'
    SentencePiece -> fast conversion (GemmaTokenizerFast). It tokenizes like llama.cpp does the GGUF
    (transformers' GGUF loader builds one that does not: "Hello world" -> 4 tokens instead of 2).
    Special tokens and add_bos/add_eos come from the GGUF; the Gemma chat template if it has none."""
    import gguf
    from transformers import GemmaTokenizerFast

    reader = gguf.GGUFReader(str(gguf_file))

    def value(key: str, default=None):
        field = reader.fields.get(key)
        return field.contents() if field is not None else default

    if not str(value("general.architecture", "")).startswith("gemma"):
        raise ValueError(f"{gguf_file}: only Gemma SentencePiece vocabularies are rebuilt here")
    path = write_sentencepiece_model(gguf_file, Path(workdir) / "tokenizer.model")
    tokens = value("tokenizer.ggml.tokens")
    special = {}
    for name, key in (("bos", "bos"), ("eos", "eos"), ("unk", "unknown"), ("pad", "padding")):
        token_id = value(f"tokenizer.ggml.{key}_token_id")
        if token_id is not None:
            special[f"{name}_token"] = tokens[int(token_id)]
    tokenizer = GemmaTokenizerFast(
        vocab_file=str(path),
        add_bos_token=bool(value("tokenizer.ggml.add_bos_token", True)),
        add_eos_token=bool(value("tokenizer.ggml.add_eos_token", False)),
        **special,
    )
    tokenizer.chat_template = value("tokenizer.chat_template") or GEMMA_CHAT_TEMPLATE
    return tokenizer
