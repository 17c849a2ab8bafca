"""Configs of ``gpt2 sft prepare`` and ``gpt2 sft``: torch-free, so ``gpt2 --help`` stays fast."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from gpt2_core.errors import UserError
from gpt2_train.config import TrainConfig


def check_template_and_split(template: str, val_fraction: float) -> None:
    """The checks both SFT configs make: ``--template`` and ``--val-fraction``; ``UserError`` naming the flag."""
    if template not in ("auto", "special", "plain"):
        raise UserError(f"--template must be auto, special or plain, got {template!r}")
    if not 0.0 <= val_fraction < 1.0:
        raise UserError(f"--val-fraction must be in [0, 1), got {val_fraction}")


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
        check_template_and_split(self.template, self.val_fraction)
        if self.max_len < 0:
            raise UserError(f"--max-len must be >= 0, got {self.max_len}")


@dataclass
class SFTConfig(TrainConfig):
    """``gpt2 sft``: ``gpt2 train``'s config with fine-tuning defaults (low lr, few epochs, held-out val)."""

    init_from: str | None = None
    """The model to fine-tune: one of our model directories or checkpoints (RUN/latest), or Hugging Face GPT-2."""
    data_dir: str | None = None
    """Directory of examples from gpt2 sft prepare."""
    dataset: str | None = None
    """Without --data-dir: an instruction dataset (alpaca, chat, shakespeare-chat) to prepare into RUN_DIR/data; its options follow."""
    total_batch_tokens: int = 65536
    """Token slots per optimizer step over all ranks (padding included); accumulation makes up the difference."""
    micro_batch: int = 8
    """Rows of packed examples per forward/backward pass on each rank."""
    seq_len: int = 0
    """Longest row in tokens (0: the model's context window, at most 1024); longer conversations lose whole
    turns."""
    epochs: float = 2.0
    """Passes over the training examples, used when --max-steps is 0."""
    lr: float = 3e-5
    """Peak learning rate (much lower than pre-training: the model should keep what it knows)."""
    warmup_steps: int = 20
    """Steps of linear warm-up from 0 to lr."""
    optimizer_options: dict[str, dict[str, Any]] = field(
        default_factory=lambda: {"adamw": {"weight_decay": 0.0}, "muon": {"weight_decay": 0.0}}
    )
    """Each optimizer's own options by its name, as gpt2 train's; fine-tuning's AdamW has no weight decay."""
    eval_every: int = 50
    """Val loss (on the held-out conversations) every this many steps, and at the end (0: never)."""
    eval_batches: int = 10
    """Micro-batches of val examples per val loss (at most one pass over them)."""
    run_dir: str = "runs/sft"
    """Directory for checkpoints and logs; RUN_DIR/latest is the newest checkpoint, a model directory."""
    template: str = "auto"
    """Chat template for a model without one: special (role tokens), plain (text markers), or auto."""
    pack: bool = True
    """Pack several conversations into each row (no padding waste); --no-pack puts one per row."""
    val_fraction: float = 0.05
    """With --dataset: the share of conversations held out for val loss."""

    POSITIVE: ClassVar[tuple[str, ...]] = tuple(f for f in TrainConfig.POSITIVE if f != "seq_len")

    def __post_init__(self) -> None:
        if self.align_documents:
            raise UserError("align_documents is gpt2 train's (token shards); gpt2 sft reads whole examples")
        super().__post_init__()
        if self.seq_len < 0:
            raise UserError(f"--seq-len must be >= 0 (0: the model's context window), got {self.seq_len}")
        check_template_and_split(self.template, self.val_fraction)


# Named fine-tuning recipes; the model comes from --from. Only fields that differ from SFTConfig's defaults
# (a test keeps it so).
SFT_PRESETS: dict[str, dict[str, Any]] = {
    # A model from `gpt2 train --preset tiny`, on the built-in Shakespeare instructions: a few minutes on
    # 2 CPU cores (bench/first_run.py measures it).
    "tiny": dict(
        dataset="shakespeare-chat",
        train_vocab="data",
        total_batch_tokens=2048,
        micro_batch=16,
        seq_len=128,
        max_steps=150,
        lr=1e-3,
        warmup_steps=10,
        val_fraction=0.02,
        eval_batches=4,
        run_dir="runs/tiny-sft",
    ),
}
