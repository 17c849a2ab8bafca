"""``--help`` as a pipe or a narrow terminal shows it: every flag name whole (rich's table cut them,
``--early-stop-patie…``), no ``<bool>`` placeholder for flags that take no value, ``gpt2 sft --help`` with the flags
``gpt2 sft`` takes; ``--show-config`` prints what a preset sets (``--help`` shows the defaults before it)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer
from cli_helpers import gpt2_here


def commands() -> Iterator[tuple[list[str], Any]]:
    """Every command of ``gpt2``, with the words that name it."""
    from gpt2_cli.main import build_app

    def walk(path: list[str], cmd: Any) -> Iterator[tuple[list[str], Any]]:
        yield path, cmd
        for name, sub in getattr(cmd, "commands", {}).items():  # a group (Typer's own copy of click's)
            yield from walk([*path, name], sub)

    yield from walk([], typer.main.get_command(build_app()))


@pytest.mark.parametrize("columns", ["80", "50"])
def test_every_flag_name_is_whole_at_any_width(
    columns: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", columns)
    checked = 0
    for path, cmd in commands():
        code, out, err = gpt2_here(capsys, *path, "--help")
        assert code == 0, err
        flags = [o for p in cmd.params for o in (*p.opts, *p.secondary_opts) if o.startswith("--")]
        for flag in flags:
            assert re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", out), (
                f"gpt2 {' '.join(path)}: {flag}\n{out}"
            )
            checked += 1
        assert "<bool>" not in out and "…" not in out, out
    assert checked > 200


def test_sft_help_shows_the_flags_sft_takes(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = gpt2_here(capsys, "sft", "--help")
    assert code == 0
    assert "--from" in out and "--max-steps" in out and "--show-config" in out


def test_show_config_prints_what_the_preset_sets_and_reads_back(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = gpt2_here(capsys, "train", "--preset", "tiny", "--max-steps", "30", "--show-config")
    assert code == 0, err
    lines = out.splitlines()
    assert 'optimizer = "muon"  # default: "adamw"' in lines
    assert 'lr_schedule = "wsd"  # default: "cosine"' in lines
    assert "max_steps = 30  # default: 0" in lines
    (tmp_path / "tiny.toml").write_text(out)
    code, again, err = gpt2_here(capsys, "train", "--config", str(tmp_path / "tiny.toml"), "--show-config")
    assert code == 0, err
    assert again == out
    code, sft, err = gpt2_here(capsys, "sft", "--preset", "tiny", "--show-config")
    assert code == 0, err
    assert 'dataset = "shakespeare-chat"  # default: null' in sft.splitlines()
