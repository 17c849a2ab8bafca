import json
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from gpt2_core.errors import UserError
from gpt2_core.tokenizer import Tokenizer
from gpt2_data import manifest, pipeline, splits
from gpt2_data.datasets import build_dataset
from gpt2_data.prepare import PrepareConfig, prepare
from gpt2_data.shards import open_shard
from waiting import DEADLINE


def shard_bytes(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.glob("*.bin"))}


def all_tokens(out: Path, split: str) -> np.ndarray:
    manifest = json.loads((out / "manifest.json").read_text())
    parts = [open_shard(out / s["name"]) for s in manifest["shards"] if s["split"] == split]
    return np.concatenate(parts) if parts else np.empty(0, np.uint16)


def test_tokens_are_documents_after_eot(synthetic: str, tmp_path: Path) -> None:
    m = prepare(
        synthetic, tmp_path / "d", options={"docs": 50}, shard_tokens=500, val_tokens=0, progress=False
    )
    tok = Tokenizer()
    texts = list(build_dataset(synthetic, {"docs": 50}).documents())
    expected = np.concatenate([np.array([50256] + tok.encode(t), np.uint16) for t in texts])
    assert np.array_equal(all_tokens(tmp_path / "d", "train"), expected)
    assert m["complete"] and m["documents"] == 50 and m["tokens"] == {"train": len(expected), "val": 0}
    assert all(s["tokens"] == 500 for s in m["shards"][:-1])
    assert m["tokenizer"]["name"] == "gpt2" and m["options"] == {"docs": 50, "seed": 0}


