"""Instruction datasets: plugins that yield conversations (lists of ``{role, content}`` messages).

Two record schemas, read from a local ``.jsonl``/``.json``/``.parquet`` file or a Hugging Face hub name,
with undecodable bytes read as U+FFFD and counted per file (``gpt2_data.records``):

- ``alpaca``: ``instruction``, optional ``input``, ``output`` (field names are options, so
  ``databricks/databricks-dolly-15k`` is ``--input-field context --output-field response``);
- ``chat``: ``messages: [{role, content}, ...]`` (UltraChat-like; ShareGPT's ``from``/``value`` and
  ``human``/``gpt`` roles are understood too).

Both classes follow gpt2-data's dataset protocol (an ``Options`` dataclass, ``documents()`` yielding text),
so ``gpt2 data prepare`` can read them as plain text too; ``conversations()`` is what SFT reads
(``gpt2_sft.examples`` turns them into tokenized examples).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gpt2_core.chat_template import Message
from gpt2_core.decoding import Utf8Decoder
from gpt2_core.errors import UserError
from gpt2_data.datasets import TextDataset
from gpt2_data.records import RECORD_FORMATS, read_hub_rows, read_records

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


class InstructionDataset(TextDataset):
    """The interface of instruction datasets (a plugin's subclasses it): ``conversations()``; ``documents()``
    renders them as text, so any of them also serves as a plain-text dataset."""

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

    register_builtin("gpt2_sft.builtins", "gpt2-sft")


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
    if not isinstance(dataset, InstructionDataset):
        raise UserError(f"--dataset {name}: not an instruction dataset; use alpaca, chat or shakespeare-chat")
    return dataset
