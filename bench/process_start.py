"""What a fresh process of ours costs before it does any work, with the installed bytecode and without it:
the test suite starts hundreds (every `gpt2` command, every torchrun rank), and the README's install command
(`uv sync --locked --compile-bytecode`) compiles the environment's bytecode because of it.

    uv run python bench/process_start.py [--repeats 2]

Where ``PYTHONDONTWRITEBYTECODE`` is set (as on the CI machines), Python never writes the ``__pycache__`` it
would reuse, so without bytecode compiled at install every process compiles torch's sources again. "without"
points ``PYTHONPYCACHEPREFIX`` at an empty directory with ``PYTHONDONTWRITEBYTECODE=1``: Python looks for
bytecode only there, finds none and writes none, as on a machine whose environment was installed without it.
Prints the machine, then the median wall seconds of each command with and without.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _machine import machine  # noqa: E402


def wall(cmd: list[str], env: dict[str, str], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run(cmd, env=env, check=True, capture_output=True, timeout=900)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    print(machine())
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp) / "run"
        train = [sys.executable, "-m", "gpt2_cli", "train", "--preset", "tiny", "--max-steps", "10"]
        train += ["--warmup-steps", "2", "--eval-batches", "2", "--run-dir", str(run_dir), "--overwrite"]
        subprocess.run(train, check=True, capture_output=True, timeout=900)  # the data prepared, not timed
        commands = {
            "import torch and the trainer": [sys.executable, "-c", "import torch, gpt2_train.trainer"],
            "gpt2 train --preset tiny --max-steps 10": train,
        }
        empty = Path(tmp) / "no-bytecode"
        empty.mkdir()
        base = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
        without = {**base, "PYTHONPYCACHEPREFIX": str(empty)}
        print(f"{'command':42} {'bytecode':>9} {'without':>9}")
        for name, cmd in commands.items():
            print(f"{name:42} {wall(cmd, base, args.repeats):8.2f}s {wall(cmd, without, args.repeats):8.2f}s")


if __name__ == "__main__":
    main()
