"""Tokenize a dataset into llm.c-format shards, resumably, with all cores and bounded memory.

Four stages overlap: a reader thread pulls documents from the dataset in batches, an encoder thread has
``workers`` threads tokenize them (tiktoken releases the GIL while it encodes), the calling thread routes the
tokens to the validation and training shard buffers, and a writer thread writes each full shard. Queues
between the stages are short, each split fills one shard buffer and at most one more is being written, so
memory stays bounded whatever the corpus size.

Every document is preceded by ``<|endoftext|>`` (50256), as in GPT-2 and llm.c. Documents are consumed in the
dataset's deterministic order; once each shard is on disk, ``manifest.json`` records where to resume, so an
interrupted ``prepare`` picks up after its last complete shard and ends with exactly the shards an
uninterrupted run writes. The manifest also counts, per file, the bytes that were not UTF-8 and were read as
U+FFFD (``replaced_bytes``).
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from gpt2_core.errors import UserError
from gpt2_core.files import TMP_SUFFIX, write_json_atomic

from gpt2_data.shards import write_shard

MANIFEST = "manifest.json"
FORMAT = "gpt2-data/1"
SMALL_CORPUS_VAL_FRACTION = 0.05
"""Where the default one-shard validation split would swallow the whole corpus, every 20th document is val."""
BATCH_CHARS = (1 << 16, 1 << 22)
"""Text per tokenizer batch, growing from the first to the second: small batches first, so a short run
(--max-tokens) reads little, then batches big enough to keep every thread busy yet bounded in memory."""

Position = tuple[int, int]
"""(document index, token offset within that document, counting its leading <|endoftext|>)."""


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


def default_workers() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


class _ShardWrites:
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


class _Writer:
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
        writes: _ShardWrites,
    ) -> None:
        self.out_dir, self.prefix, self.split = out_dir, prefix, split
        self.shard_tokens = shard_tokens
        self.shards = shards
        self.skip_before = skip_before
        self.on_flush = on_flush  # returns what to do once the shard is written (record where to resume)
        self.writes = writes
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

        self.writes.submit(write)

    def take_pending(self) -> np.ndarray:
        """Hand over (and forget) the unflushed tokens."""
        out = self.buffer[: self.fill].copy() if self.buffer is not None else np.empty(0, np.uint16)
        self.fill = 0
        return out


def _batches(docs: Iterator[str], start_doc: int, stop: threading.Event) -> Iterator[tuple[int, list[str]]]:
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


def _put(q: queue.Queue, item: Any, stop: threading.Event) -> bool:
    """Put ``item`` unless ``stop`` is set first (the consumer has gone); False when stopped."""
    while not stop.is_set():
        try:
            q.put(item, timeout=0.1)
            return True
        except queue.Full:
            continue
    return False


def _stage(fn: Callable[[], Iterator[Any]], out: queue.Queue, stop: threading.Event) -> threading.Thread:
    """Run generator ``fn`` on a daemon thread, feeding ``out``; errors and the end travel through the queue."""

    def run() -> None:
        try:
            for item in fn():
                if not _put(out, item, stop):
                    return
            _put(out, StopIteration(), stop)
        except BaseException as e:  # re-raised in the consumer, which owns error reporting
            _put(out, e, stop)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def _drain(q: queue.Queue, stop: threading.Event) -> Iterator[Any]:
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


def _is_val_doc(doc: int, fraction: float) -> bool:
    # Every (1/fraction)-th document: spread over the whole corpus, decided by index alone (resumable).
    return int((doc + 1) * fraction) > int(doc * fraction)


def read_manifest(data_dir: str | Path) -> dict[str, Any] | None:
    """``DIR/manifest.json`` as a dict, or None when the directory has none."""
    path = Path(data_dir) / MANIFEST
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise UserError(f"{path}: not valid JSON ({e}); delete it and prepare again") from e


def prepare(
    dataset: str,
    out_dir: str | Path,
    *,
    options: dict[str, Any] | None = None,
    shard_tokens: int = 100_000_000,
    val_tokens: float | None = None,
    max_tokens: int | None = None,
    workers: int = 0,
    overwrite: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Tokenize dataset ``dataset`` into shards in ``out_dir`` and return the manifest (also in manifest.json).

    ``prepare(dataset="python-stdlib", out_dir="data/stdlib", shard_tokens=1_000_000, val_tokens=0.05)``

    - ``options``: the dataset's options by field name (``{"include_tests": True}``), checked against its
      ``Options`` dataclass.
    - ``shard_tokens``, ``val_tokens``, ``max_tokens``, ``workers``: as in :class:`PrepareConfig`.
    - Calling it again on a complete directory with the same arguments returns at once; on an interrupted one it
      resumes; with different arguments it raises ``UserError`` unless ``overwrite`` (which deletes the old shards).
    - ``progress``: show a rich progress bar on stderr.
    """
    from gpt2_core.tokenizer import Tokenizer

    from gpt2_data.datasets import build_dataset

    config = PrepareConfig(dataset, shard_tokens, val_tokens, max_tokens, workers)
    ds = build_dataset(dataset, options)
    out = Path(out_dir)
    tokenizer = Tokenizer()
    identity = {
        "format": FORMAT,
        "dataset": dataset,
        "options": asdict(ds.options),
        "tokenizer": {
            "name": tokenizer.name,
            "sha256": tokenizer.sha256,
            "vocab_size": tokenizer.n_vocab,
            "eot_id": tokenizer.eot_id,
        },
        "shard_tokens": shard_tokens,
        "val_tokens": val_tokens,
        "max_tokens": max_tokens,
    }
    manifest = _start(out, identity, overwrite)
    if manifest.get("complete"):
        return manifest
    manifest = _run(config, ds.documents(), out, manifest, tokenizer, progress, ds.decoder.replaced)
    for source in manifest["replaced_bytes"]:
        ds.decoder.warn(source)
    return manifest


