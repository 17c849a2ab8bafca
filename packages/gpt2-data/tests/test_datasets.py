import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from gpt2_core.errors import UserError
from gpt2_data.datasets import build_dataset
from gpt2_data.prepare import prepare

FINEWEB_README = """---
configs:
- config_name: default
  data_files:
  - split: train
    path: data/*/*
- config_name: sample-10BT
  data_files:
  - split: train
    path: sample/10BT/*
---
"""


def fineweb_folder(root: Path) -> Path:
    """A local folder laid out like HuggingFaceFW/fineweb-edu, with its columns, for the offline tests."""
    (root / "sample" / "10BT").mkdir(parents=True)
    (root / "data" / "CC-MAIN-2024-10").mkdir(parents=True)
    (root / "README.md").write_text(FINEWEB_README)
    for part in range(2):
        texts = [f"Sample doc {part}-{i}: photosynthesis turns light into sugar." for i in range(5)]
        table = pa.table(
            {
                "text": texts,
                "id": [f"<urn:uuid:{part}-{i}>" for i in range(5)],
                "dump": ["CC-MAIN-2024-10"] * 5,
                "url": [f"https://example.org/{part}/{i}" for i in range(5)],
                "file_path": ["s3://x"] * 5,
                "language": ["en"] * 5,
                "language_score": [0.9] * 5,
                "token_count": [12] * 5,
                "score": [3.1] * 5,
                "int_score": [3] * 5,
            }
        )
        pq.write_table(table, root / "sample" / "10BT" / f"{part:03d}_00000.parquet")
    pq.write_table(
        pa.table({"text": ["full dump doc"], "id": ["x"]}), root / "data" / "CC-MAIN-2024-10" / "a.parquet"
    )
    return root


def test_fineweb_edu_from_local_folder(tmp_path: Path) -> None:
    root = fineweb_folder(tmp_path / "fineweb-edu")
    docs = list(build_dataset("fineweb-edu", {"path": str(root)}).documents())
    assert docs == [
        f"Sample doc {p}-{i}: photosynthesis turns light into sugar." for p in range(2) for i in range(5)
    ]
    assert list(build_dataset("fineweb-edu", {"path": str(root), "name": "default"}).documents()) == [
        "full dump doc"
    ]
    hf = list(build_dataset("hf", {"path": str(root), "name": "sample-10BT"}).documents())
    assert hf == docs
    m = prepare("fineweb-edu", tmp_path / "out", options={"path": str(root)}, val_tokens=0.2, progress=False)
    assert m["documents"] == 10 and m["options"]["name"] == "sample-10BT"


def test_files_txt_jsonl_parquet_and_globs(tmp_path: Path) -> None:
    (tmp_path / "b.txt").write_text("second file\nline two\n")
    (tmp_path / "a.txt").write_text("first file")
    (tmp_path / "c.jsonl").write_text("\n".join(json.dumps({"body": f"json {i}"}) for i in range(3)) + "\n")
    pq.write_table(pa.table({"body": ["pq 0", "pq 1"]}), tmp_path / "d.parquet")
    txt = list(build_dataset("files", {"paths": str(tmp_path / "*.txt")}).documents())
    assert txt == ["first file", "second file\nline two\n"]
    lines = list(build_dataset("files", {"paths": str(tmp_path / "b.txt"), "sample_by": "line"}).documents())
    assert lines == ["second file", "line two"]
    mixed = build_dataset(
        "files", {"paths": f"{tmp_path}/c.jsonl,{tmp_path}/d.parquet", "text_field": "body"}
    )
    assert list(mixed.documents()) == ["json 0", "json 1", "json 2", "pq 0", "pq 1"]


def test_files_errors(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="--paths is required"):
        list(build_dataset("files").documents())
    with pytest.raises(UserError, match=r"nothing\*\.txt: no such file"):
        list(build_dataset("files", {"paths": str(tmp_path / "nothing*.txt")}).documents())
    (tmp_path / "c.jsonl").write_text(json.dumps({"body": "x"}) + "\n")
    with pytest.raises(UserError, match="no text field 'text'; fields are body"):
        list(build_dataset("files", {"paths": str(tmp_path / "c.jsonl")}).documents())
    (tmp_path / "x.csv").write_text("a,b\n")
    with pytest.raises(UserError, match=r"x\.csv: unsupported file type"):
        list(build_dataset("files", {"paths": str(tmp_path / "x.csv")}).documents())
