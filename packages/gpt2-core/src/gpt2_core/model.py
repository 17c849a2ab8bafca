"""GPT-2, read top to bottom: attention, MLP, block, the model, then saving and loading.

The shape is a ``GPTConfig`` (``gpt2_core.config``, importable without torch); the keys and values of
earlier tokens during inference are a cache's (``gpt2_core.kv_cache``): attention hands it q, k and v.
Module names equal Hugging Face's GPT-2 keys (``transformer.h.0.attn.c_attn``, ...), so importing and
exporting weights is a transpose of the four Conv1D matrices, not a renaming table.
"""

from __future__ import annotations

import os

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from gpt2_core.config import GPTConfig
from gpt2_core.kv_cache import Cache
from gpt2_core.loss import IGNORE_INDEX, cross_entropy


class CausalSelfAttention(nn.Module):
    def __init__(self, config: GPTConfig, layer: int = 0) -> None:
        super().__init__()
        self.n_head = config.n_head
        self.n_embd = config.n_embd
        self.dropout = config.dropout
        self.layer = layer  # which block's keys and values a cache holds for it
        # q, k and v for all heads in one matmul, as GPT-2's Conv1D did.
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.c_proj.RESIDUAL_SCALE_INIT = True
        self.resid_dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor, cache: Cache | None = None) -> torch.Tensor:
        B, T, C = x.size()
        q, k, v = self.c_attn(x).split(self.n_embd, dim=2)
        # (B, T, C) -> (B, n_head, T, head_dim)
        q = q.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        k = k.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        v = v.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        if cache is not None:  # inference: the cache stores k and v and attends over what it holds
            y = cache.attend(self.layer, q, k, v)
        else:
            y = F.scaled_dot_product_attention(
                q, k, v, dropout_p=self.dropout if self.training else 0.0, is_causal=True
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

    def __init__(self, config: GPTConfig, layer: int = 0) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.attn = CausalSelfAttention(config, layer)
        self.ln_2 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.mlp = MLP(config)

    def forward(self, x: torch.Tensor, cache: Cache | None = None) -> torch.Tensor:
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
                h=nn.ModuleList([Block(config, i) for i in range(config.n_layer)]),
                ln_f=nn.LayerNorm(config.n_embd, bias=config.bias),
            )
        )
        self.lm_head = nn.Linear(config.n_embd, config.padded_vocab_size, bias=False)
        if config.tie_word_embeddings:
            self.lm_head.weight = self.transformer.wte.weight  # tied, as in GPT-2
        # Recompute each block's activations during backward instead of storing them (trainer flag).
        self.activation_checkpointing = False
        self.apply(self._init_weights)

    def _init_weights(self, module: nn.Module) -> None:
        # GPT-2: normal(0, 0.02); projections into the residual stream scaled by 1/sqrt(2 * n_layer)
        # because each block adds two of them. An untied head is a Linear like the others: normal(0, 0.02),
        # as transformers' GPT-2 initialises its lm_head (modded-nanogpt zeroes its untied head instead).
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
        """Parameter count; a tied lm_head is counted once (it is the token embedding), an untied one as the
        matrix of its own it is. non_embedding drops the position table."""
        n = sum(p.numel() for p in self.parameters())
        if non_embedding:
            n -= self.transformer.wpe.weight.numel()
        return n

    def hidden(self, idx: torch.Tensor, kv_cache: Cache | None = None) -> torch.Tensor:
        """The final hidden states (B, T, n_embd) of ``idx`` (B, T), after ``ln_f``: what the head scores.

        With ``kv_cache`` (see ``gpt2_core.kv_cache``) the tokens continue what the cache holds: it gives
        their positions, attends each block's queries over its keys and values, and counts the tokens once
        the last block is done. Raises ValueError past the context window.
        """
        B, T = idx.size()
        if kv_cache is None:
            if self.config.block_size < T:
                raise ValueError(
                    f"sequence of length {T} exceeds the context window ({self.config.block_size})"
                )
            pos = torch.arange(T, dtype=torch.long, device=idx.device)
        else:
            pos = kv_cache.begin(T, idx.device)  # (T,), or (B, T) where rows differ in length
        # On CPU, eager mode looks tokens up with a sparse gradient: it touches only the B*T rows read, and
        # autograd adds them into the tied head's dense gradient instead of allocating, zero-filling,
        # scattering into and adding a second vocab-sized matrix (154 MB for gpt2). GPUs do that at memory
        # speed (and deterministically), compiled graphs fuse it. The module's own `sparse` flag stays off:
        # DDP would then expect a sparse gradient, and the tied weight's total gradient is dense. An untied
        # embedding's gradient would stay sparse, which AdamW and DDP refuse: it keeps the dense lookup.
        sparse = (
            self.config.tie_word_embeddings and idx.device.type == "cpu" and not torch.compiler.is_compiling()
        )
        tok = F.embedding(idx, self.transformer.wte.weight, sparse=sparse)
        x = self.transformer.drop(tok + self.transformer.wpe(pos))
        for block in self.transformer.h:
            if kv_cache is not None:
                x = block(x, kv_cache)
            elif self.activation_checkpointing and self.training:
                x = checkpoint(block, x, use_reentrant=False)
            else:
                x = block(x)
        if kv_cache is not None:
            kv_cache.end()
        return self.transformer.ln_f(x)

    def forward(
        self,
        idx: torch.Tensor,
        targets: torch.Tensor | None = None,
        *,
        kv_cache: Cache | None = None,
        ignore_index: int = IGNORE_INDEX,
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
    def from_pretrained(
        cls,
        path: str | os.PathLike[str],
        device: str | torch.device = "cpu",
        dtype: torch.dtype | None = None,
    ) -> GPT:
        """Load a model directory: ours (config.json + safetensors, or a sharded checkpoint), or a Hugging Face
        GPT-2 one (config.json + safetensors or .bin), onto ``device`` in ``dtype`` (default: as stored, fp32).
        ``UserError`` naming the path when it holds no readable model."""
        from gpt2_core.weights import find_weights, read_weights_into

        config, weights, hf = find_weights(path)
        model = cls(config)
        read_weights_into(model, weights, hf)
        return model.to(device=device, dtype=dtype) if dtype else model.to(device)

    def save_pretrained(self, path: str | os.PathLike[str]) -> None:
        """Write ``model.safetensors`` and ``config.json`` into directory ``path``."""
        from gpt2_core.weights import save_model

        save_model(self, path)
