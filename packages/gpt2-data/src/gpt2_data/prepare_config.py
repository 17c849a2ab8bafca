"""``PrepareConfig``: how ``gpt2 data prepare`` tokenizes a dataset into shards, one flag per field (torch-free;
its own module, so the pipeline and the split routing read it without importing ``gpt2_data.prepare``, which
imports them)."""

from __future__ import annotations

from dataclasses import dataclass

from gpt2_core.errors import UserError


@dataclass
class PrepareConfig:
    """How ``gpt2 data prepare`` tokenizes a dataset into shards."""

    dataset: str = "python-stdlib"
    """Dataset to tokenize; `gpt2 data list` shows every dataset and its options."""
    shard_tokens: int = 100_000_000
    """Tokens per shard file (the last shard of each split may be shorter)."""
    val_tokens: float | None = None
    """Validation split: N >= 1 takes the first N tokens; 0 < N < 1 takes that fraction of documents (every k-th); 0 none. Default: one shard, or 5% of documents when the corpus is smaller than that."""
    max_tokens: int | None = None
    """Stop after this many tokens in all (validation included); default: the whole dataset."""
    workers: int = 0
    """Tokenizer threads; 0 uses every core. Each holds its own copy of the BPE tables (~10 MiB)."""

    def __post_init__(self) -> None:
        if self.shard_tokens < 1:
            raise UserError(f"--shard-tokens must be >= 1 (got {self.shard_tokens})")
        if self.val_tokens is not None and (
            self.val_tokens < 0 or (self.val_tokens > 1 and self.val_tokens != int(self.val_tokens))
        ):
            raise UserError(
                f"--val-tokens must be a token count (>= 1), a fraction in (0, 1), or 0 (got {self.val_tokens})"
            )
        if self.max_tokens is not None and self.max_tokens < 1:
            raise UserError(f"--max-tokens must be >= 1 (got {self.max_tokens})")
        if self.workers < 0:
            raise UserError(f"--workers must be >= 0 (got {self.workers})")
