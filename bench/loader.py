"""Batch assembly throughput of ``ShardLoader`` (B=16, T=1024 by default), from shards in the page cache.

Synthetic llm.c shards of random tokens are written to a temporary directory first; the timed loop only calls
``next_batch()``. Best of the repeats.

    uv run python bench/loader.py [--batch-size 16] [--seq-len 1024] [--batches 2000]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _machine import machine  # noqa: E402


def main() -> None:
    from gpt2_data.loader import ShardLoader
    from gpt2_data.shards import write_shard

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--seq-len", type=int, default=1024)
    p.add_argument("--batches", type=int, default=2000)
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args()

    print(f"machine: {machine()}")
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as d:
        for i in range(4):
            write_shard(f"{d}/bench_train_{i:06d}.bin", rng.integers(0, 50257, 10_000_000, dtype=np.uint16))
        loader = ShardLoader(d, "train", batch_size=args.batch_size, seq_len=args.seq_len, seed=0)
        for _ in range(100):  # warm-up: open the memory maps, fault the pages in
            loader.next_batch()
        best = float("inf")
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            for _ in range(args.batches):
                loader.next_batch()
            best = min(best, time.perf_counter() - t0)
    tokens = args.batches * args.batch_size * args.seq_len
    print(
        f"B={args.batch_size} T={args.seq_len}: {tokens / best / 1e6:.1f}M tokens/s ({best / args.batches * 1e6:.0f} us/batch)"
    )


if __name__ == "__main__":
    main()
