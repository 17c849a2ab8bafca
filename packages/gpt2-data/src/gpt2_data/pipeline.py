"""The threaded pipeline that tokenizes a document stream into shards, with all cores and bounded memory.

Four stages overlap: a reader thread pulls documents from the dataset in batches, an encoder thread has
``workers`` threads tokenize them (tiktoken releases the GIL while it encodes), the calling thread routes the
tokens to the validation and training shard buffers (``gpt2_data.splits``), and a writer thread writes each
full shard. Queues between the stages are short, each split fills one shard buffer and at most one more is
being written, so memory stays bounded whatever the corpus size.
"""

from __future__ import annotations

import contextlib
import os
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from gpt2_core.files import write_json_atomic

from gpt2_data.manifest import MANIFEST
from gpt2_data.progress import progress_bar
from gpt2_data.splits import Position, SplitWriter, finish, route

if TYPE_CHECKING:
    from gpt2_data.prepare_config import PrepareConfig

BATCH_CHARS = (1 << 16, 1 << 22)
"""Text per tokenizer batch, growing from the first to the second: small batches first, so a short run
(--max-tokens) reads little, then batches big enough to keep every thread busy yet bounded in memory."""


def default_workers() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


class ShardWrites:
    """Writes shards on a thread of their own, one at a time, each followed by the manifest that lists it.

    Tokenizing goes on while a shard (200 MB at the default size: ~0.6 s with its fsync and sha256 here) is
    written; at most one is in flight, so memory stays bounded. A failed write is raised by the next
    ``submit`` or by ``close``.
    """

    def __init__(self) -> None:
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="gpt2-shards")
        self.pending: Future[None] | None = None

    def submit(self, write: Callable[[], None]) -> None:
        self.wait()
        self.pending = self.pool.submit(write)

    def wait(self) -> None:
        if self.pending is not None:
            pending, self.pending = self.pending, None
            pending.result()

    def close(self) -> None:
        """Wait for the last write (raising its error), then let the thread go."""
        try:
            self.wait()
        finally:
            self.pool.shutdown()


def batches(docs: Iterator[str], start_doc: int, stop: threading.Event) -> Iterator[tuple[int, list[str]]]:
    """(index of first document, texts) batches of about BATCH_CHARS, skipping the first ``start_doc``."""
    batch: list[str] = []
    first, chars, limit = start_doc, 0, BATCH_CHARS[0]
    for i, text in enumerate(docs):
        if stop.is_set():
            return
        if i < start_doc:
            continue
        if not batch:
            first = i
        batch.append(text)
        chars += len(text)
        if chars >= limit:
            yield first, batch
            batch, chars, limit = [], 0, min(2 * limit, BATCH_CHARS[1])
    if batch:
        yield first, batch


def put(q: queue.Queue, item: Any, stop: threading.Event) -> bool:
    """Put ``item`` unless ``stop`` is set first (the consumer has gone); False when stopped."""
    while not stop.is_set():
        try:
            q.put(item, timeout=0.1)
            return True
        except queue.Full:
            continue
    return False


def stage(fn: Callable[[], Iterator[Any]], out: queue.Queue, stop: threading.Event) -> threading.Thread:
    """Run generator ``fn`` on a daemon thread, feeding ``out``; errors and the end travel through the queue."""

    def run() -> None:
        try:
            for item in fn():
                if not put(out, item, stop):
                    return
            put(out, StopIteration(), stop)
        except BaseException as e:  # re-raised in the consumer, which owns error reporting
            put(out, e, stop)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def drain(q: queue.Queue, stop: threading.Event) -> Iterator[Any]:
    """Items of ``q`` until its end marker (or ``stop``); an exception from the producer is raised here."""
    while True:
        try:
            item = q.get(timeout=0.1)
        except queue.Empty:
            if stop.is_set():
                return
            continue
        if isinstance(item, StopIteration):
            return
        if isinstance(item, BaseException):
            raise item
        yield item


