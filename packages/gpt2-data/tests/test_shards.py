from pathlib import Path

import numpy as np
import pytest
from gpt2_core.errors import UserError
from gpt2_data.shards import (
    HEADER_BYTES,
    MAGIC,
    open_shard,
    read_header,
    sha256_file,
    verify_shard,
    write_shard,
)


def llmc_write(path: Path, tokens: np.ndarray) -> None:
    """The way llm.c's dev/data/data_common.py writes a shard."""
    header = np.zeros(256, dtype=np.int32)
    header[0], header[1], header[2] = 20240520, 1, len(tokens)
    with open(path, "wb") as f:
        f.write(header.tobytes())
        f.write(tokens.astype(np.uint16).tobytes())


def test_roundtrip_is_llmc_layout(tmp_path: Path) -> None:
    tokens = np.arange(1000, dtype=np.uint16)
    sha = write_shard(tmp_path / "ours.bin", tokens)
    llmc_write(tmp_path / "theirs.bin", tokens)
    assert (tmp_path / "ours.bin").read_bytes() == (tmp_path / "theirs.bin").read_bytes()
    assert sha == sha256_file(tmp_path / "ours.bin")
    assert not list(tmp_path.glob("*.tmp"))
    mm = open_shard(tmp_path / "theirs.bin", vocab_size=50257)
    assert isinstance(mm, np.memmap) and np.array_equal(mm, tokens)
    assert read_header(tmp_path / "ours.bin") == 1000


def test_bad_magic(tmp_path: Path) -> None:
    path = tmp_path / "x.bin"
    path.write_bytes(b"\0" * (HEADER_BYTES + 10))
    with pytest.raises(UserError, match=r"x\.bin: bad magic"):
        read_header(path)


def test_truncated(tmp_path: Path) -> None:
    path = tmp_path / "t.bin"
    write_shard(path, np.arange(100, dtype=np.uint16))
    path.write_bytes(path.read_bytes()[:-2])
    with pytest.raises(UserError, match=r"t\.bin: truncated shard \(header says 100 tokens"):
        open_shard(path)
    path.write_bytes(np.array([MAGIC], dtype=np.int32).tobytes())
    with pytest.raises(UserError, match=r"t\.bin: truncated shard"):
        open_shard(path)


def test_token_beyond_vocab(tmp_path: Path) -> None:
    path = tmp_path / "v.bin"
    write_shard(path, np.array([1, 2, 60000], dtype=np.uint16))
    with pytest.raises(UserError, match=r"v\.bin: token id 60000 >= vocab size 50257"):
        open_shard(path, vocab_size=50257)


def test_sha_mismatch_and_missing(tmp_path: Path) -> None:
    path = tmp_path / "s.bin"
    sha = write_shard(path, np.arange(10, dtype=np.uint16))
    verify_shard(path, sha)
    with pytest.raises(UserError, match=r"s\.bin: sha256 mismatch"):
        verify_shard(path, "0" * 64)
    with pytest.raises(UserError, match=r"nope\.bin: shard not found"):
        read_header(tmp_path / "nope.bin")
