"""SFT batches for gpt2-train's trainer: rows of whole conversations, targets -100 except assistant tokens.

Each epoch shuffles the conversations (seeded by epoch), packs them greedily into rows of at most
``seq_len + 1`` tokens (or one per row with ``pack=False``), and deals the rows out to the ranks. A row's
inputs are its tokens but the last; its targets are the next tokens where those are assistant output, -100
elsewhere (prompt, padding), so only assistant tokens carry loss. Packed conversations attend to the ones
before them in the row, as pre-training documents do; each starts with ``<|endoftext|>``.
"""

from __future__ import annotations

import numpy as np
import torch
from gpt2_core.loss import IGNORE_INDEX
from gpt2_core.tokenizer import EOT_ID
from gpt2_data.batch_source import BatchSource

from gpt2_sft.examples import Examples


class SFTLoader(BatchSource):
    """A ``BatchSource`` (``next_batch``, ``state_dict``, ``load_state_dict``) over prepared examples."""

    def __init__(
        self,
        examples: Examples,
        *,
        batch_size: int,
        seq_len: int,
        rank: int = 0,
        world_size: int = 1,
        seed: int = 0,
        shuffle: bool = True,
        pack: bool = True,
        pad_id: int = EOT_ID,
    ) -> None:
        if len(examples) == 0:
            raise ValueError("no examples")
        self.examples = examples
        self.batch_size, self.seq_len = batch_size, seq_len
        self.rank, self.world_size = rank, world_size
        self.seed, self.shuffle, self.pack, self.pad_id = seed, shuffle, pack, pad_id
        lengths = np.diff(examples.offsets)
        self.cut = int((lengths > seq_len + 1).sum())
        """Examples longer than a row (prepared for a longer window): their tail is cut."""
        self.lengths = np.minimum(lengths, seq_len + 1)
        self.epoch = 0
        self.batch = 0  # next batch within the epoch
        self._rows: list[list[int]] | None = None

    def _plan(self) -> list[list[int]]:
        """This epoch's rows (lists of example indices), repeated so every rank gets whole batches."""
        if self._rows is None:
            order = np.arange(len(self.examples))
            if self.shuffle:
                order = np.random.default_rng([self.seed, self.epoch]).permutation(order)
            rows: list[list[int]] = []
            used = self.seq_len + 2  # forces a new row for the first example
            for i in order.tolist():
                n = int(self.lengths[i])
                if self.pack and used + n <= self.seq_len + 1:
                    rows[-1].append(i)
                    used += n
                else:
                    rows.append([i])
                    used = n
            per_batch = self.batch_size * self.world_size
            total = max(1, len(rows) // per_batch) * per_batch
            self._rows = [rows[j % len(rows)] for j in range(total)]
        return self._rows

    def batches_per_epoch(self) -> int:
        """``next_batch`` calls per epoch on each rank (the same on all)."""
        return len(self._plan()) // (self.batch_size * self.world_size)

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self.batch >= self.batches_per_epoch():
            self.epoch, self.batch, self._rows = self.epoch + 1, 0, None
        rows = self._plan()
        start = (self.batch * self.world_size + self.rank) * self.batch_size
        batch = rows[start : start + self.batch_size]
        self.batch += 1
        width = max(sum(int(self.lengths[i]) for i in row) for row in batch) - 1
        x = torch.full((len(batch), width), self.pad_id, dtype=torch.long)
        y = torch.full((len(batch), width), IGNORE_INDEX, dtype=torch.long)
        for r, row in enumerate(batch):
            tokens, mask = self._concat(row)
            tokens = tokens.astype(np.int64)  # stored as uint16, where -100 does not fit
            n = len(tokens) - 1
            x[r, :n] = torch.from_numpy(tokens[:-1])
            y[r, :n] = torch.from_numpy(np.where(mask[1:], tokens[1:], IGNORE_INDEX))
        return x, y

    def _concat(self, row: list[int]) -> tuple[np.ndarray, np.ndarray]:
        parts = [self.examples.example(i) for i in row]
        tokens = np.concatenate([t[: self.lengths[i]] for (t, _), i in zip(parts, row)])
        mask = np.concatenate([m[: self.lengths[i]] for (_, m), i in zip(parts, row)])
        return tokens, mask

    def token_ids(self) -> np.ndarray:
        """The distinct token ids of the examples, sorted (int64)."""
        return np.unique(self.examples.tokens).astype(np.int64)

    def reset(self) -> None:
        """Back to the first batch (val loss reads the same batches every time)."""
        self.epoch, self.batch, self._rows = 0, 0, None

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "batch": self.batch, "seed": self.seed}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.batch, self.seed = int(state["epoch"]), int(state["batch"]), int(state["seed"])
        self._rows = None
