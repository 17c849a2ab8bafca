"""Running ``gpt2`` in tests: in a fresh process (what a user runs, plugin discovery included) or in this
process (fast: no interpreter and torch start-up), and reading what a run logged. On the path through
pytest's ``pythonpath`` setting."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from waiting import wait_until


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


def loaded_llms(monkeypatch: pytest.MonkeyPatch) -> list:
    """The ``gpt2_core.LLM`` handles the commands run from here on load (``LLM.from_runtime``), in order."""
    from gpt2_core.llm import LLM

    loaded = []
    real = LLM.from_runtime.__func__  # type: ignore[attr-defined]

    def spy(cls: type, *args: object, **kwargs: object) -> LLM:
        loaded.append(real(cls, *args, **kwargs))
        return loaded[-1]

    monkeypatch.setattr(LLM, "from_runtime", classmethod(spy))
    return loaded


def metrics(run: Path) -> list[dict]:
    """The rows of ``RUN/metrics.jsonl`` (the jsonl logger's file)."""
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


SMALL_TRAIN = [
    "--model",
    "nano",
    "--micro-batch",
    "2",
    "--seq-len",
    "32",
    "--eval-every",
    "0",
    "--device",
    "cpu",
]
"""The nano model on short sequences: a step takes a fraction of a second on one core."""
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone"]


def train_cmd(data_dir: Path, run: Path, *args: str, ranks: int = 0) -> list[str]:
    """``gpt2 train`` of the nano model on ``data_dir`` into ``run``, logging to jsonl; under torchrun with
    ``ranks`` processes when given."""
    launcher = [*TORCHRUN, f"--nproc-per-node={ranks}"] if ranks else [sys.executable]
    return [
        *launcher,
        "-m",
        "gpt2_cli",
        "train",
        *SMALL_TRAIN,
        "--data-dir",
        str(data_dir),
        "--run-dir",
        str(run),
        "--logger",
        "jsonl",
        *args,
    ]


def losses(run: Path) -> dict[int, float]:
    """The logged training loss of each step of ``run``."""
    return {r["step"]: r["train/loss"] for r in metrics(run) if "train/loss" in r}


def logged_steps(run: Path) -> int:
    try:
        return max(losses(run), default=0)
    except (FileNotFoundError, json.JSONDecodeError):
        return 0


def run_and_kill(cmd: list[str], run: Path, after: int, env: dict[str, str] | None = None) -> None:
    """Start ``cmd`` and SIGKILL it, with every process it started (torchrun's ranks), once ``run`` has
    logged step ``after``."""
    proc = subprocess.Popen(
        cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, start_new_session=True
    )
    wait_until(lambda: logged_steps(run) >= after or proc.poll() is not None, f"step {after} logged", 240)
    finished = proc.poll() is not None
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not finished and proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
