"""gpt2_train.distributed.on_main_rank under two gloo ranks: rank 0 alone does the work, and its result, or
the UserError it raised, reaches every rank (none is left waiting)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SCRIPT = """
from gpt2_core.errors import UserError
from gpt2_train.distributed import on_main_rank, setup_distributed, teardown_distributed

env = setup_distributed("cpu")
calls = []

def work(fail):
    calls.append(env.rank)
    if fail:
        raise UserError("--dataset: no shards here")
    return {"data": "ready"}

for fail in (False, True):
    try:
        got = on_main_rank(env, lambda: work(fail))
    except UserError as e:
        got = f"UserError: {e}"
    print(f"rank {env.rank}: {got}", flush=True)
print(f"rank {env.rank} worked {len(calls)} time(s)", flush=True)
teardown_distributed(env)
"""


def test_rank_zeros_result_and_error_reach_every_rank(tmp_path: Path) -> None:
    script = tmp_path / "on_main_rank.py"
    script.write_text(SCRIPT)
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2"]
    r = subprocess.run([*torchrun, str(script)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    lines = [line for line in r.stdout.splitlines() if line.startswith("rank ")]
    for rank in (0, 1):
        mine = [line for line in lines if line.startswith(f"rank {rank}")]
        assert mine == [
            f"rank {rank}: {{'data': 'ready'}}",
            f"rank {rank}: UserError: --dataset: no shards here",
            f"rank {rank} worked {2 if rank == 0 else 0} time(s)",
        ]
