"""``gpt2 sft prepare``'s tokenized examples: conversations to token ids with a loss mask, stored and read back.

A prepared directory holds, per split (``train``, ``val``), ``{split}_tokens.npy`` (all examples' ids back
to back), ``{split}_mask.npy`` (True where the token is assistant output, the only tokens with loss) and
``{split}_offsets.npy`` (example ``i`` is ``offsets[i]:offsets[i+1]``), and ``meta.json`` (the chat template,
counts).
"""

from __future__ import annotations

import json
import random
import sys
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gpt2_core.chat_template import ChatTemplate, Message
from gpt2_core.errors import UserError

if TYPE_CHECKING:
    import numpy as np

    from gpt2_sft.datasets import InstructionDataset

META_FILE = "meta.json"


@dataclass
class PrepareStats:
    """What ``gpt2 sft prepare`` did with the conversations it read."""

    conversations: int = 0
    examples: dict[str, int] = field(default_factory=dict)
    truncated: int = 0
    """Conversations cut after an earlier assistant turn to fit the context window."""
    dropped_too_long: int = 0
    """Conversations whose first exchange alone does not fit."""
    dropped_no_reply: int = 0
    """Conversations without an assistant message (nothing to learn from)."""
    tokens: dict[str, int] = field(default_factory=dict)
    target_tokens: dict[str, int] = field(default_factory=dict)
    replaced_bytes: dict[str, int] = field(default_factory=dict)
    """Per file: bytes that were not UTF-8 and were read as U+FFFD."""


def fit_conversation(
    template: ChatTemplate, messages: Sequence[Message], max_len: int
) -> tuple[list[int], list[bool], str]:
    """Ids and loss mask of ``messages`` cut by whole turns to at most ``max_len`` tokens.

    The conversation ends after its last assistant message that fits; the status is ``ok``,
    ``truncated``, ``too_long`` (not even the first reply fits) or ``no_reply``.
    """
    parts = template.render_parts(messages)
    ids: list[int] = []
    mask: list[bool] = []
    best: tuple[list[int], list[bool]] | None = None
    last_reply = max((i for i, m in enumerate(messages) if m["role"] == "assistant"), default=-1)
    if last_reply < 0:
        return [], [], "no_reply"
    for i, (part_ids, part_mask) in enumerate(parts):
        if len(ids) + len(part_ids) > max_len:
            break
        ids += part_ids
        mask += part_mask
        if i > 0 and messages[i - 1]["role"] == "assistant":
            best = (list(ids), list(mask))
            if i - 1 == last_reply:
                return ids, mask, "ok"
    if best is None:
        return [], [], "too_long"
    return best[0], best[1], "truncated"


