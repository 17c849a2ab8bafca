"""Where downloaded data, automatically prepared data and measured choices (the CPU matmul route) live."""

from __future__ import annotations

import os
from pathlib import Path

CACHE_ENV = "GPT2_CACHE_DIR"


def cache_dir() -> Path:
    """``$GPT2_CACHE_DIR``, else ``$XDG_CACHE_HOME/gpt2``, else ``~/.cache/gpt2``."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "gpt2"
