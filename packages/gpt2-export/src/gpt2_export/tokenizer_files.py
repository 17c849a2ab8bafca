"""GPT-2's tokenizer as Hugging Face ``tokenizers`` files, written from OpenAI's original ``vocab.bpe`` and
``encoder.json`` (the files our tiktoken tokenizer is built from), so both tokenizers share one vocabulary and
one merge list; special tokens above 50256 (chat markers) included, and read back on import.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from gpt2_core.config import GPTConfig
from gpt2_core.errors import UserError
from gpt2_core.tokenizer import EOT_ID, EOT_TOKEN

TOKENIZER_FILES = ("vocab.json", "merges.txt", "tokenizer.json", "tokenizer_config.json")


# GPT-2's byte-level BPE as the tokenizers library describes it (what openai-community/gpt2 ships).
_BYTE_LEVEL = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}


def chat_template_jinja(config: GPTConfig) -> str | None:
    """The model's chat template as the Jinja string transformers renders, None for a base model.

    ``gpt2_core.chat_template`` stores it in ``config.chat_template``: the Jinja string itself, or a dict holding it under
    ``"jinja"`` (with whatever else the chat loop needs next to it).
    """
    template = config.chat_template
    if template is None or isinstance(template, str):
        return template
    if isinstance(template, dict) and isinstance(template.get("jinja"), str):
        return template["jinja"]
    raise UserError("model config: chat_template has no Jinja template to export (expected a string)")


def stop_token_ids(config: GPTConfig) -> list[int]:
    """Ids that end a reply: <|endoftext|>, and the end-of-turn token a chat template names (``"end"``)."""
    ids = [EOT_ID]
    template = config.chat_template
    end = template.get("end") if isinstance(template, dict) else None
    if end in config.special_tokens and config.special_tokens[end] not in ids:
        ids.append(config.special_tokens[end])
    return ids


def _special_token_entry(content: str, idx: int) -> dict[str, Any]:
    return {
        "id": idx,
        "content": content,
        "single_word": False,
        "lstrip": False,
        "rstrip": False,
        "normalized": False,
        "special": True,
    }


def write_tokenizer_files(config: GPTConfig, out: Path) -> None:
    """``vocab.json``, ``merges.txt``, ``tokenizer.json`` and ``tokenizer_config.json`` for ``config``.

    Special tokens above 50256 (chat markers) join the vocabulary at their ids and are declared as added
    special tokens, so both the fast and the slow transformers tokenizer give them the ids we use.
    """
    from gpt2_core.tokenizer import bpe_files

    vocab_bpe, encoder_json = bpe_files()
    vocab: dict[str, int] = json.loads(encoder_json.read_text(encoding="utf-8"))
    special = {EOT_TOKEN: EOT_ID, **config.special_tokens}
    taken = {idx: token for token, idx in vocab.items()}
    for token, idx in sorted(special.items(), key=lambda kv: kv[1]):
        if taken.get(idx, token) != token:
            raise UserError(f"model config: special token {token!r} reuses id {idx} of {taken[idx]!r}")
        vocab[token] = idx
    merges = [line for line in vocab_bpe.read_text(encoding="utf-8").splitlines()[1:] if line.strip()]

    (out / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (out / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    added = [_special_token_entry(token, idx) for token, idx in sorted(special.items(), key=lambda kv: kv[1])]
    tokenizer = {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added,
        "normalizer": None,
        "pre_tokenizer": _BYTE_LEVEL,
        "post_processor": {**_BYTE_LEVEL, "trim_offsets": False},
        "decoder": _BYTE_LEVEL,
        "model": {
            "type": "BPE",
            "dropout": None,
            "unk_token": None,
            "continuing_subword_prefix": "",
            "end_of_word_suffix": "",
            "fuse_unk": False,
            "byte_fallback": False,
            "vocab": vocab,
            "merges": merges,
        },
    }
    (out / "tokenizer.json").write_text(json.dumps(tokenizer, ensure_ascii=False), encoding="utf-8")

    tokenizer_config: dict[str, Any] = {
        "tokenizer_class": "GPT2Tokenizer",
        "add_bos_token": False,
        "add_prefix_space": False,
        "bos_token": EOT_TOKEN,
        "eos_token": EOT_TOKEN,
        "unk_token": EOT_TOKEN,
        "clean_up_tokenization_spaces": False,
        "errors": "replace",
        "model_max_length": config.block_size,
        "added_tokens_decoder": {str(e["id"]): {k: v for k, v in e.items() if k != "id"} for e in added},
    }
    extra = [token for token, idx in special.items() if idx != EOT_ID]
    if extra:
        tokenizer_config["additional_special_tokens"] = extra
    template = chat_template_jinja(config)
    if template is not None:
        tokenizer_config["chat_template"] = template
    (out / "tokenizer_config.json").write_text(
        json.dumps(tokenizer_config, indent=2, ensure_ascii=False) + "\n"
    )


def special_tokens_from_hf(hf_dir: Path) -> dict[str, int]:
    """Special tokens a Hugging Face tokenizer declares (tokenizer_config.json's added tokens)."""
    path = hf_dir / "tokenizer_config.json"
    if not path.is_file():
        return {EOT_TOKEN: EOT_ID}
    try:
        decoder = json.loads(path.read_text(encoding="utf-8")).get("added_tokens_decoder") or {}
    except json.JSONDecodeError as e:
        raise UserError(f"{path}: not valid JSON ({e})") from e
    special = {EOT_TOKEN: EOT_ID}
    for idx, entry in decoder.items():
        if isinstance(entry, dict) and entry.get("special") and "content" in entry:
            special[entry["content"]] = int(idx)
    return special
