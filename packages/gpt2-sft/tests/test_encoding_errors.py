"""Instruction data with bytes that are not UTF-8: read as U+FFFD and counted per file, or refused (strict)."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from gpt2_core.chat_template import ChatTemplate, make_template
from gpt2_core.errors import UserError
from gpt2_core.tokenizer import Tokenizer
from gpt2_sft.datasets import AlpacaDataset, ChatDataset
from gpt2_sft.examples import prepare_dataset

BAD = b"caf\xe9"  # Latin-1 e-acute: one undecodable byte


def test_alpaca_jsonl(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "a.jsonl"
    rows = [
        b'{"instruction": "Say ' + BAD + b'", "output": "ok"}',
        json.dumps({"instruction": "hi", "output": "yo"}).encode(),
    ]
    path.write_bytes(b"\n".join(rows) + b"\n")
    ds = AlpacaDataset(AlpacaDataset.Options(path=str(path)))
    template = ChatTemplate(make_template(special=False), Tokenizer())
    stats = prepare_dataset(ds, template, tmp_path / "out", max_len=64, val_fraction=0.0)
    assert stats.replaced_bytes == {str(path): 1}
    meta = json.loads((tmp_path / "out" / "meta.json").read_text())
    assert meta["stats"]["replaced_bytes"] == {str(path): 1}
    assert f"warning: {path}: 1 undecodable byte read as U+FFFD" in capsys.readouterr().err
    strict = AlpacaDataset(AlpacaDataset.Options(path=str(path), encoding_errors="strict"))
    with pytest.raises(UserError, match=r"a\.jsonl: byte 24 is not UTF-8"):
        list(strict.conversations())


def test_chat_parquet_with_nested_messages(tmp_path: Path) -> None:
    path = tmp_path / "c.parquet"
    bad = pa.table(
        {"messages": [[{"role": "user", "content": "caf?"}, {"role": "assistant", "content": "fine"}]]}
    )
    pq.write_table(bad, path, compression="none", use_dictionary=False)
    # Swap the bytes in place (same length, no compression or checksum): the file stays well formed.
    path.write_bytes(path.read_bytes().replace(b"caf?", BAD))
    ds = ChatDataset(ChatDataset.Options(path=str(path)))
    convs = list(ds.conversations())
    assert convs == [[{"role": "user", "content": "caf\ufffd"}, {"role": "assistant", "content": "fine"}]]
    assert ds.decoder.replaced == {str(path): 1}
