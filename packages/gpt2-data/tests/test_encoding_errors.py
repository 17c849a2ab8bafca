"""Bytes that are not UTF-8, in every file format and the hub reader: read as U+FFFD and counted per file by
default, a one-line error naming the file with --encoding-errors strict."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from gpt2_core.decoding import Utf8Decoder
from gpt2_core.errors import UserError
from gpt2_data.datasets import build_dataset
from gpt2_data.prepare import prepare

BAD = b"caf\xe9 \xff\xfe ok"
"""Latin-1 e-acute, then two bytes that start no UTF-8 sequence: 3 undecodable bytes."""
GOOD = "caf\ufffd \ufffd\ufffd ok"


def unchecked_strings(values: list[bytes]) -> pa.Array:
    """An Arrow string array holding ``values`` as they are (Arrow validates UTF-8 only when asked)."""
    offsets = list(itertools.accumulate((len(v) for v in values), initial=0))
    buffers = [None, pa.py_buffer(pa.array(offsets, pa.int32()).buffers()[1]), pa.py_buffer(b"".join(values))]
    return pa.Array.from_buffers(pa.string(), len(values), buffers)


def write_files(d: Path) -> dict[str, Path]:
    d.mkdir(parents=True, exist_ok=True)
    files = {
        "txt": d / "a.txt",
        "jsonl": d / "b.jsonl",
        "json": d / "c.json",
        "parquet": d / "d.parquet",
    }
    files["txt"].write_bytes(BAD)
    files["jsonl"].write_bytes(b'{"text": "fine"}\n{"text": "' + BAD + b'"}\n')
    files["json"].write_bytes(b'[{"text": "' + BAD + b'"}]')
    pq.write_table(pa.table({"text": unchecked_strings([b"fine", BAD])}), files["parquet"])
    return files


@pytest.mark.parametrize("fmt", ["txt", "jsonl", "json", "parquet"])
def test_each_file_format_replaces_and_counts(tmp_path: Path, fmt: str) -> None:
    path = write_files(tmp_path)[fmt]
    ds = build_dataset("files", {"paths": str(path)})
    docs = list(ds.documents())
    assert GOOD in docs
    assert ds.decoder.replaced == {str(path): 3}
    strict = build_dataset("files", {"paths": str(path), "encoding_errors": "strict"})
    with pytest.raises(UserError, match=rf"{path.name}: byte \d+ is not UTF-8.*--encoding-errors replace"):
        list(strict.documents())


def test_hub_dataset_folder_with_bad_bytes(tmp_path: Path) -> None:
    root = tmp_path / "hub"
    (root / "data").mkdir(parents=True)
    pq.write_table(
        pa.table({"text": unchecked_strings([BAD, b"clean"]), "id": ["a", "b"]}), root / "data" / "0.parquet"
    )
    ds = build_dataset("hf", {"path": str(root)})
    assert list(ds.documents()) == [GOOD, "clean"]
    assert ds.decoder.replaced == {str(root): 3}
    with pytest.raises(UserError, match="not UTF-8"):
        list(build_dataset("hf", {"path": str(root), "encoding_errors": "strict"}).documents())


def test_prepare_records_the_counts_and_warns_once_per_file(tmp_path: Path, capsys) -> None:
    files = write_files(tmp_path / "in")
    m = prepare("files", tmp_path / "out", options={"paths": str(tmp_path / "in" / "*")}, progress=False)
    assert m["replaced_bytes"] == {str(p): 3 for p in sorted(files.values())}
    assert (
        json.loads((tmp_path / "out" / "manifest.json").read_text())["replaced_bytes"] == m["replaced_bytes"]
    )
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 4 and all("3 undecodable bytes" in w for w in warnings)


def test_cli_strict_is_one_line_error(tmp_path: Path) -> None:
    files = write_files(tmp_path / "in")
    cmd = [
        sys.executable,
        "-m",
        "gpt2_cli",
        "data",
        "prepare",
        "--dataset",
        "files",
        "--paths",
        str(files["txt"]),
    ]
    r = subprocess.run(
        [*cmd, "--out", str(tmp_path / "o"), "--encoding-errors", "strict"], capture_output=True, text=True
    )
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines() == [
        f"error: {files['txt']}: byte 3 is not UTF-8 (invalid continuation byte); fix the input, or pass --encoding-errors replace to read such bytes as U+FFFD"
    ]
    r = subprocess.run([*cmd, "--out", str(tmp_path / "o2")], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "undecodable bytes read as U+FFFD: 3 in 1 file(s)" in r.stdout
    assert f"warning: {files['txt']}: 3 undecodable bytes" in r.stderr


def test_decoder_rejects_unknown_setting() -> None:
    with pytest.raises(UserError, match="--encoding-errors must be replace or strict"):
        Utf8Decoder("ignore")
