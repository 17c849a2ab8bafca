"""The ONNX exporter's traceable forward (``CachedGPT``) computes what ``GPT.forward`` does, block by block."""

from __future__ import annotations

import torch
from gpt2_core import GPT, get_preset
from gpt2_core.kv_cache import KVCache
from gpt2_export.onnx_export import CachedGPT


def test_cached_forward_agrees_with_the_model_on_every_block() -> None:
    torch.manual_seed(0)
    model = GPT(get_preset("nano")).eval()
    cfg = model.config
    prompt, more = torch.randint(0, 50257, (2, 7)), torch.randint(0, 50257, (2, 3))
    hd = cfg.n_embd // cfg.n_head
    empty = [torch.zeros(2, cfg.n_head, 0, hd) for _ in range(2 * cfg.n_layer)]
    cache = KVCache(cfg, 2, "cpu", torch.float32)
    with torch.no_grad():
        logits, *past = CachedGPT(model)(prompt, *empty)
        ref, _ = model(prompt, kv_cache=cache, all_positions=True)
        for i in range(cfg.n_layer):  # keys and values of every block
            torch.testing.assert_close(past[2 * i], cache.k[i, :, :, :7])
            torch.testing.assert_close(past[2 * i + 1], cache.v[i, :, :, :7])
        torch.testing.assert_close(logits, ref[..., : cfg.vocab_size])
        # Continuing from the cache: three new positions against seven cached ones.
        logits, *past = CachedGPT(model)(more, *past)
        ref, _ = model(more, kv_cache=cache, all_positions=True)
        torch.testing.assert_close(logits, ref[..., : cfg.vocab_size])
        for i in range(cfg.n_layer):
            torch.testing.assert_close(past[2 * i], cache.k[i, :, :, :10])
