"""The shape of a GPT-2 model: a dataclass that imports no torch (the CLI and data workers read it)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from gpt2_core.errors import UserError
from gpt2_core.tokenizer import EOT_ID, EOT_TOKEN

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
    tie_word_embeddings: bool = True
    """The LM head is the token embedding (True matches GPT-2); False gives the head a weight of its own, as
    modded-nanogpt's speedrun does. Hugging Face's GPT2Config name for the same switch."""
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
        if not isinstance(self.tie_word_embeddings, bool):  # a string "false" would tie silently
            raise UserError(
                f"model config: tie_word_embeddings must be true or false, got {self.tie_word_embeddings!r}"
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
