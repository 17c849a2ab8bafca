"""GPT-2, read top to bottom: config, attention, MLP, block, the model, then saving and loading.

Module names equal Hugging Face's GPT-2 keys (``transformer.h.0.attn.c_attn``, ...), so importing and
exporting weights is a transpose of the four Conv1D matrices, not a renaming table.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from gpt2_core.errors import UserError
from gpt2_core.loss import cross_entropy
from gpt2_core.tokenizer import EOT_ID, EOT_TOKEN  # also importable from here

GPT2_VOCAB_SIZE = 50257


@dataclass
class GPTConfig:
    """The shape of a GPT-2 model and the tokenizer it was trained with."""

    block_size: int = 1024
    """Context window: the number of positions (learned position embeddings)."""
    vocab_size: int = GPT2_VOCAB_SIZE
    """Real token ids: the 50257 GPT-2 ids plus any special tokens added above 50256."""
    padded_vocab_size: int = 0
    """Rows of the embedding matrix (>= vocab_size; 0 means equal). Padding to a multiple of 64 speeds GPUs."""
    n_layer: int = 12
    """Number of transformer blocks."""
    n_head: int = 12
    """Attention heads per block."""
    n_embd: int = 768
    """Width of the residual stream."""
    dropout: float = 0.0
    """Dropout on attention weights and residual branches (0 for pre-training, as GPT-2 reproductions do)."""
    bias: bool = True
    """Biases in Linear layers and LayerNorms (True matches GPT-2)."""
    special_tokens: dict[str, int] = field(default_factory=lambda: {EOT_TOKEN: EOT_ID})
    """Special tokens of the tokenizer, name -> id; ids above 50256 (chat markers) must be < vocab_size."""
    chat_template: dict[str, Any] | None = None
    """The chat template an SFT model was trained with (set by gpt2-sft), None for a pre-trained model."""

    def __post_init__(self) -> None:
        if self.padded_vocab_size == 0:
            self.padded_vocab_size = self.vocab_size
        for name in ("block_size", "vocab_size", "n_layer", "n_head", "n_embd"):
            if getattr(self, name) <= 0:
                raise UserError(f"model config: {name} must be positive, got {getattr(self, name)}")
        if self.n_embd % self.n_head:
            raise UserError(
                f"model config: n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head})"
            )
        if self.padded_vocab_size < self.vocab_size:
            raise UserError(
                f"model config: padded_vocab_size ({self.padded_vocab_size}) "
                f"is smaller than vocab_size ({self.vocab_size})"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise UserError(f"model config: dropout must be in [0, 1), got {self.dropout}")
        for name, idx in self.special_tokens.items():
            if not 0 <= idx < self.vocab_size:
                raise UserError(
                    f"model config: special token {name!r} has id {idx}, outside vocab_size {self.vocab_size}"
                )

    def padded(self, multiple: int = 64) -> GPTConfig:
        """This config with the embedding rows rounded up to a multiple (50257 -> 50304 for 64)."""
        rows = math.ceil(self.vocab_size / multiple) * multiple
        return GPTConfig(**{**self.to_dict(), "padded_vocab_size": max(rows, self.padded_vocab_size)})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "config") -> GPTConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise UserError(f"{source}: unknown model config keys {unknown}")
        return cls(**d)


class CausalSelfAttention(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.n_head = config.n_head
        self.n_embd = config.n_embd
        self.dropout = config.dropout
        # q, k and v for all heads in one matmul, as GPT-2's Conv1D did.
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.c_proj.RESIDUAL_SCALE_INIT = True
        self.resid_dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor, cache: LayerKV | None = None) -> torch.Tensor:
        B, T, C = x.size()
        q, k, v = self.c_attn(x).split(self.n_embd, dim=2)
        # (B, T, C) -> (B, n_head, T, head_dim)
        q = q.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        k = k.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        v = v.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        mask = None
        is_causal = True
        if cache is not None:
            mask = cache.attn_mask(T, x.device)  # None: causal over the new keys alone
            k, v = cache.append(k, v)
            is_causal = mask is None and T > 1
        y = F.scaled_dot_product_attention(
            q,
            k,
            v,
            attn_mask=mask,
            dropout_p=self.dropout if self.training else 0.0,
            is_causal=is_causal,
        )
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.resid_dropout(self.c_proj(y))


class MLP(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.gelu = nn.GELU(approximate="tanh")  # GPT-2 used the tanh approximation
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.c_proj.RESIDUAL_SCALE_INIT = True
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.c_proj(self.gelu(self.c_fc(x))))


class Block(nn.Module):
    """Pre-LayerNorm transformer block: x + attn(ln(x)), then x + mlp(ln(x))."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.mlp = MLP(config)

    def forward(self, x: torch.Tensor, cache: LayerKV | None = None) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), cache)
        x = x + self.mlp(self.ln_2(x))
        return x


