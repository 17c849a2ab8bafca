"""Running ``gpt2`` in tests: in a fresh process (what a user runs, plugin discovery included) or in this
process (fast: no interpreter and torch start-up), and reading what a run logged. On the path through
pytest's ``pythonpath`` setting."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest


def gpt2(
    *args: str, env: dict[str, str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """``gpt2 ARGS`` in a fresh process, with wide, colourless output."""
    env = {**(env or os.environ), "COLUMNS": "200", "NO_COLOR": "1"}
    return subprocess.run(
        [sys.executable, "-m", "gpt2_cli", *args], capture_output=True, text=True, env=env, timeout=timeout
    )


def gpt2_here(capsys: pytest.CaptureFixture, *args: str) -> tuple[int, str, str]:
    """``gpt2 ARGS`` in this process; (exit code, stdout, stderr)."""
    from gpt2_cli.main import main

    capsys.readouterr()
    code = 0
    try:
        main([str(a) for a in args])
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    out, err = capsys.readouterr()
    return code, out, err


def metrics(run: Path) -> list[dict]:
    """The rows of ``RUN/metrics.jsonl`` (the jsonl logger's file)."""
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
