"""Tiny random models on disk, and their Hugging Face export (built once per module)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from gpt2_core import GPT, GPTConfig, get_preset
from gpt2_core.weights import save_model

CHAT_TOKENS = {"<|endoftext|>": 50256, "<|user|>": 50257, "<|assistant|>": 50258, "<|end|>": 50259}
# A template in the style of an SFT model's (the special tokens are the model's own).
CHAT_JINJA = (
    "{% for m in messages %}{{ '<|' + m['role'] + '|>' }}{{ m['content'] }}{{ '<|end|>' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>' }}{% endif %}"
)


def make_model(seed: int = 0, **overrides: Any) -> GPT:
    """A random nano GPT; biases and LayerNorms randomised too, so a transpose or a swap cannot hide."""
    torch.manual_seed(seed)
    model = GPT(GPTConfig(**{**get_preset("nano").to_dict(), **overrides}))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias") or ".ln_" in name:
                p.normal_(0, 0.1 if name.endswith("bias") else 1.0)
    return model.eval()


@pytest.fixture(name="make_model", scope="session")
def make_model_fixture() -> Callable[..., GPT]:
    """``make_model(seed=0, **config)``: see :func:`make_model` (test modules cannot import conftest)."""
    return make_model


@pytest.fixture
def model_dir(tmp_path: Path) -> Callable[..., Path]:
    """``model_dir(name, info=..., **config)`` saves a random nano model and returns its directory."""

    def build(
        name: str = "model", info: dict[str, Any] | None = None, seed: int = 0, **overrides: Any
    ) -> Path:
        return save_model(make_model(seed, **overrides), tmp_path / name, extra=info)

    return build
