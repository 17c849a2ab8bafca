"""Checkpoint save time of ``gpt2 train`` (model + AdamW state) vs a plain write of the same bytes.

    uv run python bench/checkpoint.py [--model gpt2] [--repeats 3] [--dir DIR]

Saves with ``gpt2_train.checkpointer.Checkpointer.save`` itself (temp directory, safetensors weights,
optimizer state, fsync, rename, ``latest`` update) and compares with writing one buffer of the same size to
one file and fsyncing it, alternating the two. Target: within 1.5x, so a 60-second cadence costs a GPU run
little more than the disk's own write time.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _machine import machine  # noqa: E402


class Progress:
    """The trainer's counters, as the checkpointer records them."""

    def __init__(self) -> None:
        self.step = 0

    def state_dict(self) -> dict:
        return {"step": self.step, "tokens_seen": 0}

    def load_state_dict(self, state: dict) -> None:
        self.step = state["step"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="gpt2", help="gpt2_core model preset")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--dir", default=None, help="where to write (default: a temporary directory)")
    args = ap.parse_args()

    from gpt2_data.batch_source import BatchSource
    from gpt2_train.checkpointer import Checkpointer, CheckpointParts

    class Position(BatchSource):
        """A data position to record (a loader's is a few numbers); nothing to read."""

        def next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
            raise NotImplementedError

        def state_dict(self) -> dict:
            return {"epoch": 0, "position": 0}

        def load_state_dict(self, state: dict) -> None:
            pass

    from gpt2_train.config import TrainConfig
    from gpt2_train.optimizers import build_optimizer
    from gpt2_train.pretrain import build_model

    cfg = TrainConfig(model=args.model, max_steps=1)
    model = build_model(cfg)
    opt = build_optimizer(model, cfg, torch.device("cpu"))
    for p in model.parameters():  # one step on zero gradients fills AdamW's two moment buffers
        p.grad = torch.zeros_like(p)
    opt.step()
    opt.zero_grad(set_to_none=True)

    root = Path(tempfile.mkdtemp(prefix="ckpt-bench-", dir=args.dir))
    try:
        progress = Progress()
        parts = CheckpointParts(model, opt, Position(), progress, cfg.to_dict())
        ck = Checkpointer(root / "run", keep=1, parts=parts)

        def save_checkpoint() -> None:
            progress.step += 1
            ck.save()

        save_checkpoint()
        total = sum(f.stat().st_size for f in (root / "run" / "latest").iterdir())
        blob = os.urandom(1024) * (total // 1024)

        def plain_write() -> None:
            path = root / "plain.bin"
            with open(path, "wb") as f:
                f.write(blob)
                f.flush()
                os.fsync(f.fileno())
            path.unlink()

        # Alternate the two, so a noisy neighbour on the disk hits both alike.
        times: dict[str, list[float]] = {"checkpoint": [], "plain write": []}
        for r in range(args.repeats):
            order = [("checkpoint", save_checkpoint), ("plain write", plain_write)]
            for name, fn in order if r % 2 == 0 else order[::-1]:
                t0 = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - t0)
    finally:
        shutil.rmtree(root, ignore_errors=True)

    print(f"machine: {machine()}")
    print(f"model {args.model}: {model.num_params() / 1e6:.1f}M params; checkpoint {total / 1e9:.2f} GB")
    med = {k: statistics.median(v) for k, v in times.items()}
    for name, t in times.items():
        print(
            f"{name:>12}: median {med[name]:.2f} s  best {min(t):.2f} s  ({total / med[name] / 1e9:.2f} GB/s)"
        )
    best = min(times["checkpoint"]) / min(times["plain write"])
    print(
        f"ratio checkpoint / plain write: median {med['checkpoint'] / med['plain write']:.2f}x, best {best:.2f}x"
    )


if __name__ == "__main__":
    main()
