"""Inference state: the keys and values of tokens already seen, kept outside the model (nanochat's
``engine.py`` / ``gpt.py`` split).

The model knows one small protocol, :class:`Cache`. ``GPT.hidden`` asks it once per forward pass for the
positions of the new tokens (``begin``), each block hands it its new queries, keys and values and gets the
attention output back (``attend``), and after the last block the new tokens count (``end``: a pass
interrupted between two blocks leaves the cache as it was). Masks and write positions are built once per
pass, in ``begin``, never per layer.

- :class:`KVCache`: B sequences of one length (``gpt2 generate``, ``gpt2 chat``): slices, no indexing.
- ``gpt2 serve``'s ``SlotCache`` (fixed slots of independent sequences, each with its own length: continuous
  batching) lives with its only user, in gpt2-serve; the ONNX exporter's functional cache (past in, present
  out), in gpt2-export.
"""

from __future__ import annotations

from typing import Protocol

import torch
import torch.nn.functional as F

from gpt2_core.config import GPTConfig


def cache_dtype(dtype: torch.dtype, device: torch.device | str) -> torch.dtype:
    """The dtype a cache keeps keys and values in, and attends in, for a model of ``dtype`` on ``device``:
    float32 on a CPU, else ``dtype``. torch's CPU attention in bf16 is 4-8x slower than in fp32 for the
    one-query rows of decoding (and no faster for a prompt; BENCHMARKS.md, "Inference on a CPU, side by side"), while its cost in
    memory is the cache's, a few MB a sequence for ``gpt2``."""
    return torch.float32 if torch.device(device).type == "cpu" else dtype


class Cache(Protocol):
    """What a block's attention calls during inference. Shapes: q, k, v and the result are
    (B, n_head, T, head_dim) for the ``idx`` (B, T) of the pass."""

    def begin(self, T: int, device: torch.device) -> torch.Tensor:
        """Positions of the ``T`` new tokens, (T,) or (B, T); prepares this pass's masks. ValueError when
        they do not fit the context window."""
        ...

    def attend(self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Store block ``layer``'s new ``k`` and ``v``; return ``q``'s attention over every key its row sees."""
        ...

    def end(self) -> None:
        """The pass is complete: its tokens now count as held."""
        ...


class KVCache:
    """Keys and values of B sequences of equal length, preallocated for ``max_len`` positions.

    ``k`` and ``v`` are (n_layer, B, n_head, max_len, head_dim); the first ``length`` positions are held.
    """

    def __init__(
        self,
        config: GPTConfig,
        batch_size: int,
        device: torch.device | str,
        dtype: torch.dtype,
        max_len: int | None = None,
    ) -> None:
        self.max_len = max_len or config.block_size
        hd = config.n_embd // config.n_head
        shape = (config.n_layer, batch_size, config.n_head, self.max_len, hd)
        dtype = cache_dtype(dtype, device)
        self.k = torch.empty(shape, device=device, dtype=dtype)
        self.v = torch.empty(shape, device=device, dtype=dtype)
        self.length = 0
        self._T = 0
        self._mask: torch.Tensor | None = None

    def begin(self, T: int, device: torch.device) -> torch.Tensor:
        if self.length + T > self.max_len:
            raise ValueError(
                f"sequence of length {self.length + T} exceeds the context window ({self.max_len})"
            )
        self._T = T
        # One new query sees every key, and with nothing cached plain causal masking does; otherwise query t
        # (position length + t) sees keys up to its own position.
        self._mask = None
        if T > 1 and self.length > 0:
            self._mask = torch.ones(T, self.length + T, dtype=torch.bool, device=device).tril(self.length)
        return torch.arange(self.length, self.length + T, dtype=torch.long, device=device)

    def attend(self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        end = self.length + self._T
        self.k[layer, :, :, self.length : end] = k
        self.v[layer, :, :, self.length : end] = v
        y = F.scaled_dot_product_attention(
            q.to(self.k.dtype),
            self.k[layer, :, :, :end],
            self.v[layer, :, :, :end],
            attn_mask=self._mask,
            is_causal=self._mask is None and self._T > 1,
        )
        return y.to(q.dtype)

    def end(self) -> None:
        self.length += self._T
        self._T = 0

    def truncate(self, length: int) -> None:
        """Forget everything after the first ``length`` positions (to reuse a shared prefix)."""
        self.length = min(self.length, length)

    def broadcast_from(self, one: KVCache) -> None:
        """Hold what the one-row cache ``one`` holds, in every row (samples that share a prompt)."""
        n = one.length
        self.k[:, :, :, :n] = one.k[:, :, :, :n]
        self.v[:, :, :, :n] = one.v[:, :, :, :n]
        self.length = n
