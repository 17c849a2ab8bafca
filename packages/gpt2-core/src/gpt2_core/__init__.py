"""gpt2-core: the GPT-2 model, its presets, tokenizer, generation and weight files.

Importing this package is cheap and side-effect free; nothing is downloaded, ever. The names below
are loaded on first use, so ``gpt2_core.errors`` or ``gpt2_core.hookspecs`` (what ``gpt2 --help``
needs) do not pull in torch.
"""

from __future__ import annotations

import importlib
from importlib.metadata import version
from typing import TYPE_CHECKING, Any

from gpt2_core.errors import UserError

if TYPE_CHECKING:
    from gpt2_core.config import GPTConfig
    from gpt2_core.generation import generate, stream
    from gpt2_core.llm import LLM
    from gpt2_core.model import GPT
    from gpt2_core.presets import PRESETS, get_preset
    from gpt2_core.sampling import SamplingConfig
    from gpt2_core.tokenizer import Tokenizer

__version__ = version("gpt2-core")
__all__ = [
    "GPT",
    "GPTConfig",
    "LLM",
    "PRESETS",
    "SamplingConfig",
    "Tokenizer",
    "UserError",
    "__version__",
    "generate",
    "get_preset",
    "stream",
]

_LAZY = {
    "GPT": "model",
    "GPTConfig": "config",
    "LLM": "llm",
    "PRESETS": "presets",
    "get_preset": "presets",
    "SamplingConfig": "sampling",
    "Tokenizer": "tokenizer",
    "generate": "generation",
    "stream": "generation",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f"gpt2_core.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'gpt2_core' has no attribute {name!r}")