def with_progress(conversations: Iterator[list[Message]], enabled: bool) -> Iterator[list[Message]]:
    """``conversations``, counted on a rich progress line on stderr when ``enabled`` (a terminal, rank 0)."""
    if not enabled:
        yield from conversations
        return
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    columns = (
        SpinnerColumn(),
        TextColumn("tokenizing conversations: {task.completed:,}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, transient=True) as progress:
        task = progress.add_task("tokenizing", total=None)
        for conv in conversations:
            yield conv
            progress.advance(task)


def prepare_dataset(
    dataset: InstructionDataset, template: ChatTemplate, out_dir: str | Path, **kwargs: Any
) -> PrepareStats:
    """:func:`prepare` on ``dataset``'s conversations, with a progress bar on a terminal; the bytes its files
    held that were not UTF-8 are counted in the stats and meta, with one warning line per file."""
    stats = prepare(
        with_progress(dataset.conversations(), sys.stderr.isatty()),
        template,
        out_dir,
        replaced_bytes=dataset.decoder.replaced,
        **kwargs,
    )
    for source in stats.replaced_bytes:
        dataset.decoder.warn(source)
    return stats


def prepare(
    conversations: Iterator[list[Message]],
    template: ChatTemplate,
    out_dir: str | Path,
    *,
    max_len: int,
    val_fraction: float = 0.05,
    seed: int = 0,
    meta: dict[str, Any] | None = None,
    replaced_bytes: dict[str, int] | None = None,
) -> PrepareStats:
    """Tokenize ``conversations`` into ``out_dir`` (train and held-out val examples) and report counts.

    ``max_len`` is the longest example in tokens: a model's context window plus one (inputs and targets
    are the same tokens shifted by one). ``replaced_bytes``: the reader's per-file counts of undecodable
    bytes, read once ``conversations`` is exhausted (the reader fills it as it goes).
    """
    import numpy as np

    if not 0.0 <= val_fraction < 1.0:
        raise UserError(f"--val-fraction must be in [0, 1), got {val_fraction}")
    stats = PrepareStats()
    examples: list[tuple[list[int], list[bool]]] = []
    for conv in conversations:
        stats.conversations += 1
        ids, mask, status = fit_conversation(template, conv, max_len)
        if status == "too_long":
            stats.dropped_too_long += 1
        elif status == "no_reply":
            stats.dropped_no_reply += 1
        else:
            stats.truncated += status == "truncated"
            examples.append((ids, mask))
    if not examples:
        raise UserError(
            f"no usable conversations ({stats.conversations} read, {stats.dropped_too_long} too long, "
            f"{stats.dropped_no_reply} without a reply)"
        )
    stats.replaced_bytes = {k: v for k, v in (replaced_bytes or {}).items() if v}
    order = list(range(len(examples)))
    random.Random(seed).shuffle(order)
    n_val = round(len(examples) * val_fraction)
    if val_fraction > 0 and len(examples) >= 2:
        n_val = max(1, n_val)
    splits = {"val": sorted(order[:n_val]), "train": sorted(order[n_val:])}

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    dtype = np.uint16 if template.tokenizer.n_vocab <= 2**16 else np.uint32
    for split, idx in splits.items():
        lengths = [len(examples[i][0]) for i in idx]
        offsets = np.zeros(len(idx) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        tokens = np.fromiter((t for i in idx for t in examples[i][0]), dtype=dtype, count=int(offsets[-1]))
        mask = np.fromiter((m for i in idx for m in examples[i][1]), dtype=bool, count=int(offsets[-1]))
        np.save(out / f"{split}_tokens.npy", tokens)
        np.save(out / f"{split}_mask.npy", mask)
        np.save(out / f"{split}_offsets.npy", offsets)
        stats.examples[split] = len(idx)
        stats.tokens[split] = int(offsets[-1])
        stats.target_tokens[split] = int(mask.sum())
    info = {
        "format": "gpt2-sft/1",
        "chat_template": template.template,
        "special_tokens": template.tokenizer.special_tokens,
        "max_len": max_len,
        "stats": asdict(stats),
        **(meta or {}),
    }
    (out / META_FILE).write_text(json.dumps(info, indent=2) + "\n")
    return stats


@dataclass
class Examples:
    """One split of a prepared directory, in memory."""

    tokens: np.ndarray
    mask: np.ndarray
    offsets: np.ndarray

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def example(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        a, b = self.offsets[i], self.offsets[i + 1]
        return self.tokens[a:b], self.mask[a:b]


def read_meta(data_dir: str | Path) -> dict[str, Any]:
    path = Path(data_dir) / META_FILE
    if not path.is_file():
        raise UserError(f"{data_dir}: not a prepared SFT directory (no {META_FILE}); run gpt2 sft prepare")
    return json.loads(path.read_text())


def load_split(data_dir: str | Path, split: str) -> Examples:
    """The examples of ``split`` in a directory written by :func:`prepare`."""
    import numpy as np

    root = Path(data_dir)
    read_meta(root)
    try:
        return Examples(*(np.load(root / f"{split}_{name}.npy") for name in ("tokens", "mask", "offsets")))
    except FileNotFoundError as e:
        raise UserError(f"{root}: split {split!r} is missing ({e.filename})") from e
