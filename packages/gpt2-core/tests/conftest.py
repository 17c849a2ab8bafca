"""Small models for gpt2-core's tests: everything here runs on CPU in well under a second each."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from gpt2_core import GPT, get_preset
from gpt2_core.tokenizer import Tokenizer


@pytest.fixture
def nano() -> GPT:
    """A 2-layer, 32-wide GPT with the full GPT-2 vocabulary and a 64-token window, random weights."""
    torch.manual_seed(0)
    return GPT(get_preset("nano")).eval()


@pytest.fixture(scope="session")
def tokenizer() -> Tokenizer:
    return Tokenizer()


@pytest.fixture
def saved_nano(nano: GPT, tmp_path: Path) -> Path:
    nano.save_pretrained(tmp_path / "nano")
    return tmp_path / "nano"


@pytest.fixture
def always() -> Callable[[GPT, int], GPT]:
    """``always(model, token)`` (see ``_always``)."""
    return _always


def _always(model: GPT, token: int) -> GPT:
    """Make ``model`` predict ``token`` with a large margin at every position, whatever the input.

    The final LayerNorm's weight is zeroed, so its output is its bias for every position; the logits are
    then ``wte @ bias``, which we steer through one embedding column.
    """
    with torch.no_grad():
        model.transformer.ln_f.weight.zero_()
        model.transformer.ln_f.bias.zero_()
        model.transformer.ln_f.bias[0] = 10.0
        model.transformer.wte.weight[:, 0] = 0.0
        model.transformer.wte.weight[token, 0] = 1.0
    return model
