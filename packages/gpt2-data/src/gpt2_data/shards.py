"""Token shards in llm.c's ``.bin`` layout: a 256 x int32 header, then the tokens as uint16.

The header holds the magic number 20240520, the version 1 and the token count, so shards made by llm.c and
modded-nanogpt (for example the published pre-tokenized FineWeb shards) load as they are, and ours load there.
Shards are written atomically (temp name, fsync, rename) so a crash never leaves a half shard under a final
name, and read through ``numpy.memmap`` so opening one costs no memory.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
from gpt2_core.errors import UserError
from gpt2_core.files import TMP_SUFFIX, fsync_dir

MAGIC = 20240520
VERSION = 1
HEADER_INTS = 256
HEADER_BYTES = HEADER_INTS * 4
TOKEN_DTYPE = np.uint16


def write_shard(path: str | Path, tokens: np.ndarray) -> str:
    """Write ``tokens`` (uint16) to ``path`` atomically and return the file's sha256 (hex)."""
    path = Path(path)
    tokens = np.ascontiguousarray(tokens, dtype=TOKEN_DTYPE)
    header = np.zeros(HEADER_INTS, dtype=np.int32)
    header[0], header[1], header[2] = MAGIC, VERSION, len(tokens)
    digest = hashlib.sha256()
    tmp = path.with_name(path.name + TMP_SUFFIX)
    with open(tmp, "wb") as f:
        for chunk in (header.tobytes(), memoryview(tokens).cast("B")):
            digest.update(chunk)
            f.write(chunk)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)
    return digest.hexdigest()


def read_header(path: str | Path) -> int:
    """The token count of shard ``path``, after checking its magic, version and size."""
    path = Path(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            raw = f.read(HEADER_BYTES)
    except FileNotFoundError as e:
        raise UserError(f"{path}: shard not found") from e
    if len(raw) < HEADER_BYTES:
        raise UserError(
            f"{path}: truncated shard ({size} bytes, shorter than the {HEADER_BYTES}-byte header)"
        )
    header = np.frombuffer(raw, dtype=np.int32)
    if header[0] != MAGIC:
        raise UserError(
            f"{path}: bad magic number {int(header[0])} (expected {MAGIC}); not an llm.c token shard"
        )
    if header[1] != VERSION:
        raise UserError(f"{path}: unsupported shard version {int(header[1])} (expected {VERSION})")
    count = int(header[2])
    expected = HEADER_BYTES + count * np.dtype(TOKEN_DTYPE).itemsize
    if size < expected:
        raise UserError(
            f"{path}: truncated shard (header says {count} tokens: {expected} bytes, file has {size})"
        )
    return count


def open_shard(path: str | Path, vocab_size: int | None = None) -> np.ndarray:
    """The tokens of shard ``path`` as a read-only memory map.

    With ``vocab_size``, the shard is scanned once for ids that a model of that vocabulary cannot embed.
    """
    count = read_header(path)
    tokens = np.memmap(path, dtype=TOKEN_DTYPE, mode="r", offset=HEADER_BYTES, shape=(count,))
    if vocab_size is not None and count:
        top = int(tokens.max())
        if top >= vocab_size:
            raise UserError(
                f"{path}: token id {top} >= vocab size {vocab_size}; shard made with another tokenizer?"
            )
    return tokens


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()


def verify_shard(path: str | Path, sha256: str) -> None:
    """Raise a UserError naming ``path`` when its content no longer matches ``sha256``."""
    actual = sha256_file(path)
    if actual != sha256:
        raise UserError(
            f"{path}: sha256 mismatch (manifest {sha256[:12]}..., file {actual[:12]}...); re-run prepare"
        )