def run(
    config: PrepareConfig,
    docs: Iterator[str],
    out: Path,
    manifest: dict[str, Any],
    tokenizer: Any,
    progress: bool,
    replaced: dict[str, int],
) -> dict[str, Any]:
    resume = manifest.get("resume", {"doc": 0, "emitted": 0, "skip": {}})
    prefix = manifest["dataset"].replace("/", "-")
    fraction = config.val_tokens if config.val_tokens is not None and 0 < config.val_tokens < 1 else None
    val_quota = (
        0 if fraction else int(config.shard_tokens if config.val_tokens is None else config.val_tokens)
    )
    workers = config.workers or default_workers()
    eot = tokenizer.eot_id
    # emitted: stream tokens so far; doc_start: stream tokens before the current document (for resume records)
    state = {"emitted": resume["emitted"], "doc": resume["doc"], "doc_start": resume["emitted"]}

    def save(end: Position) -> Callable[[], None]:
        """Where to resume after the shard just flushed, as of now; written once that shard is on disk."""
        pending = [w for w in writers.values() if w.fill]
        start = min(pending, key=lambda w: w.pending_start) if pending else None
        snapshot = {
            **manifest,
            "shards": writers["val"].shards + writers["train"].shards,
            "resume": {
                "doc": start.pending_start[0] if start else end[0],
                "emitted": (start.pending_emitted - start.pending_start[1]) if start else state["doc_start"],
                "skip": {name: list(w.skip_before) for name, w in writers.items()},
            },
        }
        return lambda: write_json_atomic(out / MANIFEST, snapshot)

    old_shards = manifest.get("shards", [])
    writes = ShardWrites()
    writers = {
        split: SplitWriter(
            out,
            prefix,
            split,
            config.shard_tokens,
            [s for s in old_shards if s["split"] == split],
            tuple(resume["skip"].get(split, (0, 0))),  # type: ignore[arg-type]
            save,
            writes.submit,
        )
        for split in ("val", "train")
    }

    stop = threading.Event()
    texts: queue.Queue = queue.Queue(maxsize=2)
    encoded: queue.Queue = queue.Queue(maxsize=2)

    # Each tokenizer thread encodes with its own Encoding: sharing one costs every thread but the first ~40%
    # more CPU (Tokenizer.thread_encoding). encode_to_numpy skips building a Python int per token (GIL-bound
    # work worth ~15% of the tokenization itself); with no disallowed specials its ids are encode_ordinary's.
    local = threading.local()

    def init_thread() -> None:
        local.encoding = tokenizer.thread_encoding()

    pool = ThreadPoolExecutor(workers, thread_name_prefix="gpt2-tokenize", initializer=init_thread)

    def encode_one(text: str) -> np.ndarray:
        """``<|endoftext|>`` + the document's tokens as uint16, all made on the tokenizer thread."""
        ids = local.encoding.encode_to_numpy(text, disallowed_special=())
        doc = np.empty(len(ids) + 1, dtype=np.uint16)
        doc[0] = eot
        doc[1:] = ids
        return doc

    def encode() -> Iterator[tuple[int, list[np.ndarray]]]:
        # Two batches in flight: threads that finish one batch go straight on to the next instead of
        # waiting for the batch's last document. Within a batch the longest documents go first, so no
        # thread is left encoding one long document alone at the end.
        in_flight: deque[tuple[int, list[Future[np.ndarray]]]] = deque()
        for first, batch in drain(texts, stop):
            futures: list[Future[np.ndarray] | None] = [None] * len(batch)
            for i in sorted(range(len(batch)), key=lambda i: -len(batch[i])):
                futures[i] = pool.submit(encode_one, batch[i])
            in_flight.append((first, futures))  # type: ignore[arg-type]
            if len(in_flight) == 2:
                done_first, done = in_flight.popleft()
                yield done_first, [f.result() for f in done]
        while in_flight:
            done_first, done = in_flight.popleft()
            yield done_first, [f.result() for f in done]

    t0, done_at_start = time.perf_counter(), state["emitted"]
    last_doc = resume["doc"] - 1
    try:
        try:
            stage(lambda: batches(docs, resume["doc"], stop), texts, stop)
            stage(encode, encoded, stop)
            # Start the threads now: each builds its Encoding while the first batch is read.
            for _ in range(workers):
                pool.submit(int)
            with progress_bar(progress, f"prepare {manifest['dataset']}", config.max_tokens) as update:
                for first, batch in drain(encoded, stop):
                    finished = route(config, writers, batch, first, state, val_quota, fraction)
                    last_doc = state["doc"]
                    rate = (state["emitted"] - done_at_start) / max(time.perf_counter() - t0, 1e-9)
                    update(
                        completed=state["emitted"],
                        docs=last_doc + 1,
                        rate=f"{rate / 1e6:.2f}M tok/s",
                        shards=len(writers["val"].shards) + len(writers["train"].shards),
                    )
                    if finished:
                        break
        finally:
            stop.set()  # let the reader and encoder threads end (daemons: never wait on a stuck dataset)
            pool.shutdown(wait=False, cancel_futures=True)
        manifest["replaced_bytes"] = {source: n for source, n in replaced.items() if n}
        return finish(out, manifest, writers, fraction, state, last_doc, eot, writes.close)
    except BaseException:
        # The shard already handed over finishes (with its manifest) before the error leaves prepare(), so a
        # caller that retries in this process never races a write still going on from this run.
        with contextlib.suppress(BaseException):
            writes.close()
        raise
