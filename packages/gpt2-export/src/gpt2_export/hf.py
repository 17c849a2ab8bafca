"""Hugging Face format: a directory ``transformers.AutoModelForCausalLM`` and ``AutoTokenizer`` load as is.

Weights go through gpt2-core's :func:`~gpt2_core.weights.state_dict_to_hf` (Conv1D transposes, padding rows
cut); the tokenizer files are written from OpenAI's original ``vocab.bpe``/``encoder.json`` (the files our
tiktoken tokenizer is built from), so both tokenizers share one vocabulary and one merge list. Importing
goes the other way through gpt2-core's loader, which reads Hugging Face GPT-2 directories already.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from gpt2_core.errors import UserError
from gpt2_core.model import EOT_ID, EOT_TOKEN, GPT, GPTConfig

from gpt2_export.exporters import DTYPES, ExportJob

ROUND_TRIP_KEY = "gpt2_export"
"""Key of the exported config.json holding our config's fields that GPT2Config lacks."""

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


def model_card(config: GPTConfig, num_params: int, info: dict[str, Any], dtype: str) -> str:
    """README.md for the exported model: what it is, what it was trained on and how well it did."""
    front = ["---", "library_name: transformers", "pipeline_tag: text-generation", "tags:", "- gpt2"]
    if config.chat_template is not None:
        front.append("- conversational")
    train = info.get("train") if isinstance(info.get("train"), dict) else {}
    dataset = info.get("dataset") or train.get("dataset")
    if isinstance(dataset, str) and dataset:
        front += ["datasets:", f"- {json.dumps(dataset)}"]
    front.append("---")

    shape = (
        f"{num_params / 1e6:.1f}M parameters: {config.n_layer} layers, {config.n_head} heads, "
        f"width {config.n_embd}, context {config.block_size} tokens, vocabulary {config.vocab_size}"
    )
    kind = "instruction-tuned (chat)" if config.chat_template is not None else "pre-trained"
    lines = [
        *front,
        "",
        "# GPT-2",
        "",
        f"A {kind} GPT-2 model ({shape}), trained with the `gpt2` toolkit and exported in {dtype} as a "
        "`GPT2LMHeadModel`.",
        "",
        "## Training",
        "",
    ]
    facts = {k: v for k, v in info.items() if v is not None and not isinstance(v, (dict, list))}
    details = {k: v for k, v in info.items() if isinstance(v, (dict, list)) and v}
    if facts:
        lines += ["| | |", "|---|---|"]
        lines += [f"| {_label(key)} | {_value(value)} |" for key, value in facts.items()]
    else:
        lines.append("No training facts were recorded with this model.")
    for key, value in details.items():  # a checkpoint's whole training config, for instance
        lines += ["", f"<details><summary>{_label(key)}</summary>", "", "```json"]
        lines += [json.dumps(value, indent=2, default=str), "```", "", "</details>"]
    lines += [
        "",
        "## Use",
        "",
        "```python",
        "from transformers import AutoModelForCausalLM, AutoTokenizer",
        "",
        'tok = AutoTokenizer.from_pretrained("PATH")',
        'model = AutoModelForCausalLM.from_pretrained("PATH")',
    ]
    if config.chat_template is not None:
        lines += [
            'messages = [{"role": "user", "content": "Hello!"}]',
            "ids = tok.apply_chat_template(messages, add_generation_prompt=True, return_tensors='pt')",
            "out = model.generate(ids, max_new_tokens=50)",
            "print(tok.decode(out[0][ids.shape[1]:], skip_special_tokens=True))",
        ]
    else:
        lines += [
            'ids = tok("Hello, I am", return_tensors="pt").input_ids',
            "out = model.generate(ids, max_new_tokens=50, do_sample=True, top_k=50)",
            "print(tok.decode(out[0]))",
        ]
    lines += ["```", ""]
    return "\n".join(lines)


_LABELS = {
    "dataset": "Dataset",
    "tokens": "Tokens trained on",
    "train_tokens": "Tokens trained on",
    "tokens_seen": "Tokens trained on",
    "step": "Steps",
    "steps": "Steps",
    "train": "Training configuration",
    "val_loss": "Validation loss",
    "hellaswag": "HellaSwag accuracy",
    "hellaswag_acc": "HellaSwag accuracy",
    "hellaswag_acc_norm": "HellaSwag accuracy (normalised)",
}


