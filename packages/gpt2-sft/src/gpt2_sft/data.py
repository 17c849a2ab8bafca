"""Instruction data: dataset plugins yielding conversations, and ``gpt2 sft prepare``'s tokenized examples.

Two record schemas, read from a local ``.jsonl``/``.json``/``.parquet`` file or a Hugging Face hub name
through the same ``datasets`` code path:

- ``alpaca``: ``instruction``, optional ``input``, ``output`` (field names are options, so
  ``databricks/databricks-dolly-15k`` is ``--input-field context --output-field response``);
- ``chat``: ``messages: [{role, content}, ...]`` (UltraChat-like; ShareGPT's ``from``/``value`` and
  ``human``/``gpt`` roles are understood too).

Both classes follow gpt2-data's dataset protocol (an ``Options`` dataclass, ``documents()`` yielding text),
so ``gpt2 data prepare`` can read them as plain text too; ``conversations()`` is what SFT reads.

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
from gpt2_core.decoding import Utf8Decoder
from gpt2_core.errors import UserError
from gpt2_data.records import RECORD_FORMATS, read_hub_rows, read_records

if TYPE_CHECKING:
    import numpy as np

ROLE_ALIASES = {
    "system": "system",
    "user": "user",
    "human": "user",
    "prompter": "user",
    "assistant": "assistant",
    "gpt": "assistant",
    "bot": "assistant",
    "model": "assistant",
}
META_FILE = "meta.json"
SPLITS = ("train", "val")


def read_instruction_records(
    path: str, split: str, decoder: Utf8Decoder, source: str
) -> Iterator[dict[str, Any]]:
    """Rows of a local jsonl/json/parquet file, or of a hub dataset (or local dataset folder), by name."""
    if not path:
        raise UserError(f"{source}: no --path given (a .jsonl/.json/.parquet file or a hub dataset name)")
    if Path(path).suffix.lower() in RECORD_FORMATS:
        yield from read_records(path, decoder)
    else:
        yield from read_hub_rows(path, None, split, decoder, streaming=False)


class InstructionDataset:
    """Base of the instruction datasets: ``conversations()``; ``documents()`` renders them as text."""

    @dataclass
    class Options:
        path: str = ""
        """A local .jsonl/.json/.parquet file, or a Hugging Face hub dataset name."""
        split: str = "train"
        """Split to read from a hub dataset (local files have one)."""
        limit: int = 0
        """Read at most this many records (0: all)."""
        encoding_errors: str = "replace"
        """replace: undecodable bytes become U+FFFD, counted per file; strict: they stop with an error."""

    name = "instructions"

    def __init__(self, options: Any = None) -> None:
        self.options = options if options is not None else type(self).Options()
        self.decoder = Utf8Decoder(getattr(self.options, "encoding_errors", "replace"))

    def records(self) -> Iterator[dict[str, Any]]:
        o = self.options
        for i, row in enumerate(
            read_instruction_records(o.path, o.split, self.decoder, f"dataset {self.name}")
        ):
            if self.options.limit and i >= self.options.limit:
                return
            yield row

    def conversations(self) -> Iterator[list[Message]]:
        """Each record as a list of ``{role, content}`` messages, in file order."""
        raise NotImplementedError

    def documents(self) -> Iterator[str]:
        """Each conversation as plain text (role headers), for pre-training-style use."""
        for conv in self.conversations():
            yield "\n\n".join(f"### {m['role'].title()}:\n{m['content']}" for m in conv)


class AlpacaDataset(InstructionDataset):
    """Alpaca-style instruction records (instruction, optional input, output) from a file or the hub."""

    @dataclass
    class Options(InstructionDataset.Options):
        instruction_field: str = "instruction"
        """Field holding the instruction."""
        input_field: str = "input"
        """Field holding optional extra input, appended to the instruction after a blank line."""
        output_field: str = "output"
        """Field holding the answer."""
        system: str = ""
        """A system message to put before each conversation (empty: none)."""

    name = "alpaca"

    def conversations(self) -> Iterator[list[Message]]:
        o = self.options
        for i, row in enumerate(self.records()):
            for f in (o.instruction_field, o.output_field):
                if f not in row:
                    raise UserError(
                        f"dataset alpaca: record {i} has no field {f!r} (fields: {', '.join(row)}); "
                        f"name it with --{'instruction' if f == o.instruction_field else 'output'}-field"
                    )
            prompt = str(row[o.instruction_field] or "").strip()
            extra = str(row.get(o.input_field) or "").strip()
            if extra:
                prompt = f"{prompt}\n\n{extra}"
            conv = [{"role": "system", "content": o.system}] if o.system else []
            yield conv + [
                {"role": "user", "content": prompt},
                {"role": "assistant", "content": str(row[o.output_field] or "").strip()},
            ]


class ChatDataset(InstructionDataset):
    """Chat-style records: a list of {role, content} messages (UltraChat, ShareGPT-like) from a file or the hub."""

    @dataclass
    class Options(InstructionDataset.Options):
        messages_field: str = "messages"
        """Field holding the list of messages (ShareGPT sets use conversations)."""

    name = "chat"

    def conversations(self) -> Iterator[list[Message]]:
        o = self.options
        for i, row in enumerate(self.records()):
            msgs = row.get(o.messages_field)
            if not isinstance(msgs, list):
                raise UserError(
                    f"dataset chat: record {i} has no list field {o.messages_field!r} "
                    f"(fields: {', '.join(row)}); name it with --messages-field"
                )
            conv = []
            for m in msgs:
                # Parquet gives every message every key seen in the column, None where absent.
                role = ROLE_ALIASES.get(str(m.get("role") or m.get("from") or "").lower())
                content = m.get("content") if m.get("content") is not None else m.get("value")
                if role is None or not isinstance(content, str):
                    raise UserError(f"dataset chat: record {i}: cannot read message {m!r:.80}")
                conv.append({"role": role, "content": content})
            yield conv


def _register_own_datasets() -> None:
    from gpt2_core.plugins import register_builtin

    from gpt2_sft import plugin

    register_builtin(plugin, "gpt2-sft")


def instruction_dataset_options(name: str, args: list[str]) -> dict[str, Any]:
    """The options of instruction dataset ``name`` from extra ``--field value`` arguments."""
    from gpt2_data.dataset_options import parse_dataset_options

    _register_own_datasets()
    return parse_dataset_options(name, args)


def build_instruction_dataset(name: str, options: dict[str, Any]) -> InstructionDataset:
    """Instruction dataset ``name`` (alpaca, chat, or a plugin's) with ``options``; ``UserError`` when
    ``name`` is a plain-text dataset (it has no conversations to fine-tune on)."""
    from gpt2_data.datasets import build_dataset

    _register_own_datasets()
    dataset = build_dataset(name, options)
    if not hasattr(dataset, "conversations"):
        raise UserError(f"--dataset {name}: not an instruction dataset; use alpaca or chat")
    return dataset  # type: ignore[return-value]


# --- tokenizing ---------------------------------------------------------------------------------------


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
