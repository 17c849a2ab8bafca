"""The sharded loader: ``(x, y)`` batches from memory-mapped shards, split across ranks, exactly resumable.

The stream is read in *steps* of ``world_size * batch_size * seq_len`` tokens; in each step rank ``r`` takes
the ``r``-th slice of ``batch_size * seq_len`` tokens (plus one for the targets), so ranks read disjoint parts
of the stream in lock-step. A shard's tail shorter than a step is skipped, as in llm.c. Each epoch visits the
shards in an order shuffled with a seed from ``(seed, epoch)``, the same on every rank.

The position (epoch, shard order, shard index, offset) is shared by all ranks, and each rank adds its own
slice, so ``state_dict()`` of any rank resumes every rank at its very next batch. Resuming with another world
size (or batch shape) is a documented re-split: training continues from the same point of the token stream,
divided among the new ranks.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from gpt2_core.errors import UserError

from gpt2_data.prepare import read_manifest
from gpt2_data.shards import open_shard, read_header, verify_shard

GPT2_VOCAB_SIZE = 50257
STATE_VERSION = 1


def find_shards(data_dir: str | Path, split: str) -> list[Path]:
    """The ``split`` shards of ``data_dir``: from its manifest, or ``*{split}*.bin`` (llm.c naming) without one."""
    root = Path(data_dir)
    if not root.is_dir():
        raise UserError(
            f"{root}: data directory not found (prepare one with `gpt2 data prepare --out {root}`)"
        )
    manifest = read_manifest(root)
    if manifest is not None:
        if not manifest.get("complete", False):
            raise UserError(
                f"{root}: prepare did not finish; run the same `gpt2 data prepare` again to resume"
            )
        paths = [root / s["name"] for s in manifest["shards"] if s["split"] == split]
    else:
        paths = sorted(root.glob(f"*{split}*.bin"))
    if not paths:
        raise UserError(f"{root}: no {split} shards (expected a manifest.json or files named *{split}*.bin)")
    return paths


class ShardLoader:
    """Batches of ``batch_size x seq_len`` token ids for one rank, from the shards of one split.

    ``next_batch()`` returns ``(x, y)``: int64 CPU tensors of shape ``(batch_size, seq_len)``, ``y`` being
    ``x`` shifted by one token (they share one buffer). ``epoch`` counts completed passes over the split and
    ``tokens_seen`` the tokens consumed by all ranks together. ``reset()`` goes back to the start, so an
    evaluation reads the same batches every time (use ``shuffle=False`` for validation).
    """

    def __init__(
        self,
        data_dir: str | Path,
        split: str = "train",
        batch_size: int = 8,
        seq_len: int = 1024,
        rank: int = 0,
        world_size: int = 1,
        seed: int = 0,
        shuffle: bool = True,
        vocab_size: int = GPT2_VOCAB_SIZE,
        verify: bool = False,
    ) -> None:
        if batch_size < 1 or seq_len < 1:
            raise UserError(f"batch size and sequence length must be >= 1 (got {batch_size}, {seq_len})")
        if not 0 <= rank < world_size:
            raise UserError(f"rank {rank} is outside world size {world_size}")
        self.data_dir = Path(data_dir)
        self.split = split
        self.batch_size, self.seq_len = batch_size, seq_len
        self.rank, self.world_size = rank, world_size
        self.seed, self.shuffle = seed, shuffle
        self.vocab_size = vocab_size
        self.paths = find_shards(self.data_dir, split)
        self.names = [p.name for p in self.paths]
        if verify:
            self.verify()
        self.lengths = [read_header(p) for p in self.paths]
        if max(self.lengths) < self._step + 1:
            raise UserError(
                f"{self.data_dir}: the largest {split} shard holds {max(self.lengths)} tokens, fewer than one step "
                f"of world_size x batch_size x seq_len + 1 = {self._step + 1}; use smaller batches or more data"
            )
        self._open: dict[int, np.ndarray] = {}
        self.reset()

    @property
    def _step(self) -> int:
        return self.world_size * self.batch_size * self.seq_len

    def verify(self) -> None:
        """Check every shard of the split against the sha256 in the manifest (a UserError names a bad one)."""
        manifest = read_manifest(self.data_dir)
        if manifest is None:
            raise UserError(f"{self.data_dir}: no manifest.json, so there are no checksums to verify")
        sums = {s["name"]: s["sha256"] for s in manifest["shards"]}
        for path in self.paths:
            verify_shard(path, sums[path.name])

    def _order(self, epoch: int) -> list[int]:
        if not self.shuffle:
            return list(range(len(self.paths)))
        return np.random.default_rng([self.seed, epoch]).permutation(len(self.paths)).tolist()

    def _tokens(self, shard: int) -> np.ndarray:
        if shard not in self._open:
            self._open[shard] = open_shard(self.paths[shard], vocab_size=self.vocab_size)
        return self._open[shard]

    def reset(self) -> None:
        """Back to the first batch of epoch 0."""
        self.epoch = 0
        self.order = self._order(0)
        self.shard_index = 0
        self.offset = 0
        self.tokens_seen = 0

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        step = self._step
        while self.offset + step + 1 > self.lengths[self.order[self.shard_index]]:
            self.shard_index += 1
            self.offset = 0
            if self.shard_index == len(self.order):
                self.epoch += 1
                self.order = self._order(self.epoch)
                self.shard_index = 0
        start = self.offset + self.rank * self.batch_size * self.seq_len
        n = self.batch_size * self.seq_len
        buf = torch.from_numpy(
            self._tokens(self.order[self.shard_index])[start : start + n + 1].astype(np.int64)
        )
        self.offset += step
        self.tokens_seen += step
        return buf[:-1].view(self.batch_size, self.seq_len), buf[1:].view(self.batch_size, self.seq_len)

    def __iter__(self) -> ShardLoader:
        return self

    def __next__(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.next_batch()

    def state_dict(self) -> dict[str, Any]:
        """The exact position: resuming from it continues with the next batch, on this rank and every other."""
        return {
            "version": STATE_VERSION,
            "split": self.split,
            "shards": list(self.names),
            "seed": self.seed,
            "shuffle": self.shuffle,
            "epoch": self.epoch,
            "order": [self.names[i] for i in self.order],
            "shard_index": self.shard_index,
            "offset": self.offset,
            "tokens_seen": self.tokens_seen,
            "rank": self.rank,
            "world_size": self.world_size,
            "batch_size": self.batch_size,
            "seq_len": self.seq_len,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from ``state`` (from any rank of the saved run; this loader keeps its own rank).

        With another world size or batch shape, the rest of the stream is re-split from the same position.
        """
        if state.get("version") != STATE_VERSION:
            raise UserError(f"loader state version {state.get('version')!r} is not {STATE_VERSION}")
        if sorted(state["shards"]) != sorted(self.names):
            raise UserError(
                f"{self.data_dir}: its {self.split} shards differ from those of the checkpoint's loader state; "
                "resume with the data directory the run started with"
            )
        index = {name: i for i, name in enumerate(self.names)}
        self.epoch = int(state["epoch"])
        self.order = [index[name] for name in state["order"]]
        self.shard_index = int(state["shard_index"])
        self.offset = int(state["offset"])
        self.tokens_seen = int(state["tokens_seen"])
