"""The README.md (model card) of an exported model: what it is, how it was trained, how to load it."""

from __future__ import annotations

import json
from typing import Any

from gpt2_core.config import GPTConfig


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
