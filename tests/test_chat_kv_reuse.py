"""Decoding that continues from a caller's KV cache (what `gpt2 chat` does across turns)."""

from __future__ import annotations

import pytest
import torch
from gpt2_core.generation import generate_ids
from gpt2_core.kv_cache import KVCache
from gpt2_core.model import GPT
from gpt2_core.presets import get_preset
from gpt2_core.sampling import SamplingConfig


@pytest.fixture(scope="module")
def model() -> GPT:
    torch.manual_seed(0)
    return GPT(get_preset("nano")).eval()


def ids(steps) -> list[int]:
    return [int(t[0]) for t in steps]


@pytest.mark.parametrize("prompt_len", [30, 60])  # 60 + 20 new tokens slides past the 64-token window
def test_reused_cache_gives_the_same_tokens(model: GPT, prompt_len: int) -> None:
    cfg = SamplingConfig(max_new_tokens=20, temperature=0)
    prompt = list(range(300, 300 + prompt_len))
    fresh = ids(generate_ids(model, prompt, cfg))
    cache = KVCache(model.config, 1, "cpu", torch.float32)
    ids(generate_ids(model, prompt[:10], SamplingConfig(max_new_tokens=3), kv_cache=cache))
    # The cache now holds prompt[:10] and two sampled tokens: keep the shared prefix only.
    assert cache.length == 12
    cache.truncate(10)
    assert ids(generate_ids(model, prompt, cfg, kv_cache=cache)) == fresh


def test_cache_holds_prompt_and_all_but_last_token(model: GPT) -> None:
    cache = KVCache(model.config, 1, "cpu", torch.float32)
    out = ids(generate_ids(model, [5, 6, 7], SamplingConfig(max_new_tokens=4, seed=0), kv_cache=cache))
    assert cache.length == 3 + len(out) - 1
    # A cache longer than the prompt is cut so the last prompt token is fed again.
    again = ids(generate_ids(model, [5, 6, 7], SamplingConfig(max_new_tokens=4, seed=0), kv_cache=cache))
    assert again == out


def test_stop_ids_end_the_sequence(model: GPT) -> None:
    cfg = SamplingConfig(max_new_tokens=10, temperature=0)
    full = ids(generate_ids(model, [1, 2, 3], cfg))
    assert ids(generate_ids(model, [1, 2, 3], cfg, stop_ids=[full[1]])) == full[: full.index(full[1]) + 1]
