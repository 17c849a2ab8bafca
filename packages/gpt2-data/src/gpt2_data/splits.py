"""The splits: which tokens of the stream go to the validation split and which to training (routing), and the
writer that fills one split's shards (``SplitWriter``).

``--val-tokens N`` (N >= 1) sends the first N tokens to val; a fraction sends every (1/fraction)-th document;
by default val is one shard, and a corpus smaller than that is re-split by documents at the end.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from gpt2_core.errors import UserError
from gpt2_core.files import write_json_atomic

from gpt2_data.manifest import MANIFEST
from gpt2_data.shards import write_shard

if TYPE_CHECKING:
    from gpt2_data.prepare_config import PrepareConfig

Position = tuple[int, int]
"""(document index, token offset within that document, counting its leading <|endoftext|>)."""

SMALL_CORPUS_VAL_FRACTION = 0.05
"""Where the default one-shard validation split would swallow the whole corpus, every 20th document is val."""


class SplitWriter:
    """Fills one split's shards in order; on resume, drops the tokens its complete shards already hold."""

    def __init__(
        self,
        out_dir: Path,
        prefix: str,
        split: str,
        shard_tokens: int,
        shards: list[dict[str, Any]],
        skip_before: Position,
        on_flush: Callable[[Position], Callable[[], None] | None],
        submit: Callable[[Callable[[], None]], None],
    ) -> None:
        self.out_dir, self.prefix, self.split = out_dir, prefix, split
        self.shard_tokens = shard_tokens
        self.shards = shards
        self.skip_before = skip_before
        self.on_flush = on_flush  # returns what to do once the shard is written (record where to resume)
        self.submit = submit  # hands a shard's write to the writer thread (gpt2_data.pipeline.ShardWrites)
        self.buffer: np.ndarray | None = None  # allocated on first use: a val-less run never holds one
        self.fill = 0
        self.pending_start: Position = (0, 0)
        self.pending_emitted = 0  # stream token count at pending_start (resuming restarts counting there)

    @property
    def flushed_tokens(self) -> int:
        return sum(s["tokens"] for s in self.shards)

    def add(self, doc: int, offset: int, tokens: np.ndarray, emitted: int) -> None:
        """Append ``tokens`` found at (``doc``, ``offset``), the ``emitted``-th token of the stream onwards."""
        n = len(tokens)
        if (doc, offset + n) <= self.skip_before:
            return
        if (doc, offset) < self.skip_before:  # a document split by the last complete shard
            cut = self.skip_before[1] - offset
            tokens, offset, emitted = tokens[cut:], offset + cut, emitted + cut
        while len(tokens):
            if self.fill == 0:
                self.pending_start, self.pending_emitted = (doc, offset), emitted
            if self.buffer is None:
                self.buffer = np.empty(self.shard_tokens, dtype=np.uint16)
            take = min(len(tokens), self.shard_tokens - self.fill)
            self.buffer[self.fill : self.fill + take] = tokens[:take]
            self.fill += take
            tokens, offset, emitted = tokens[take:], offset + take, emitted + take
            if self.fill == self.shard_tokens:
                self.flush((doc, offset))

    def flush(self, end: Position) -> None:
        if self.fill == 0:
            return
        assert self.buffer is not None
        name = f"{self.prefix}_{self.split}_{len(self.shards):06d}.bin"
        # The write thread takes the buffer; the next shard gets a new one.
        tokens, self.buffer = self.buffer[: self.fill], None
        entry: dict[str, Any] = {"name": name, "split": self.split, "tokens": self.fill, "sha256": None}
        self.shards.append(entry)
        self.fill = 0
        self.skip_before = end
        then = self.on_flush(end)

        def write() -> None:
            entry["sha256"] = write_shard(self.out_dir / name, tokens)
            if then is not None:
                then()

        self.submit(write)

    def take_pending(self) -> np.ndarray:
        """Hand over (and forget) the unflushed tokens."""
        out = self.buffer[: self.fill].copy() if self.buffer is not None else np.empty(0, np.uint16)
        self.fill = 0
        return out