def _start(out: Path, identity: dict[str, Any], overwrite: bool) -> dict[str, Any]:
    """The manifest to continue from: a fresh one, an interrupted one to resume, or a complete one."""
    if out.exists() and not out.is_dir():
        raise UserError(f"{out}: exists and is not a directory (--out)")
    out.mkdir(parents=True, exist_ok=True)
    old = read_manifest(out)
    ours = sorted(out.glob("*.bin")) + sorted(out.glob("*" + TMP_SUFFIX))
    if overwrite:
        for path in ours + [out / MANIFEST]:
            path.unlink(missing_ok=True)
        old = None
    elif old is None and ours:
        raise UserError(
            f"{out}: holds .bin shards but no {MANIFEST}; choose an empty --out or pass --overwrite"
        )
    if old is not None:
        differs = sorted(k for k in identity if old.get(k) != identity[k])
        if differs:
            raise UserError(
                f"{out}: was prepared with other settings ({', '.join(differs)} differ); "
                "choose another --out or pass --overwrite"
            )
        for tmp in out.glob("*" + TMP_SUFFIX):  # half-written shards of the interrupted run
            tmp.unlink()
        return old
    fresh = {**identity, "complete": False, "shards": []}
    write_json_atomic(
        out / MANIFEST, fresh
    )  # from now on the directory is ours to resume, even before a first shard
    return fresh


def _run(
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
    writes = _ShardWrites()
    writers = {
        split: _Writer(
            out,
            prefix,
            split,
            config.shard_tokens,
            [s for s in old_shards if s["split"] == split],
            tuple(resume["skip"].get(split, (0, 0))),  # type: ignore[arg-type]
            save,
            writes,
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
        for first, batch in _drain(texts, stop):
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
            _stage(lambda: _batches(docs, resume["doc"], stop), texts, stop)
            _stage(encode, encoded, stop)
            # Start the threads now: each builds its Encoding while the first batch is read.
            for _ in range(workers):
                pool.submit(int)
            with _progress_bar(progress, f"prepare {manifest['dataset']}", config.max_tokens) as update:
                for first, batch in _drain(encoded, stop):
                    finished = _route(config, writers, batch, first, state, val_quota, fraction)
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
        return _finish(out, manifest, writers, fraction, state, last_doc, eot)
    except BaseException:
        # The shard already handed over finishes (with its manifest) before the error leaves prepare(), so a
        # caller that retries in this process never races a write still going on from this run.
        with contextlib.suppress(BaseException):
            writes.close()
        raise


@contextlib.contextmanager
def _progress_bar(enabled: bool, description: str, total: int | None) -> Iterator[Callable[..., None]]:
    """A rich progress line, updated through the function it yields; when off, not even rich is imported."""
    if not enabled:
        yield lambda **fields: None
        return
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    columns = [
        SpinnerColumn(),
        TextColumn("[bold]{task.description}"),
        TextColumn(
            "{task.fields[docs]:,} docs  {task.completed:,.0f} tokens  {task.fields[rate]}  {task.fields[shards]} shards"
        ),
        TimeElapsedColumn(),
    ]
    with Progress(*columns, transient=False) as bar:
        task = bar.add_task(description, total=total, docs=0, rate="", shards=0)
        yield lambda **fields: bar.update(task, **fields)


def _route(
    config: PrepareConfig,
    writers: dict[str, _Writer],
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
            (val if _is_val_doc(doc, fraction) else train).add(doc, 0, tokens, emitted)
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


def _finish(
    out: Path,
    manifest: dict[str, Any],
    writers: dict[str, _Writer],
    fraction: float | None,
    state: dict[str, int],
    last_doc: int,
    eot: int,
) -> dict[str, Any]:
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
        is_val = [_is_val_doc(i, SMALL_CORPUS_VAL_FRACTION) for i in range(n_docs)]
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
    val.writes.close()  # every shard on disk (or its error raised) before the manifest calls the set complete
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
