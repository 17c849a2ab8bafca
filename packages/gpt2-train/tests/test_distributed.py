"""gpt2_train.distributed.on_main_rank under two gloo ranks: rank 0 alone does the work, and its result, or
the UserError it raised, reaches every rank (none is left waiting); teardown_distributed then ends every
rank cleanly, after a normal exit or with that error propagating (no rank aborted by gloo).

Each rank writes what it got to a file of its own: both ranks printing to torchrun's shared stdout interleaved
under PYTHONUNBUFFERED=1, where print() writes the text and its newline in two calls, so one rank's line
could end up on the other's ("rank 1: ...rank 0: ...") and the test fail on a loaded machine."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SCRIPT = """
import sys
from pathlib import Path

from gpt2_core.errors import UserError
from gpt2_train.distributed import on_main_rank, setup_distributed, teardown_distributed

env = setup_distributed("cpu")
out = open(Path(sys.argv[1]) / f"rank{env.rank}.txt", "w")
calls = []

def work(fail):
    calls.append(env.rank)
    if fail:
        raise UserError("--dataset: no shards here")
    return {"data": "ready"}

try:
    for fail in (False, True):
        try:
            got = on_main_rank(env, lambda: work(fail))
        except UserError as e:
            got = f"UserError: {e}"
        print(f"rank {env.rank}: {got}", file=out, flush=True)
    print(f"rank {env.rank} worked {len(calls)} time(s)", file=out, flush=True)
    if sys.argv[2:] == ["uncaught"]:
        on_main_rank(env, lambda: work(True))
finally:
    teardown_distributed(env)
"""


def torchrun_script(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    script = tmp_path / "on_main_rank.py"
    script.write_text(SCRIPT)
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2"]
    cmd = [*torchrun, str(script), str(tmp_path), *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300)


def test_rank_zeros_result_and_error_reach_every_rank(tmp_path: Path) -> None:
    r = torchrun_script(tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    for rank in (0, 1):
        mine = (tmp_path / f"rank{rank}.txt").read_text().splitlines()
        assert mine == [
            f"rank {rank}: {{'data': 'ready'}}",
            f"rank {rank}: UserError: --dataset: no shards here",
            f"rank {rank} worked {2 if rank == 0 else 0} time(s)",
        ]


def test_an_error_raised_on_every_rank_aborts_no_rank(tmp_path: Path) -> None:
    r = torchrun_script(tmp_path, "uncaught")
    assert r.returncode != 0
    assert "[rank0]: gpt2_core.errors.UserError: --dataset: no shards here" in r.stderr, r.stderr[-3000:]
    # torchrun may stop rank 1 (SIGTERM) once rank 0 has exited with the error, but gloo aborts neither.
    assert "SIGABRT" not in r.stderr and "terminate called" not in r.stderr, r.stderr[-3000:]