def test_special_token_text_is_plain_text(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from gpt2_data import datasets

    text = "a <|endoftext|> in a document is text, not a document boundary"
    monkeypatch.setattr(datasets.PythonStdlib, "documents", lambda self: iter([text]))
    prepare("python-stdlib", tmp_path, shard_tokens=100, val_tokens=0, progress=False)
    assert all_tokens(tmp_path, "train").tolist() == [50256, *Tokenizer().encode(text)]


def test_val_head_and_max_tokens(synthetic: str, tmp_path: Path) -> None:
    m = prepare(
        synthetic, tmp_path / "d", shard_tokens=1000, val_tokens=1500, max_tokens=5000, progress=False
    )
    assert m["tokens"] == {"val": 1500, "train": 3500}
    assert [s["tokens"] for s in m["shards"] if s["split"] == "val"] == [1000, 500]
    both = np.concatenate([all_tokens(tmp_path / "d", "val"), all_tokens(tmp_path / "d", "train")])
    full = prepare(synthetic, tmp_path / "full", shard_tokens=10**6, val_tokens=0, progress=False)
    assert np.array_equal(both, all_tokens(tmp_path / "full", "train")[:5000])
    assert full["tokens"]["train"] > 5000


def test_val_fraction_by_documents(synthetic: str, tmp_path: Path) -> None:
    prepare(synthetic, tmp_path / "d", shard_tokens=700, val_tokens=0.1, progress=False)
    val = all_tokens(tmp_path / "d", "val")
    assert (val == 50256).sum() == 20  # every 10th of 200 documents
    tok = Tokenizer()
    assert tok.decode(val[1:8].tolist()).startswith("doc 9:")


def test_small_corpus_default_val(synthetic: str, tmp_path: Path) -> None:
    m = prepare(synthetic, tmp_path / "d", progress=False)  # 100M-token default shard: corpus is smaller
    assert m["tokens"]["train"] > 0 and 0 < m["tokens"]["val"] < m["tokens"]["train"] / 10
    assert "every 20th document" in m["val_split"]


@pytest.mark.parametrize("docs", [2, 3, 19])
def test_a_handful_of_documents_still_gets_a_val_document(synthetic: str, tmp_path: Path, docs: int) -> None:
    m = prepare(synthetic, tmp_path / "d", options={"docs": docs}, progress=False)
    assert (all_tokens(tmp_path / "d", "val") == 50256).sum() == 1
    assert (all_tokens(tmp_path / "d", "train") == 50256).sum() == docs - 1
    assert m["tokens"]["val"] > 0


def test_a_val_fraction_that_picks_no_document_is_an_error(synthetic: str, tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"--val-tokens 0\.05: none of the 5 documents went to validation"):
        prepare(synthetic, tmp_path / "d", options={"docs": 5}, val_tokens=0.05, progress=False)


def test_deterministic_and_idempotent(synthetic: str, tmp_path: Path) -> None:
    a = prepare(synthetic, tmp_path / "a", shard_tokens=999, val_tokens=0.2, workers=1, progress=False)
    b = prepare(synthetic, tmp_path / "b", shard_tokens=999, val_tokens=0.2, workers=2, progress=False)
    assert shard_bytes(tmp_path / "a") == shard_bytes(tmp_path / "b") and a["shards"] == b["shards"]
    again = prepare(synthetic, tmp_path / "a", shard_tokens=999, val_tokens=0.2, progress=False)
    assert again == a
    with pytest.raises(UserError, match=r"a: was prepared with other settings \(shard_tokens differ\)"):
        prepare(synthetic, tmp_path / "a", shard_tokens=1000, val_tokens=0.2, progress=False)
    c = prepare(synthetic, tmp_path / "a", shard_tokens=1000, val_tokens=0.2, overwrite=True, progress=False)
    assert c["shard_tokens"] == 1000


@pytest.mark.parametrize("val_tokens", [1700, 0.15])
@pytest.mark.parametrize("where", ["write_shard", "write_json_atomic"])
def test_resume_after_interruption(
    synthetic: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, val_tokens: float, where: str
) -> None:
    kwargs = dict(
        options={"docs": 300}, shard_tokens=800, val_tokens=val_tokens, max_tokens=15_000, progress=False
    )
    ref = prepare(synthetic, tmp_path / "ref", **kwargs)
    # Every module that calls it: the manifest's first write, the resume records, the final manifest.
    modules = [splits] if where == "write_shard" else [manifest, pipeline, splits]
    original = getattr(splits, where)
    for k in (1, 3, 6, 11):
        out = tmp_path / f"run{k}"
        calls = {"n": 0}

        def crash(*args, _k=k, calls=calls, **kw):
            calls["n"] += 1
            if calls["n"] == _k:
                raise KeyboardInterrupt
            return original(*args, **kw)

        for module in modules:
            monkeypatch.setattr(module, where, crash)
        with pytest.raises(KeyboardInterrupt):
            prepare(synthetic, out, **kwargs)
        for module in modules:
            monkeypatch.setattr(module, where, original)
        if (out / "manifest.json").exists():  # absent only when the very first write was interrupted
            assert not json.loads((out / "manifest.json").read_text())["complete"]
        got = prepare(synthetic, out, **kwargs)
        assert got == ref, k
        assert shard_bytes(out) == shard_bytes(tmp_path / "ref"), k


def test_a_failed_prepare_leaves_no_write_running(
    synthetic: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The shard being written when an error stops prepare() is finished before the error leaves it.

    Each shard write is held until the pipeline itself waits for it (its next submit) or the dataset fails;
    the dataset fails at the first batch routed while a write is held, so a write is in flight then, every
    time. The released write is slow, so a prepare() that did not wait for it would leave it running.
    """
    gates: list[threading.Event] = []
    submit, write_shard, route = pipeline.ShardWrites.submit, splits.write_shard, pipeline.route

    def held_submit(self: pipeline.ShardWrites, write) -> None:  # noqa: ANN001
        for gate in gates:  # submit waits for the previous write: let it go
            gate.set()
        gate = threading.Event()
        gates.append(gate)

        def held() -> None:
            assert gate.wait(DEADLINE), "a shard write was never released"
            write()

        submit(self, held)

    def write_slowly(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        time.sleep(0.3)  # a slow disk, not a wait for a condition: the write must still be going on
        return write_shard(*args, **kwargs)

    def route_or_fail(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        if any(not gate.is_set() for gate in gates):
            for gate in gates:
                gate.set()
            raise RuntimeError("dataset went away")
        return route(*args, **kwargs)

    monkeypatch.setattr(pipeline.ShardWrites, "submit", held_submit)
    monkeypatch.setattr(splits, "write_shard", write_slowly)
    monkeypatch.setattr(pipeline, "route", route_or_fail)
    before = set(threading.enumerate())
    out = tmp_path / "out"
    with pytest.raises(RuntimeError, match="went away"):
        prepare(synthetic, out, options={"docs": 300}, shard_tokens=800, val_tokens=0, progress=False)
    # Nothing prepare() started runs on: no thread left to write a shard or rewrite the manifest.
    assert not [t.name for t in set(threading.enumerate()) - before if t.name.startswith("gpt2-")]
    listed = json.loads((out / "manifest.json").read_text())["shards"]
    assert listed and all((out / s["name"]).is_file() and s["sha256"] for s in listed)


def test_config_validation() -> None:
    with pytest.raises(UserError, match="--shard-tokens"):
        PrepareConfig(shard_tokens=0)
    with pytest.raises(UserError, match="--val-tokens"):
        PrepareConfig(val_tokens=2.5)


def test_empty_and_unknown(synthetic: str, tmp_path: Path) -> None:
    with pytest.raises(UserError, match="produced no documents"):
        prepare(synthetic, tmp_path / "e", options={"docs": 0}, progress=False)
    with pytest.raises(UserError, match="unknown dataset 'nope'"):
        prepare("nope", tmp_path / "n", progress=False)
    with pytest.raises(UserError, match=r"dataset 'synthetic': unknown option\(s\) colour"):
        prepare(synthetic, tmp_path / "n", options={"colour": 1}, progress=False)
    with pytest.raises(UserError, match="all .* tokens went to validation"):
        prepare(synthetic, tmp_path / "v", shard_tokens=100, val_tokens=10**7, progress=False)


def test_python_stdlib_is_deterministic_and_big_enough() -> None:
    ds = build_dataset("python-stdlib")
    files = ds.files()
    assert len(files) > 500 and files == build_dataset("python-stdlib").files()
    assert not any("test" in p.parts for p in files)
    assert sum(p.stat().st_size for p in files) > 10_000_000  # a few million tokens at ~3.5 bytes per token
    first = next(iter(ds.documents()))
    assert first == files[0].read_text(encoding="utf-8", errors="replace")


def test_stdlib_prepare_small(tmp_path: Path) -> None:
    m = prepare(
        "python-stdlib", tmp_path, shard_tokens=20_000, val_tokens=5_000, max_tokens=50_000, progress=False
    )
    assert m["tokens"] == {"val": 5000, "train": 45000}
    assert [s["name"] for s in m["shards"]][:2] == [
        "python-stdlib_val_000000.bin",
        "python-stdlib_train_000000.bin",
    ]
