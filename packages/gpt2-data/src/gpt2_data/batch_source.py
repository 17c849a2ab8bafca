"""The interface of a batch source: what gpt2-train's trainer pulls ``(x, y)`` batches from.

``ShardLoader`` (prepared shards), gpt2-sft's ``SFTLoader`` and the tests' sources subclass it. The three
abstract methods are what every source must do; the others are capabilities a source may have, whose
defaults say it has not, so the trainer calls them without probing.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING

from gpt2_core.errors import UserError

if TYPE_CHECKING:
    import numpy as np
    import torch


class BatchSource(ABC):
    """Batches for one rank, in an order that ``state_dict`` captures exactly (saved in every checkpoint)."""

    @abstractmethod
    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(x, y)``: int64 tensors of shape (B, T); targets equal to ``gpt2_core.loss.IGNORE_INDEX`` do not
        count."""

    @abstractmethod
    def state_dict(self) -> dict:
        """The exact position: plain Python containers, numbers, strings and tensors only."""

    @abstractmethod
    def load_state_dict(self, state: dict) -> None:
        """Continue from a ``state_dict``."""

    def batches_per_epoch(self) -> int | None:
        """``next_batch`` calls in one pass over the data on each rank; None when the source cannot tell
        (``--epochs`` then needs ``--max-steps`` instead)."""
        return None

    def token_ids(self) -> np.ndarray | None:
        """The distinct token ids the source can yield, sorted (int64); None when it cannot list them
        (``--train-vocab data`` then refuses)."""
        return None

    def set_shape(self, batch_size: int, seq_len: int) -> None:
        """Yield ``(batch_size, seq_len)`` batches from the next one on (gpt2-train's batch-size and
        sequence-length warm-ups). By default the shape is fixed: ``UserError``."""
        raise UserError(
            f"{type(self).__name__} yields batches of one shape; the batch-size and sequence-length warm-ups "
            "need one that can change it (gpt2 train's token shards)"
        )

    def reset(self) -> None:  # noqa: B027 (optional: a source that cannot restart goes on)
        """Back to the first batch, so a val loss reads the same batches each time; by default nothing."""