def is_val_doc(doc: int, fraction: float) -> bool:
    # Every (1/fraction)-th document: spread over the whole corpus, decided by index alone (resumable).
    return int((doc + 1) * fraction) > int(doc * fraction)


def route(
    config: PrepareConfig,
    writers: dict[str, SplitWriter],
    docs: list[np.ndarray],
    first: int,
    state: dict[str, int],
    val_quota: int,
    fraction: float | None,
) -> bool:
    """Send one batch's documents to the writers; True once ``max_tokens`` is reached."""
    val, train = writers["val"], writers["train"]
    for doc, tokens in enumerate(docs, start=first):
        emitted = state["emitted"]
        if config.max_tokens is not None:
            tokens = tokens[: max(config.max_tokens - emitted, 0)]
        state["doc"], state["doc_start"] = doc, emitted
        if fraction is not None:
            (val if is_val_doc(doc, fraction) else train).add(doc, 0, tokens, emitted)
        else:
            head = min(max(val_quota - emitted, 0), len(tokens))
            if head:
                val.add(doc, 0, tokens[:head], emitted)
                if emitted + head == val_quota:  # the validation split ends here: close its last shard
                    val.flush((doc, head))
            train.add(doc, head, tokens[head:], emitted + head)
        state["emitted"] = emitted + len(tokens)
        if config.max_tokens is not None and state["emitted"] >= config.max_tokens:
            return True
    return False


def finish(
    out: Path,
    manifest: dict[str, Any],
    writers: dict[str, SplitWriter],
    fraction: float | None,
    state: dict[str, int],
    last_doc: int,
    eot: int,
    wait_for_writes: Callable[[], None],
) -> dict[str, Any]:
    """Flush both splits (a corpus smaller than one shard re-split by documents), wait for every shard to be
    on disk (``wait_for_writes``: it raises a write's error), and write the complete manifest; returns it."""
    val, train = writers["val"], writers["train"]
    if (
        not val.shards
        and not train.shards
        and train.fill == 0
        and val.fill
        and manifest["val_tokens"] is None
    ):
        # The default one-shard validation split holds the whole corpus: re-split it by documents instead.
        tokens = val.take_pending()
        bounds = np.append(np.flatnonzero(tokens == eot), len(tokens))
        n_docs = len(bounds) - 1
        is_val = [is_val_doc(i, SMALL_CORPUS_VAL_FRACTION) for i in range(n_docs)]
        if n_docs >= 2 and not any(is_val):  # under 20 documents: the last one is val, so val loss has data
            is_val[-1] = True
        parts: dict[str, list[np.ndarray]] = {"val": [], "train": []}
        for i in range(n_docs):
            parts["val" if is_val[i] else "train"].append(tokens[bounds[i] : bounds[i + 1]])
        for split, chunks in parts.items():
            if chunks:
                writers[split].add(0, 0, np.concatenate(chunks), 0)
        manifest["val_split"] = (
            f"every {round(1 / SMALL_CORPUS_VAL_FRACTION)}th document, at least one (corpus < one shard)"
        )
    end = (last_doc + 1, 0)
    for w in (val, train):
        w.on_flush = lambda _end: None  # the final manifest below replaces the resume records
        w.flush(end)
    wait_for_writes()  # every shard on disk (or its error raised) before the manifest calls the set complete
    manifest["shards"] = val.shards + train.shards
    totals = {split: w.flushed_tokens for split, w in writers.items()}
    if not totals["train"] and not totals["val"]:
        raise UserError(
            f"dataset {manifest['dataset']!r} produced no documents; check its options (gpt2 data list)"
        )
    if not totals["train"]:
        raise UserError(
            f"dataset {manifest['dataset']!r}: all {totals['val']} tokens went to validation; lower --val-tokens"
        )
    if fraction is not None and not totals["val"] and last_doc >= 1:
        raise UserError(
            f"--val-tokens {fraction}: none of the {last_doc + 1} documents went to validation (every "
            f"{round(1 / fraction)}th does); give a larger fraction, or a token count such as --val-tokens 1000"
        )
    manifest.pop("resume", None)
    manifest.update(complete=True, documents=last_doc + 1, tokens=totals)
    write_json_atomic(out / MANIFEST, manifest)
    return manifest