def _label(key: str) -> str:
    return _LABELS.get(key, key.replace("_", " ").capitalize())


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int) and value >= 10_000:
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:.4g}"
    text = value if isinstance(value, str) else json.dumps(value)
    return text.replace("|", "\\|").replace("\n", " ")


class HFExporter:
    """Hugging Face transformers (GPT2LMHeadModel safetensors, tokenizer, model card)."""

    description = "Hugging Face transformers: GPT2LMHeadModel safetensors, tokenizer files, model card"
    dtypes = DTYPES

    def export(self, job: ExportJob) -> None:
        from gpt2_core.files import write_json_atomic
        from gpt2_core.weights import (
            WEIGHTS_FILE,
            config_to_hf,
            model_state_dict,
            save_state_dict,
            state_dict_to_hf,
        )

        config = job.model.config
        dtype = job.torch_dtype
        sd = state_dict_to_hf({k: v.to(dtype) for k, v in model_state_dict(job.model).items()}, config)
        save_state_dict(sd, job.out / WEIGHTS_FILE, metadata={"format": "pt"})
        hf_config = config_to_hf(config, job.dtype)
        stops = stop_token_ids(config)
        hf_config["eos_token_id"] = stops[0] if len(stops) == 1 else stops
        # What the Hugging Face config cannot say, kept for `gpt2 import` (transformers keeps unknown keys).
        hf_config[ROUND_TRIP_KEY] = {
            "padded_vocab_size": config.padded_vocab_size,
            "chat_template": config.chat_template,
        }
        write_json_atomic(job.out / "config.json", hf_config)
        write_json_atomic(
            job.out / "generation_config.json",
            {
                "bos_token_id": EOT_ID,
                "eos_token_id": hf_config["eos_token_id"],
                "pad_token_id": EOT_ID,
            },
        )
        write_tokenizer_files(config, job.out)
        card = model_card(config, job.model.num_params(), job.info, job.dtype)
        (job.out / "README.md").write_text(card, encoding="utf-8")


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


def import_from_hf(hf_dir: Path) -> GPT:
    """A Hugging Face GPT-2 directory as our model.

    Special tokens come from its tokenizer_config.json. A directory we exported also gets back its chat
    template and its vocabulary padding (as zero rows: padding rows are never read); a foreign Jinja chat
    template is not imported, since ``gpt2 chat`` needs its own kind of template.
    """
    from gpt2_core.weights import CONFIG_FILE, is_hf_config, load_config, load_model

    if not hf_dir.is_dir():
        raise UserError(f"--from-hf {hf_dir}: no such directory")
    raw = load_config(hf_dir)
    if not is_hf_config(raw):
        raise UserError(
            f"--from-hf {hf_dir}: {CONFIG_FILE} is not a Hugging Face GPT-2 config (no model_type); "
            "it already is a gpt2 model directory"
        )
    model = load_model(hf_dir)
    ours = raw.get(ROUND_TRIP_KEY) if isinstance(raw.get(ROUND_TRIP_KEY), dict) else {}
    special = {k: v for k, v in special_tokens_from_hf(hf_dir).items() if v < model.config.vocab_size}
    fields = {
        **model.config.to_dict(),
        "special_tokens": special,
        "chat_template": ours.get("chat_template"),
        "padded_vocab_size": max(int(ours.get("padded_vocab_size") or 0), model.config.vocab_size),
    }
    if fields == model.config.to_dict():
        return model
    padded = GPT(GPTConfig.from_dict(fields, str(hf_dir / CONFIG_FILE)))
    with torch.no_grad():
        sd = model.state_dict()
        wte = sd["transformer.wte.weight"]
        sd["transformer.wte.weight"] = torch.cat(
            [wte, wte.new_zeros(padded.config.padded_vocab_size - wte.size(0), wte.size(1))]
        )
        padded.load_state_dict({k: v for k, v in sd.items() if k != "lm_head.weight"}, strict=False)
    return padded.eval()
