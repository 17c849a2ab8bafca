"""Tokenization throughput of ``prepare`` on the built-in corpus, against the ceiling.

The ceiling is tiktoken's ``encode_ordinary_batch`` on the same documents, already in memory, with the same
number of threads and no I/O. ``prepare`` runs in a child process per repeat (so its peak RSS is its own),
reading the corpus, tokenizing, and writing shards and manifest to a temporary directory. Runs alternate
between the three measurements so a noisy neighbour slows them alike; the best of the repeats is reported.

    uv run python bench/data_prepare.py [--workers N] [--repeats 3] [--no-include-tests]

By default the corpus includes the standard library's test suites (python-stdlib --include-tests, 15.5M
tokens here): a run of the smaller default corpus (5.8M tokens) lasts ~0.4 s with 2 workers, of which ~80 ms
is start-up and final writes that no worker count shortens, so it measures those more than tokenization.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _machine import machine  # noqa: E402

CHILD = """
import json, resource, sys, time
from gpt2_core.tokenizer import Tokenizer
from gpt2_data.prepare import prepare
from gpt2_data.datasets import dataset_registry
Tokenizer(), dataset_registry()  # BPE tables and plugin loading are one-off costs (the CLI pays them before), not throughput
out, workers, include_tests, shard_tokens = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "1", int(sys.argv[4])
def cpu():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime
def peak_mib():
    # VmHWM starts afresh at exec; ru_maxrss would carry over the (bigger) parent's peak from the fork.
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
base = peak_mib()
t0, c0 = time.perf_counter(), cpu()
m = prepare("python-stdlib", out, options={"include_tests": include_tests}, shard_tokens=shard_tokens,
            val_tokens=0.05, workers=workers, overwrite=True, progress=False)
seconds, cpu_seconds = time.perf_counter() - t0, cpu() - c0
tokens = m["tokens"]["train"] + m["tokens"]["val"]
print(json.dumps({"seconds": seconds, "cpu": cpu_seconds, "tokens": tokens, "base_mib": base, "rss_mib": peak_mib()}))
"""


def run_prepare(workers: int, include_tests: bool, shard_tokens: int) -> dict:
    with tempfile.TemporaryDirectory() as out:
        args = [out, str(workers), "1" if include_tests else "0", str(shard_tokens)]
        r = subprocess.run([sys.executable, "-c", CHILD, *args], capture_output=True, text=True, check=True)
    return json.loads(r.stdout.strip().splitlines()[-1])


def cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def main() -> None:
    from gpt2_core.tokenizer import Tokenizer
    from gpt2_data.datasets import build_dataset
    from gpt2_data.pipeline import default_workers

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workers", type=int, default=default_workers())
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument(
        "--include-tests",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="the bigger corpus, with the stdlib's test suites (--no-include-tests: gpt2 train's default corpus)",
    )
    p.add_argument("--shard-tokens", type=int, default=100_000_000)
    args = p.parse_args()

    print(f"machine: {machine()}; {args.workers} workers")
    texts = list(build_dataset("python-stdlib", {"include_tests": args.include_tests}).documents())
    tok = Tokenizer()
    best = {k: float("inf") for k in ("ceiling", "prepare", "ceiling_1", "prepare_1")}
    cpu = {
        "ceiling": float("inf"),
        "prepare": float("inf"),
    }  # CPU seconds of all threads: robust to neighbours
    tokens, rss, base = 0, 0.0, 0.0
    for r in range(args.repeats):
        t0, c0 = time.perf_counter(), cpu_seconds()
        ids = tok.encode_batch(texts, num_threads=args.workers)
        best["ceiling"] = min(best["ceiling"], time.perf_counter() - t0)
        cpu["ceiling"] = min(cpu["ceiling"], cpu_seconds() - c0)
        tokens = sum(map(len, ids)) + len(texts)  # + one <|endoftext|> per document
        res = run_prepare(args.workers, args.include_tests, args.shard_tokens)
        assert res["tokens"] == tokens, (res["tokens"], tokens)
        best["prepare"] = min(best["prepare"], res["seconds"])
        cpu["prepare"] = min(cpu["prepare"], res["cpu"])
        rss, base = max(rss, res["rss_mib"]), res["base_mib"]
        t0 = time.perf_counter()
        tok.encode_batch(texts, num_threads=1)
        best["ceiling_1"] = min(best["ceiling_1"], time.perf_counter() - t0)
        one = run_prepare(1, args.include_tests, args.shard_tokens)
        best["prepare_1"] = min(best["prepare_1"], one["seconds"])
        rates = ", ".join(f"{k} {tokens / v / 1e6:.2f}M tok/s" for k, v in best.items())
        print(f"  best after repeat {r + 1}: {rates}")
    rate = {k: tokens / v for k, v in best.items()}
    print(f"corpus: python-stdlib ({len(texts)} documents, {tokens:,} tokens)")
    print(f"ceiling (encode_ordinary_batch, {args.workers} threads): {rate['ceiling'] / 1e6:.2f}M tokens/s")
    print(f"prepare ({args.workers} workers): {rate['prepare'] / 1e6:.2f}M tokens/s")
    print(f"prepare / ceiling: {rate['prepare'] / rate['ceiling']:.0%}")
    print(f"prepare (1 worker): {rate['prepare_1'] / 1e6:.2f}M tokens/s")
    print(f"speedup of {args.workers} workers over 1: {rate['prepare'] / rate['prepare_1']:.2f}x")
    print(
        f"the ceiling's own speedup, {args.workers} threads over 1 "
        f"({rate['ceiling_1'] / 1e6:.2f}M tokens/s): {rate['ceiling'] / rate['ceiling_1']:.2f}x"
    )
    print(
        f"CPU time: ceiling {cpu['ceiling']:.2f} s, prepare {cpu['prepare']:.2f} s "
        f"(prepare's CPU efficiency vs the ceiling: {cpu['ceiling'] / cpu['prepare']:.0%})"
    )
    print(
        f"peak RSS of prepare (shard_tokens={args.shard_tokens:,}): {rss:.0f} MiB, "
        f"of which {base:.0f} MiB before prepare started (interpreter, datasets, BPE tables)"
    )


if __name__ == "__main__":
    main()
