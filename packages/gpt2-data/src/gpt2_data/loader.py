"""The sharded loader: ``(x, y)`` batches from memory-mapped shards, split across ranks, exactly resumable.

The stream is read in *steps* of ``world_size * batch_size * seq_len`` tokens; in each step rank ``r`` takes
the ``r``-th slice of ``batch_size * seq_len`` tokens (plus one for the targets), so ranks read disjoint parts
of the stream in lock-step. A shard's tail shorter than a step is skipped, as in llm.c. Each epoch visits the
shards in an order shuffled with a seed from ``(seed, epoch)``, the same on every rank.

With ``shuffle_windows``, each shard is also read in a shuffled order of *windows*: runs of whole documents
cut at the first document start (``<|endoftext|>``) at least ``window_tokens`` tokens after the window's own
start, so a window holds one document or several short ones, and a document longer than ``window_tokens`` is
a window by itself (a shard's leading piece before its first document start is one too). The windows are
permuted with a seed from ``(seed, epoch, shard)`` and the loader reads their concatenation exactly as it
would read the shard: same length, same steps, same rank slices. Only an index of window offsets is built per
shard (by scanning the memory map in chunks), so memory stays bounded.

With ``align_documents``, every sequence starts at a document start instead (modded-nanogpt's BOS-aligned
batches: no sequence opens mid-document, without its context): a step's ``world_size * batch_size`` sequences
are taken in order, each at the first document start at or after the previous one's end, so the document a
sequence's end cuts is not continued and its rest is skipped. A step whose sequences do not all fit in the
rest of a shard moves to the next shard, as an unaligned one does. It reads the same stream (windows included),
only skipping tokens, so an epoch's number of steps is not known without reading it.

The position (epoch, shard order, shard index, offset) is shared by all ranks, and each rank adds its own
slice, so ``state_dict()`` of any rank resumes every rank at its very next batch. Resuming with another world
size (or batch shape) is a documented re-split: training continues from the same point of the token stream,
divided among the new ranks. Window shuffling and document alignment are part of the stream: resuming with
other window or alignment settings, or another seed while windows are shuffled, is refused.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from gpt2_core.errors import UserError
from gpt2_core.tokenizer import EOT_ID

from gpt2_data.batch_source import BatchSource
from gpt2_data.prepare import read_manifest
from gpt2_data.shards import open_shard, read_header, verify_shard

GPT2_VOCAB_SIZE = 50257
STATE_VERSION = 1
_SCAN_TOKENS = 1 << 24  # document starts are found in chunks of this many tokens (32 MiB of uint16)


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


class ShardLoader(BatchSource):
    """Batches of ``batch_size x seq_len`` token ids for one rank, from the shards of one split.

    ``next_batch()`` returns ``(x, y)``: int64 CPU tensors of shape ``(batch_size, seq_len)``, ``y`` being
    ``x`` shifted by one token (they share one buffer). ``epoch`` counts completed passes over the split and
    ``tokens_seen`` the tokens consumed by all ranks together. ``reset()`` goes back to the start, so an
    evaluation reads the same batches every time (use ``shuffle=False`` for validation).
    ``shuffle_windows`` also shuffles document-aligned windows of at least ``window_tokens`` tokens within each
    shard, and ``align_documents`` starts every sequence at a document start (see the module docstring).
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
        shuffle_windows: bool = False,
        window_tokens: int = 1024,
        align_documents: bool = False,
    ) -> None:
        if batch_size < 1 or seq_len < 1:
            raise UserError(f"batch size and sequence length must be >= 1 (got {batch_size}, {seq_len})")
        if window_tokens < 1:
            raise UserError(
                f"window tokens must be >= 1 (got {window_tokens}; 1 makes every document a window)"
            )
        if not 0 <= rank < world_size:
            raise UserError(f"rank {rank} is outside world size {world_size}")
        self.data_dir = Path(data_dir)
        self.split = split
        self.batch_size, self.seq_len = batch_size, seq_len
        self.rank, self.world_size = rank, world_size
        self.seed, self.shuffle = seed, shuffle
        self.shuffle_windows, self.window_tokens = shuffle_windows, window_tokens
        self.align_documents = align_documents
        self.vocab_size = vocab_size
        self.paths = find_shards(self.data_dir, split)
        self.names = [p.name for p in self.paths]
        if verify:
            self.verify()
        self.lengths = [read_header(p) for p in self.paths]
        self.set_shape(batch_size, seq_len)  # refuses a step no shard can hold
        self._open: dict[int, np.ndarray] = {}
        # The window layout of the shard being read: (shard, epoch) -> (starts, ends, virtual offsets).
        self._layout_key: tuple[int, int] | None = None
        self._layout: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        # The document starts of the shard scanned last (windows and aligned rows both need them).
        self._scanned: tuple[int, np.ndarray] | None = None
        # The document starts of the stream being read, in stream offsets: (shard, epoch) -> sorted offsets.
        self._starts_key: tuple[int, int] | None = None
        self._starts: np.ndarray | None = None
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

    def batches_per_epoch(self) -> int | None:
        """``next_batch`` calls in one pass over the split on each rank (every shard's whole steps); None with
        ``align_documents``, whose skipped tokens are only known by reading the stream."""
        if self.align_documents:
            return None
        return sum((length - 1) // self._step for length in self.lengths)

    def token_ids(self) -> np.ndarray:
        """The distinct token ids in this split's shards, sorted (int64)."""
        seen = np.zeros(self.vocab_size, dtype=bool)
        for shard in range(len(self.paths)):
            seen[np.asarray(self._tokens(shard))] = True
        return np.flatnonzero(seen)

    def _tokens(self, shard: int) -> np.ndarray:
        if shard not in self._open:
            self._open[shard] = open_shard(self.paths[shard], vocab_size=self.vocab_size)
        return self._open[shard]

    def _doc_starts(self, shard: int) -> np.ndarray:
        """Offsets of ``shard``'s document starts (its ``<|endoftext|>`` tokens) in file order (int64); the
        last shard's are kept, so its windows and aligned rows scan it once."""
        if self._scanned is None or self._scanned[0] != shard:
            tokens = self._tokens(shard)
            found = [
                np.flatnonzero(tokens[i : i + _SCAN_TOKENS] == EOT_ID) + i
                for i in range(0, len(tokens), _SCAN_TOKENS)
            ]
            self._scanned = (shard, np.concatenate([np.zeros(0, np.int64), *found]).astype(np.int64))
        return self._scanned[1]

    def _doc_windows(self, shard: int) -> np.ndarray:
        """Window start offsets of ``shard`` in file order (the first is 0), from its document starts."""
        starts = np.concatenate([np.zeros(1, np.int64), self._doc_starts(shard)])
        cuts = [0]
        # Greedy: one searchsorted per window (not per document) finds the next start far enough away.
        while (i := int(np.searchsorted(starts, cuts[-1] + self.window_tokens))) < len(starts):
            cuts.append(int(starts[i]))
        return np.asarray(cuts, dtype=np.int64)

    def windows(self, shard: int, epoch: int) -> np.ndarray:
        """``(n, 2)`` ``[start, end)`` token offsets of ``shard``'s windows in the order they are read in ``epoch``.

        ``shard`` indexes ``self.paths``. Without ``shuffle_windows``, one window: the whole shard.
        """
        if not self.shuffle_windows:
            return np.array([[0, self.lengths[shard]]], dtype=np.int64)
        starts = self._doc_windows(shard)
        ends = np.append(starts[1:], self.lengths[shard])
        perm = np.random.default_rng([self.seed, epoch, shard]).permutation(len(starts))
        return np.stack([starts[perm], ends[perm]], axis=1)

    def _window_layout(self, shard: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``shard``'s windows this epoch, in reading order: file starts, file ends, and stream offsets (one more
        than windows: the last is the stream's length). Kept for the shard being read."""
        if self._layout_key != (shard, self.epoch):
            w = self.windows(shard, self.epoch)
            self._layout = (w[:, 0], w[:, 1], np.concatenate([[0], np.cumsum(w[:, 1] - w[:, 0])]))
            self._layout_key = (shard, self.epoch)
        return self._layout

    def _read(self, shard: int, start: int, n: int) -> np.ndarray:
        """Tokens ``[start, start + n)`` of the stream read from ``shard`` this epoch (its windows in order)."""
        tokens = self._tokens(shard)
        if not self.shuffle_windows:
            return tokens[start : start + n]
        starts, ends, virtual = self._window_layout(shard)
        i = int(np.searchsorted(virtual, start, side="right")) - 1
        pieces, pos = [], start
        while pos < start + n:
            lo = starts[i] + pos - virtual[i]
            hi = min(ends[i], lo + start + n - pos)
            pieces.append(tokens[lo:hi])
            pos += hi - lo
            i += 1
        return pieces[0] if len(pieces) == 1 else np.concatenate(pieces)

    def _stream_doc_starts(self, shard: int) -> np.ndarray:
        """The document starts of the stream read from ``shard`` this epoch, as offsets into that stream."""
        if self._starts_key != (shard, self.epoch):
            starts = self._doc_starts(shard)
            if self.shuffle_windows:
                first, last, virtual = self._window_layout(shard)
                lo, hi = np.searchsorted(starts, first), np.searchsorted(starts, last)
                starts = np.concatenate(
                    [starts[a:b] - s + v for a, b, s, v in zip(lo, hi, first, virtual)]
                ).astype(np.int64)
            self._starts, self._starts_key = starts, (shard, self.epoch)
        return self._starts

    def _aligned_rows(self, shard: int) -> tuple[list[int], int] | None:
        """The start offsets of this step's ``world_size * batch_size`` sequences in ``shard``'s stream from
        ``self.offset``, and the offset after them; None when they do not fit in the shard."""
        starts = self._stream_doc_starts(shard)
        rows, pos = [], self.offset
        for _ in range(self.world_size * self.batch_size):
            i = int(np.searchsorted(starts, pos))
            if i == len(starts) or starts[i] + self.seq_len + 1 > self.lengths[shard]:
                return None
            rows.append(int(starts[i]))
            pos = rows[-1] + self.seq_len
        return rows, pos

    def _next_shard(self) -> None:
        self.shard_index += 1
        self.offset = 0
        if self.shard_index == len(self.order):
            self.epoch += 1
            self.order = self._order(self.epoch)
            self.shard_index = 0

    def set_shape(self, batch_size: int, seq_len: int) -> None:
        """Batches of ``batch_size x seq_len`` from the next one on, from the same position of the stream (as a
        resume with another shape re-splits it). ``UserError`` when a step of that shape fits in no shard (an
        aligned step's document starts are only known as it is read: ``next_batch`` says when none fits)."""
        if max(self.lengths) < self.world_size * batch_size * seq_len + 1:
            raise UserError(
                f"{self.data_dir}: the largest {self.split} shard holds {max(self.lengths)} tokens, fewer than "
                f"one step of {self.world_size} x {batch_size} x {seq_len} + 1; use smaller batches or more data"
            )
        self.batch_size, self.seq_len = batch_size, seq_len

    def reset(self) -> None:
        """Back to the first batch of epoch 0."""
        self.epoch = 0
        self.order = self._order(0)
        self.shard_index = 0
        self.offset = 0
        self.tokens_seen = 0

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self.align_documents:
            return self._next_aligned_batch()
        step = self._step
        while self.offset + step + 1 > self.lengths[self.order[self.shard_index]]:
            self._next_shard()
        start = self.offset + self.rank * self.batch_size * self.seq_len
        n = self.batch_size * self.seq_len
        buf = torch.from_numpy(self._read(self.order[self.shard_index], start, n + 1).astype(np.int64))
        self.offset += step
        self.tokens_seen += step
        return buf[:-1].view(self.batch_size, self.seq_len), buf[1:].view(self.batch_size, self.seq_len)

    def _next_aligned_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        # The rest of this epoch's shards and all of the next epoch's: every shard is tried from its start.
        for _ in range(2 * len(self.order) + 1):
            found = self._aligned_rows(self.order[self.shard_index])
            if found is not None:
                break
            self._next_shard()
        else:
            raise UserError(
                f"{self.data_dir}: no {self.split} shard holds a step of {self.world_size * self.batch_size} "
                f"sequences of {self.seq_len} tokens that start at documents; use smaller batches or more data"
            )
        rows, self.offset = found
        shard, mine = self.order[self.shard_index], rows[self.rank * self.batch_size :][: self.batch_size]
        buf = torch.from_numpy(
            np.stack([self._read(shard, r, self.seq_len + 1) for r in mine]).astype(np.int64)
        )
        self.tokens_seen += self._step
        return buf[:, :-1].contiguous(), buf[:, 1:].contiguous()

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
            "shuffle_windows": self.shuffle_windows,
            "window_tokens": self.window_tokens,
            "align_documents": self.align_documents,
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
        # The window order of the current shard derives from these, so a change would re-read or skip windows.
        saved = (state.get("shuffle_windows", False), state.get("window_tokens"), state["seed"])
        mine = (self.shuffle_windows, self.window_tokens, self.seed)
        if (saved[0] or mine[0]) and saved != mine:
            names = ("shuffle_windows", "window_tokens", "seed")
            diff = ", ".join(f"{k} {s!r} (now {m!r})" for k, s, m in zip(names, saved, mine) if s != m)
            raise UserError(
                f"the checkpoint's loader state has {diff}; resume with the settings it was saved with"
            )
        if state.get("align_documents", False) != self.align_documents:
            raise UserError(
                f"the checkpoint's loader state has align_documents {state.get('align_documents', False)!r} "
                f"(now {self.align_documents!r}); resume with the setting it was saved with"
            )
        index = {name: i for i, name in enumerate(self.names)}
        self.epoch = int(state["epoch"])
        self.order = [index[name] for name in state["order"]]
        self.shard_index = int(state["shard_index"])
        self.offset = int(state["offset"])
        self.tokens_seen = int(state["tokens_seen"])
