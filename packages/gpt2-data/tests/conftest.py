"""Fixtures for gpt2-data's tests: a tiny deterministic dataset registered as a plugin, and prepared shards."""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from gpt2_core.hookspecs import hookimpl
from gpt2_core.plugins import get_plugin_manager
from gpt2_data.datasets import TextDataset

WORDS = [
    "the",
    "a",
    "model",
    "token",
    "shard",
    "loader",
    "data",
    "python",
    "train",
    "val",
    "epoch",
    "batch",
    "rank",
    "seed",
    "resume",
    "byte",
    "pair",
]


class Synthetic(TextDataset):
    """Made-up sentences: a small, fast, deterministic corpus for tests."""

    @dataclass
    class Options:
        docs: int = 200
        """How many documents."""
        seed: int = 0
        """Seed of the word generator."""

    def documents(self) -> Iterator[str]:
        rng = random.Random(self.options.seed)
        for i in range(self.options.docs):
            n = rng.randint(5, 120)
            yield f"doc {i}: " + " ".join(rng.choice(WORDS) for _ in range(n)) + "."


class _Plugin:
    @hookimpl
    def register_datasets(self, register):
        register("synthetic", Synthetic)


@pytest.fixture
def synthetic() -> Iterator[str]:
    """Registers the ``synthetic`` dataset for the duration of a test."""
    pm = get_plugin_manager()
    plugin = _Plugin()
    pm.register(plugin, name="test-synthetic")
    yield "synthetic"
    pm.unregister(plugin)


@pytest.fixture
def prepared(synthetic: str, tmp_path: Path) -> Path:
    from gpt2_data.prepare import prepare

    out = tmp_path / "data"
    prepare(synthetic, out, options={"docs": 400}, shard_tokens=3000, val_tokens=2000, progress=False)
    return out
