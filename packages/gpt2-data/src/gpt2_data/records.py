"""Rows and texts from local files (.txt, .jsonl, .json, .parquet) and Hugging Face datasets, decoded so that
bytes which are not UTF-8 never stop a run: each reader takes a ``gpt2_core.decoding.Utf8Decoder``, which
replaces them with U+FFFD and counts them per file (or refuses them, with ``--encoding-errors strict``).

Text is decoded here rather than by the file readers below it: Python's and Arrow's readers raise on the
first bad byte and cannot count what they replace. Local files are read as bytes (JSON lines line by line,
so a file of any size streams); Parquet and hub columns are cast from string to binary and decoded row by row.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from gpt2_core.decoding import Utf8Decoder
from gpt2_core.errors import UserError

RECORD_FORMATS = (".jsonl", ".json", ".parquet")
"""Files of records (one dict each)."""
TEXT_FORMATS = (".txt", *RECORD_FORMATS)
SAMPLE_BY = ("document", "paragraph", "line")
"""How a .txt file splits into texts: the whole file, blank-line-separated paragraphs, or lines."""


def read_texts(path: str, decoder: Utf8Decoder, sample_by: str = "document") -> Iterator[str]:
    """The texts of a .txt file: the file, its paragraphs or its lines (``sample_by``); empty ones skipped."""
    if sample_by not in SAMPLE_BY:
        raise UserError(f"--sample-by {sample_by!r}: choose {', '.join(SAMPLE_BY)}")
    if sample_by == "line":
        for _, line in _lines(path, decoder):
            if line.strip():
                yield line.rstrip("\r\n")
        return
    text = decoder.decode(_read_bytes(path), path)
    for piece in [text] if sample_by == "document" else text.split("\n\n"):
        if piece.strip():
            yield piece


def read_records(path: str, decoder: Utf8Decoder) -> Iterator[dict[str, Any]]:
    """The rows of a .jsonl, .json (a list of objects, or JSON lines) or .parquet file, as dicts."""
    suffix = Path(path).suffix.lower()
    if suffix not in RECORD_FORMATS:
        raise UserError(f"{path}: unsupported file type; use {', '.join(RECORD_FORMATS)}")
    if not Path(path).is_file():
        raise UserError(f"{path}: no such file")
    if suffix == ".parquet":
        yield from _parquet_rows(path, decoder)
    elif suffix == ".json":
        text = decoder.decode(_read_bytes(path), path)
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            if e.msg != "Extra data":  # "Extra data": JSON lines in a .json file, as `datasets` accepts
                raise UserError(f"{path}: not valid JSON ({e.msg}, line {e.lineno})") from None
            yield from _json_lines(path, enumerate(text.splitlines(), start=1))
            return
        rows = data if isinstance(data, list) else [data]
        for i, row in enumerate(rows):
            if not isinstance(row, dict):
                raise UserError(f"{path}: item {i} is not a JSON object; expected a list of objects")
            yield row
    else:
        yield from _json_lines(path, _lines(path, decoder))


def read_hub_rows(
    path: str, name: str | None, split: str, decoder: Utf8Decoder, streaming: bool = True
) -> Iterator[dict[str, Any]]:
    """Rows of a Hugging Face hub dataset (or a local folder laid out like one), text columns decoded here.

    The hub id or folder names the source in warnings and errors. Streaming keeps the files' listed order.
    """
    import datasets

    try:
        ds = datasets.load_dataset(path, name=name or None, split=split, streaming=streaming)
    except (FileNotFoundError, ValueError, ConnectionError, datasets.exceptions.DatasetNotFoundError) as e:
        raise UserError(f"{path}: cannot open dataset ({type(e).__name__}: {str(e).splitlines()[0]})") from e
    if ds.features is not None:
        ds = ds.cast(datasets.Features({k: _binary_feature(v) for k, v in ds.features.items()}))
    for row in ds:
        yield decoder.decode_tree(row, path)


# --- helpers -------------------------------------------------------------------------------------------


def _read_bytes(path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as e:
        raise UserError(f"{path}: cannot read ({e.strerror})") from e


def _lines(path: str, decoder: Utf8Decoder) -> Iterator[tuple[int, str]]:
    """(line number, text) of each line, decoded line by line (no whole-file copy)."""
    offset = 0
    try:
        with open(path, "rb") as f:
            for number, raw in enumerate(f, start=1):
                yield number, decoder.decode(raw, path, offset)
                offset += len(raw)
    except OSError as e:
        raise UserError(f"{path}: cannot read ({e.strerror})") from e


def _json_lines(path: str, lines: Any) -> Iterator[dict[str, Any]]:
    for number, line in lines:
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise UserError(f"{path}: line {number} is not valid JSON ({e.msg})") from None
        if not isinstance(row, dict):
            raise UserError(f"{path}: line {number} is not a JSON object")
        yield row


def _binary_type(t: Any) -> Any:
    """Arrow type ``t`` with every string type inside it replaced by the binary type of the same width."""
    import pyarrow as pa

    if pa.types.is_string(t):
        return pa.binary()
    if pa.types.is_large_string(t):
        return pa.large_binary()
    if pa.types.is_list(t):
        return pa.list_(pa.field(t.value_field.name, _binary_type(t.value_type)))
    if pa.types.is_large_list(t):
        return pa.large_list(pa.field(t.value_field.name, _binary_type(t.value_type)))
    if pa.types.is_struct(t):
        return pa.struct([pa.field(f.name, _binary_type(f.type), f.nullable) for f in t])
    return t


def _parquet_rows(path: str, decoder: Utf8Decoder) -> Iterator[dict[str, Any]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        f = pq.ParquetFile(path)
    except (OSError, pa.ArrowException) as e:
        raise UserError(f"{path}: not a readable Parquet file ({e})") from e
    schema = pa.schema([pa.field(c.name, _binary_type(c.type)) for c in f.schema_arrow])
    for batch in f.iter_batches(batch_size=1024):
        # Casting string to binary reinterprets the bytes (nothing is validated), so bad UTF-8 reaches us.
        for row in pa.Table.from_batches([batch]).cast(schema).to_pylist():
            yield decoder.decode_tree(row, path)


def _binary_feature(feature: Any) -> Any:
    """A `datasets` feature with every string ``Value`` inside it read as binary instead."""
    import datasets

    if isinstance(feature, datasets.Value) and feature.dtype in ("string", "large_string"):
        return datasets.Value("binary" if feature.dtype == "string" else "large_binary")
    if isinstance(feature, dict):
        return {k: _binary_feature(v) for k, v in feature.items()}
    if isinstance(feature, list):
        return [_binary_feature(v) for v in feature]
    list_type = getattr(datasets, "List", None) or datasets.Sequence  # datasets >= 4 names it List
    if isinstance(feature, list_type):
        return list_type(_binary_feature(feature.feature), length=feature.length)
    return feature
