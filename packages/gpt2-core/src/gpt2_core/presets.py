"""Named model shapes. The four GPT-2 sizes match OpenAI's releases parameter for parameter."""

from __future__ import annotations

from dataclasses import replace

from gpt2_core.config import GPTConfig
from gpt2_core.errors import UserError

PRESETS: dict[str, GPTConfig] = {
    # OpenAI's four released sizes (tied embeddings, vocab 50257, 1024 positions).
    "gpt2": GPTConfig(n_layer=12, n_head=12, n_embd=768),
    "gpt2-medium": GPTConfig(n_layer=24, n_head=16, n_embd=1024),
    "gpt2-large": GPTConfig(n_layer=36, n_head=20, n_embd=1280),
    "gpt2-xl": GPTConfig(n_layer=48, n_head=25, n_embd=1600),
    # Small shapes for CPU work and tests; they keep the full GPT-2 vocabulary.
    "tiny": GPTConfig(n_layer=4, n_head=4, n_embd=128, block_size=256),
    "nano": GPTConfig(n_layer=2, n_head=2, n_embd=32, block_size=64),
}


def get_preset(name: str, **overrides: object) -> GPTConfig:
    """A fresh copy of preset ``name`` with fields overridden."""
    if name not in PRESETS:
        raise UserError(f"unknown model preset {name!r}; choose one of: {', '.join(PRESETS)}")
    return replace(PRESETS[name], **overrides)
