"""Split routing: which tokens of the stream go to the validation split and which to training.

``--val-tokens N`` (N >= 1) sends the first N tokens to val; a fraction sends every (1/fraction)-th document;
by default val is one shard, and a corpus smaller than that is re-split by documents at the end.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from gpt2_core.errors import UserError
from gpt2_core.files import write_json_atomic

from gpt2_data.manifest import MANIFEST

if TYPE_CHECKING:
    from gpt2_data.pipeline import SplitWriter
    from gpt2_data.prepare import PrepareConfig

SMALL_CORPUS_VAL_FRACTION = 0.05
"""Where the default one-shard validation split would swallow the whole corpus, every 20th document is val."""


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
