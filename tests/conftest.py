"""Fixtures shared by the end-to-end tests in this folder."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """About 60K tokens of the built-in corpus (10% held out for val), prepared once for the session."""
    from gpt2_data.prepare import prepare

    out = tmp_path_factory.mktemp("data") / "stdlib"
    prepare("python-stdlib", out, max_tokens=60_000, val_tokens=0.1, progress=False)
    return out