class GPT(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.config = config
        self.transformer = nn.ModuleDict(
            dict(
                wte=nn.Embedding(config.padded_vocab_size, config.n_embd),
                wpe=nn.Embedding(config.block_size, config.n_embd),
                drop=nn.Dropout(config.dropout),
                h=nn.ModuleList([Block(config) for _ in range(config.n_layer)]),
                ln_f=nn.LayerNorm(config.n_embd, bias=config.bias),
            )
        )
        self.lm_head = nn.Linear(config.n_embd, config.padded_vocab_size, bias=False)
        self.lm_head.weight = self.transformer.wte.weight  # tied, as in GPT-2
        # Recompute each block's activations during backward instead of storing them (trainer flag).
        self.activation_checkpointing = False
        self.apply(self._init_weights)

    def _init_weights(self, module: nn.Module) -> None:
        # GPT-2: normal(0, 0.02); projections into the residual stream scaled by 1/sqrt(2 * n_layer)
        # because each block adds two of them.
        if isinstance(module, nn.Linear):
            std = 0.02
            if getattr(module, "RESIDUAL_SCALE_INIT", False):
                std *= (2 * self.config.n_layer) ** -0.5
            torch.nn.init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                torch.nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            torch.nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def num_params(self, non_embedding: bool = False) -> int:
        """Parameter count; the tied lm_head is counted once. non_embedding drops the position table."""
        n = sum(p.numel() for p in self.parameters())
        if non_embedding:
            n -= self.transformer.wpe.weight.numel()
        return n

    def hidden(self, idx: torch.Tensor, kv_cache: KVCache | None = None) -> torch.Tensor:
        """The final hidden states (B, T, n_embd) of ``idx`` (B, T), after ``ln_f``: what the head scores."""
        B, T = idx.size()
        start = kv_cache.length if kv_cache is not None else 0
        if start + T > self.config.block_size:
            raise ValueError(
                f"sequence of length {start + T} exceeds the context window ({self.config.block_size})"
            )
        if kv_cache is None:
            pos = torch.arange(T, dtype=torch.long, device=idx.device)
        else:
            pos = kv_cache.positions(T, idx.device)  # (T,), or (B, T) where rows differ in length
        # On CPU, eager mode looks tokens up with a sparse gradient: it touches only the B*T rows read, and
        # autograd adds them into the tied head's dense gradient instead of allocating, zero-filling,
        # scattering into and adding a second vocab-sized matrix (154 MB for gpt2). GPUs do that at memory
        # speed (and deterministically), compiled graphs fuse it. The module's own `sparse` flag stays off:
        # DDP would then expect a sparse gradient, and the tied weight's total gradient is dense.
        sparse = idx.device.type == "cpu" and not torch.compiler.is_compiling()
        tok = F.embedding(idx, self.transformer.wte.weight, sparse=sparse)
        x = self.transformer.drop(tok + self.transformer.wpe(pos))
        for i, block in enumerate(self.transformer.h):
            if kv_cache is not None:
                x = block(x, kv_cache.layers[i])
            elif self.activation_checkpointing and self.training:
                x = checkpoint(block, x, use_reentrant=False)
            else:
                x = block(x)
        return self.transformer.ln_f(x)

    def forward(
        self,
        idx: torch.Tensor,
        targets: torch.Tensor | None = None,
        *,
        kv_cache: KVCache | None = None,
        ignore_index: int = -100,
        all_positions: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Logits for ``idx`` (B, T), and the mean cross-entropy when ``targets`` (B, T) are given.

        Targets equal to ``ignore_index`` do not count (SFT masks prompt tokens this way). Without
        targets only the last position's logits are computed, (B, 1, V): that is all generation needs;
        ``all_positions`` asks for every position's, (B, T, V) (scoring a text, as HellaSwag does).
        With ``kv_cache``, ``idx`` continues the cached sequence and the cache is extended in place.
        """
        x = self.hidden(idx, kv_cache)
        if targets is None:
            return self.lm_head(x if all_positions else x[:, [-1], :]), None
        logits = self.lm_head(x)
        loss = cross_entropy(logits.view(-1, logits.size(-1)), targets.reshape(-1), ignore_index)
        return logits, loss

    # --- weight files (see gpt2_core.weights) ---

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike[str], device: str | torch.device = "cpu") -> GPT:
        """Load a saved model directory (ours, or a Hugging Face GPT-2 directory)."""
        from gpt2_core.weights import load_model

        return load_model(path, device=device)

    def save_pretrained(self, path: str | os.PathLike[str]) -> None:
        """Write ``model.safetensors`` and ``config.json`` into directory ``path``."""
        from gpt2_core.weights import save_model

        save_model(self, path)


class LayerKV:
    """Keys and values of one block, preallocated for the whole context window."""

    def __init__(self, k: torch.Tensor, v: torch.Tensor) -> None:
        self.k, self.v = k, v
        self.length = 0

    def attn_mask(self, T: int, device: torch.device) -> torch.Tensor | None:
        """Which keys each of ``T`` new queries sees (T, length + T); None when plain causal masking does."""
        if T == 1 or self.length == 0:
            return None  # one new query sees everything; or nothing is cached yet
        # New queries sit at positions past..past+T-1 and see keys up to their own position.
        return torch.ones(T, self.length + T, dtype=torch.bool, device=device).tril(diagonal=self.length)

    def append(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        end = self.length + k.size(2)
        self.k[:, :, self.length : end] = k
        self.v[:, :, self.length : end] = v
        self.length = end
        return self.k[:, :, :end], self.v[:, :, :end]


class KVCache:
    """Per-layer key/value cache for incremental decoding."""

    def __init__(
        self,
        config: GPTConfig,
        batch_size: int,
        device: torch.device | str,
        dtype: torch.dtype,
        max_len: int | None = None,
    ) -> None:
        max_len = max_len or config.block_size
        hd = config.n_embd // config.n_head
        shape = (batch_size, config.n_head, max_len, hd)
        self.layers = [
            LayerKV(
                torch.empty(shape, device=device, dtype=dtype), torch.empty(shape, device=device, dtype=dtype)
            )
            for _ in range(config.n_layer)
        ]

    @property
    def length(self) -> int:
        return self.layers[0].length

    def positions(self, T: int, device: torch.device) -> torch.Tensor:
        """Positions (T,) of ``T`` tokens that continue the cached sequence."""
        return torch.arange(self.length, self.length + T, dtype=torch.long, device=device)

    def truncate(self, length: int) -> None:
        """Forget everything after the first ``length`` positions (to reuse a shared prefix)."""
        for layer in self.layers:
            layer.length = min(layer.length, length)


class SlotLayerKV:
    """Keys and values of one block for independent sequences, one per row, each with its own length."""

    def __init__(self, k: torch.Tensor, v: torch.Tensor, lengths: list[int]) -> None:
        self.k, self.v = k, v
        self.lengths = lengths  # shared with the cache: one entry per active row, rows 0..B-1

    def attn_mask(self, T: int, device: torch.device) -> torch.Tensor:
        """(B, 1, T, max length + T): row b's query t sees its own keys up to position lengths[b] + t."""
        past = torch.tensor(self.lengths, dtype=torch.long, device=device)
        last = past[:, None] + torch.arange(T, device=device)  # (B, T) position of each new query
        keys = torch.arange(max(self.lengths) + T, device=device)
        return (keys <= last[:, :, None])[:, None]

    def append(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        B, _, T, _ = k.shape
        pos = torch.tensor(self.lengths, dtype=torch.long, device=k.device)[:, None] + torch.arange(
            T, device=k.device
        )
        rows = torch.arange(B, device=k.device)[:, None]
        # Indexing (rows, :, pos) puts the (B, T) index dims first: (B, T, n_head, head_dim).
        self.k[rows, :, pos] = k.transpose(1, 2)
        self.v[rows, :, pos] = v.transpose(1, 2)
        end = max(self.lengths) + T
        return self.k[:B, :, :end], self.v[:B, :, :end]


class SlotKVCache:
    """A KV cache of up to ``slots`` independent sequences decoded as one batch (continuous batching).

    Active sequences are rows 0..``batch``-1, each with its own length: ``add`` puts a sequence prefilled
    in a one-row ``KVCache`` into the next row, ``remove`` frees a row at once (the last row moves into
    it, so the active rows stay one slice), and every forward pass feeds one or more new tokens to every
    active row. Keys beyond a row's length are masked out, so rows never see each other's padding.
    """

    def __init__(self, config: GPTConfig, slots: int, device: torch.device | str, dtype: torch.dtype) -> None:
        hd = config.n_embd // config.n_head
        shape = (slots, config.n_head, config.block_size, hd)
        self.lengths: list[int] = []
        # Zeros, not empty: masked-out keys still meet their values in the product (0 * NaN is NaN).
        self.layers = [
            SlotLayerKV(
                torch.zeros(shape, device=device, dtype=dtype),
                torch.zeros(shape, device=device, dtype=dtype),
                self.lengths,
            )
            for _ in range(config.n_layer)
        ]

    @property
    def slots(self) -> int:
        return self.layers[0].k.size(0)

    @property
    def batch(self) -> int:
        """Active rows."""
        return len(self.lengths)

    @property
    def length(self) -> int:
        """The longest active row (what the context window limits)."""
        return max(self.lengths, default=0)

    def positions(self, T: int, device: torch.device) -> torch.Tensor:
        """Positions (B, T) of ``T`` new tokens in each active row."""
        past = torch.tensor(self.lengths, dtype=torch.long, device=device)
        return past[:, None] + torch.arange(T, dtype=torch.long, device=device)

    def advance(self, T: int) -> None:
        """Count ``T`` tokens just fed to every active row (call after each forward pass)."""
        self.lengths[:] = [n + T for n in self.lengths]

    def add(self, prefilled: KVCache) -> int:
        """Copy the one sequence in ``prefilled`` into a new active row; return the row."""
        row, n = self.batch, prefilled.length
        if row == self.slots:
            raise ValueError(f"all {self.slots} rows of the cache are taken")
        for mine, theirs in zip(self.layers, prefilled.layers):
            mine.k[row, :, :n] = theirs.k[0, :, :n]
            mine.v[row, :, :n] = theirs.v[0, :, :n]
        self.lengths.append(n)
        return row

    def remove(self, row: int) -> None:
        """Free ``row``: the last active row moves into it (the caller renumbers that sequence)."""
        last = self.batch - 1
        if row != last:
            n = self.lengths[last]
            for layer in self.layers:
                layer.k[row, :, :n] = layer.k[last, :, :n]
                layer.v[row, :, :n] = layer.v[last, :, :n]
            self.lengths[row] = n
        self.lengths.pop()
