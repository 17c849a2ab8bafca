"""Configs of ``gpt2 sft prepare`` and ``gpt2 sft``: torch-free, so ``gpt2 --help`` stays fast."""

from __future__ import annotations

from dataclasses import dataclass

from gpt2_core.errors import UserError


@dataclass
class SFTPrepareConfig:
    """How ``gpt2 sft prepare`` turns an instruction dataset into training examples."""

    dataset: str = "alpaca"
    """Instruction dataset: alpaca (instruction/input/output) or chat (messages); its options follow."""
    model: str | None = None
    """The model to fine-tune: its chat template (if any), vocabulary and context window decide the tokens."""
    template: str = "auto"
    """Chat template for a model without one: special (role tokens), plain (text markers), or auto."""
    max_len: int = 0
    """Longest example in tokens (0: the model's context window + 1, or 1025 without --model)."""
    val_fraction: float = 0.05
    """Share of conversations held out for val loss."""
    seed: int = 0
    """Seed of the train/val split."""

    def __post_init__(self) -> None:
        if self.template not in ("auto", "special", "plain"):
            raise UserError(f"--template must be auto, special or plain, got {self.template!r}")
        if self.max_len < 0:
            raise UserError(f"--max-len must be >= 0, got {self.max_len}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise UserError(f"--val-fraction must be in [0, 1), got {self.val_fraction}")
