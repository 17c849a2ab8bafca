"""How to sample: a dataclass without torch, so the CLI can build its flags without importing torch."""

from __future__ import annotations

from dataclasses import dataclass, field

from gpt2_core.errors import UserError


@dataclass
class SamplingConfig:
    """How to pick each new token and when to stop."""

    max_new_tokens: int = 50
    """Number of tokens to generate at most (per sequence)."""
    temperature: float = 1.0
    """Softmax temperature; 0 means greedy (always the most likely token)."""
    top_k: int = 50
    """Sample only among the k most likely tokens (0: no limit)."""
    top_p: float = 1.0
    """Nucleus sampling: the smallest set of tokens whose probability adds up to top_p (1: no limit)."""
    seed: int | None = None
    """Random seed, for reproducible samples."""
    num_return_sequences: int = 1
    """Number of sequences to generate from the prompt, as one batch."""
    stop: list[str] = field(default_factory=list)
    """Stop a sequence when it produces one of these strings (the string itself is cut)."""
    stop_at_eot: bool = True
    """Stop a sequence at <|endoftext|>."""

    def __post_init__(self) -> None:
        if self.max_new_tokens < 0:
            raise UserError(f"--max-tokens must be >= 0, got {self.max_new_tokens}")
        if self.temperature < 0:
            raise UserError(f"--temperature must be >= 0, got {self.temperature}")
        if self.top_k < 0:
            raise UserError(f"--top-k must be >= 0, got {self.top_k}")
        if not 0.0 < self.top_p <= 1.0:
            raise UserError(f"--top-p must be in (0, 1], got {self.top_p}")
        if self.num_return_sequences < 1:
            raise UserError(f"--num-seq must be >= 1, got {self.num_return_sequences}")
