"""``SlotCache``: the keys and values of ``gpt2 serve``'s sequences, each in a fixed slot with its own length,
fed as one packed pass of decode tokens and prompt chunks (continuous batching with chunked prefill).

It implements gpt2-core's cache protocol (``gpt2_core.kv_cache.Cache``: ``begin``, ``attend``, ``end``), so
``GPT.hidden`` runs on it unchanged; the engine (``gpt2_serve.engine``) plans each pass.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from gpt2_core.config import GPTConfig
from gpt2_core.kv_cache import cache_dtype


@dataclass(frozen=True)
class Chunk:
    """``count`` prompt tokens of the sequence in ``slot``, from position ``start``: one pass's prefill."""

    slot: int
    start: int
    count: int


class SlotCache:
    """Keys and values of up to ``slots`` independent sequences, each in its own fixed slot, with its own
    length (continuous batching, vLLM's idea without its pages: a context window per slot).

    A pass feeds a packed row ``idx`` (1, N): first one decode token for each slot in ``lo..hi-1`` (a slot
    not decoding this pass gets a padding token whose key and value go to a scratch slot), then each prompt
    :class:`Chunk`. ``plan`` says which; ``begin`` builds the positions, the key masks and the write index
    once for the pass from the lengths on the device. Each layer writes its new keys and values with one
    ``index_copy_`` and attends twice at most: the decode rows as a batch over views of their slots, each
    chunk over its own slot. A sequence leaving frees its slot without copying (``release``).

    ``k``, ``v``: (n_layer, slots + 1, n_head, block_size, head_dim); ``lengths``: (slots + 1,) int64 on
    the device. The host keeps its own count of each slot's length (``host_lengths``) to size the views.
    """

    def __init__(self, config: GPTConfig, slots: int, device: torch.device | str, dtype: torch.dtype) -> None:
        self.slots = slots
        self.max_len = config.block_size
        self.n_head = config.n_head
        self.head_dim = config.n_embd // config.n_head
        shape = (config.n_layer, slots + 1, config.n_head, config.block_size, self.head_dim)
        # Zeros, not empty: a padding row reads key 0 of its slot, which must be a finite number. fp32 on a CPU
        # (gpt2_core.kv_cache.cache_dtype: its bf16 attention is the slower).
        dtype = cache_dtype(dtype, device)
        self.k = torch.zeros(shape, device=device, dtype=dtype)
        self.v = torch.zeros(shape, device=device, dtype=dtype)
        self.device = torch.device(device)
        self.lengths = torch.zeros(slots + 1, dtype=torch.long, device=device)
        self.host_lengths = [0] * slots
        # The plan of the next pass (``plan``) and what ``begin`` builds from it for every layer.
        self._decoding: list[bool] = []
        self._lo = self._hi = 0
        self._chunks: list[Chunk] = []
        self._dec = self._index = self._dec_mask = torch.empty(0)
        self._K = 0
        self._chunk_masks: list[torch.Tensor | None] = []

    def plan(self, decode: list[int], chunks: list[Chunk]) -> int:
        """Set the next pass: one token for each slot in ``decode``, then ``chunks``; return N, the pass's
        packed length. The decode tokens of ``idx`` are laid out for slots ``lo..hi-1`` (``decode_span``)."""
        self._lo, self._hi = (min(decode), max(decode) + 1) if decode else (0, 0)
        wanted = set(decode)
        self._decoding = [s in wanted for s in range(self._lo, self._hi)]
        self._chunks = list(chunks)
        for s in decode:
            if self.host_lengths[s] + 1 > self.max_len:
                raise ValueError(f"slot {s} is full: the context window is {self.max_len}")
        for c in chunks:
            if c.start != self.host_lengths[c.slot] or c.start + c.count > self.max_len:
                raise ValueError(f"chunk {c} does not continue slot {c.slot} within the context window")
        return (self._hi - self._lo) + sum(c.count for c in chunks)

    @property
    def decode_span(self) -> tuple[int, int]:
        """(lo, hi): the slots whose decode tokens (padding included) open the pass, in order."""
        return self._lo, self._hi

    def begin(self, T: int, device: torch.device) -> torch.Tensor:
        lo, hi, H, L = self._lo, self._hi, self.n_head, self.max_len
        B = hi - lo
        dec = torch.tensor(self._decoding, dtype=torch.bool, device=device)
        self._dec = dec
        # Decode rows: position = the slot's length; a padding row sits at position 0 and writes its key to
        # a distinct place of the scratch slot.
        dec_pos = torch.where(dec, self.lengths[lo:hi], 0)
        dec_slot = torch.where(dec, torch.arange(lo, hi, device=device), self.slots)
        dec_write = torch.where(dec, dec_pos, torch.arange(B, device=device))
        pos, slot, write = [dec_pos], [dec_slot], [dec_write]
        for c in self._chunks:
            p = torch.arange(c.start, c.start + c.count, device=device)
            pos.append(p)
            slot.append(torch.full((c.count,), c.slot, device=device))
            write.append(p)
        positions = torch.cat(pos)
        if positions.numel() != T:
            raise ValueError(f"the pass has {T} tokens, its plan {positions.numel()}")
        # Flat row of (slot, head, position) in k.view(n_layer, -1, head_dim)[layer]: one index_copy_ a layer.
        heads = torch.arange(H, device=device)[:, None]
        self._index = ((torch.cat(slot)[None, :] * H + heads) * L + torch.cat(write)[None, :]).reshape(-1)
        self._K = max((self.host_lengths[s] for s in range(lo, hi) if self._decoding[s - lo]), default=0) + 1
        self._dec_mask = (torch.arange(self._K, device=device) <= dec_pos[:, None])[:, None, None, :]
        self._chunk_masks = [
            None
            if c.start == 0
            else torch.ones(c.count, c.start + c.count, dtype=torch.bool, device=device).tril(c.start)
            for c in self._chunks
        ]
        return positions[None, :]

    def attend(self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        _, H, N, hd = q.shape
        dtype, q = q.dtype, q.to(self.k.dtype)
        self.k[layer].view(-1, hd).index_copy_(0, self._index, k[0].reshape(H * N, hd).to(self.k.dtype))
        self.v[layer].view(-1, hd).index_copy_(0, self._index, v[0].reshape(H * N, hd).to(self.k.dtype))
        lo, hi = self._lo, self._hi
        out = []
        if hi > lo:
            qd = q[0, :, : hi - lo].transpose(0, 1)[:, :, None]  # (B, H, 1, hd)
            y = F.scaled_dot_product_attention(
                qd, self.k[layer, lo:hi, :, : self._K], self.v[layer, lo:hi, :, : self._K], self._dec_mask
            )
            out.append(y[:, :, 0].transpose(0, 1))  # (H, B, hd)
        at = hi - lo
        for c, mask in zip(self._chunks, self._chunk_masks):
            end = c.start + c.count
            y = F.scaled_dot_product_attention(
                q[:, :, at : at + c.count],
                self.k[layer, c.slot : c.slot + 1, :, :end],
                self.v[layer, c.slot : c.slot + 1, :, :end],
                attn_mask=mask,
                is_causal=mask is None and c.count > 1,
            )
            out.append(y[0])
            at += c.count
        return (torch.cat(out, dim=1)[None] if len(out) > 1 else out[0][None]).to(dtype)

    def end(self) -> None:
        lo, hi = self._lo, self._hi
        if hi > lo:
            self.lengths[lo:hi] += self._dec
            for s in range(lo, hi):
                self.host_lengths[s] += self._decoding[s - lo]
        for c in self._chunks:
            self.lengths[c.slot] += c.count
            self.host_lengths[c.slot] += c.count
        self._chunks = []
        self._lo = self._hi = 0

    def copy_slot(self, src: int, dst: int) -> None:
        """Make slot ``dst`` hold what ``src`` holds (the ``n`` samples of one prompt share its prefill)."""
        n = self.host_lengths[src]
        self.k[:, dst, :, :n] = self.k[:, src, :, :n]
        self.v[:, dst, :, :n] = self.v[:, src, :, :n]
        self.lengths[dst] = n
        self.host_lengths[dst] = n

    def release(self, slot: int) -> None:
        """Empty ``slot`` for the next sequence: only its length is reset, nothing is copied."""
        self.lengths[slot] = 0
        self.host_lengths[slot] = 0
