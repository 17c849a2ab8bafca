"""End-to-end ``gpt2 data ...`` flows, each in a fresh process as a user would run them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cli_helpers import gpt2, gpt2_here


def test_list_shows_builtin_and_third_party_datasets(fixture_plugin) -> None:
    env = fixture_plugin("gpt2-example-dataset")
    r = gpt2("data", "list", env=env)
    assert r.returncode == 0, r.stderr
    for name in ("python-stdlib", "fineweb-edu", "hf", "files", "example-tales"):
        assert f"{name}  " in r.stdout
    assert "--include-tests bool (default: False)" in r.stdout
    assert "--docs int (default: 200)  How many tales" in r.stdout


def test_prepare_third_party_dataset_then_inspect(fixture_plugin, tmp_path: Path, capsys) -> None:
    env = fixture_plugin("gpt2-example-dataset")
    out = tmp_path / "tales"
    args = ["data", "prepare", "--dataset", "example-tales", "--docs", "120", "--shard-tokens", "1000"]
    r = gpt2(*args, "--val-tokens", "0.1", "--workers", "2", "--out", str(out), env=env)
    assert r.returncode == 0, r.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["complete"] and manifest["documents"] == 120 and manifest["options"] == {"docs": 120}
    assert f"{out}: {len(manifest['shards'])} shards" in r.stdout
    code, stdout, err = gpt2_here(capsys, "data", "inspect", str(out), "--samples", "2", "--verify")
    assert code == 0, err
    assert "dataset:   example-tales" in stdout and "verified:  sha256" in stdout
    assert "--- sample 1" in stdout and "Tale 0. Once upon a time a fox lived by the forest." in stdout
    # The same command again is a no-op; other settings are refused with one line.
    code, _, err = gpt2_here(capsys, *args, "--val-tokens", "0.1", "--out", str(out))
    assert code == 0 and json.loads((out / "manifest.json").read_text()) == manifest, err
    code, _, err = gpt2_here(capsys, *args, "--val-tokens", "0.2", "--out", str(out))
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "was prepared with other settings (val_tokens differ)" in err


def test_prepare_builtin_corpus(tmp_path: Path, capsys) -> None:
    out = tmp_path / "stdlib"
    args = ["--max-tokens", "40000", "--shard-tokens", "15000", "--val-tokens", "5000", "--no-include-topics"]
    code, _, err = gpt2_here(capsys, "data", "prepare", *args, "--out", str(out))
    assert code == 0, err
    m = json.loads((out / "manifest.json").read_text())
    assert m["dataset"] == "python-stdlib" and m["options"]["include_topics"] is False
    assert m["tokens"] == {"train": 35000, "val": 5000}
    assert sorted(p.name for p in out.glob("*.bin")) == sorted(s["name"] for s in m["shards"])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["data", "prepare", "--dataset", "nope", "--out", "x"], "error: unknown dataset 'nope'"),
        (
            ["data", "prepare", "--colour", "red", "--out", "x"],
            "error: dataset 'python-stdlib' has no option --colour",
        ),
        (
            ["data", "prepare", "--include-tests=maybe", "--out", "x"],
            "--include-tests: 'maybe' is not a valid bool",
        ),
        (["data", "prepare", "--shard-tokens", "0", "--out", "x"], "error: --shard-tokens must be >= 1"),
        (["data", "inspect", "does-not-exist"], "error: does-not-exist: data directory not found"),
    ],
)
def test_user_errors_are_one_line(args: list[str], message: str, tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    code, _, err = gpt2_here(capsys, *args)
    assert code == 2, err
    assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
