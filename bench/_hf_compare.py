"""Shared by bench/generate.py and bench/train_step.py: machine description, interleaved timing, the HF twin,
the CPU matmul route and the re-run under ``ONEDNN_MAX_CPU_ISA=AVX2``."""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable

import torch
from _machine import machine  # noqa: F401 (re-exported for the scripts)

ISA_ENV = "ONEDNN_MAX_CPU_ISA"


def add_route_arguments(ap: argparse.ArgumentParser) -> None:
    """``--cpu-matmul`` (routes for our model, one run each) and ``--onednn-isa``."""
    ap.add_argument(
        "--cpu-matmul",
        nargs="+",
        default=["auto"],
        choices=["auto", "onednn", "torch"],
        help="routes of our fp32 CPU products, one run each (auto: what gpt2 train/generate would pick)",
    )
    ap.add_argument(
        "--onednn-isa",
        default="both",
        choices=["both", "native", "AVX2"],
        help=f"both: this CPU's figures, then the same in a child process with {ISA_ENV}=AVX2 (oneDNN "
        "limited as on a CPU without AVX-512; MKL runs AVX2 on AMD CPUs anyway)",
    )


def enter_isa(args: argparse.Namespace) -> None:
    """Start of a bench: under ``--onednn-isa AVX2`` become a process with ``ONEDNN_MAX_CPU_ISA=AVX2`` (oneDNN
    reads it once); keep ``auto``'s measurements out of the user's cache, so each run measures afresh."""
    if args.onednn_isa == "AVX2" and os.environ.get(ISA_ENV) != "AVX2":
        os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, ISA_ENV: "AVX2"})
    os.environ["GPT2_CACHE_DIR"] = tempfile.mkdtemp(prefix="gpt2-bench-cache-")
    print(f"{ISA_ENV}: {os.environ.get(ISA_ENV, 'unset (oneDNN uses every instruction set of this CPU)')}")


def rerun_under_avx2(args: argparse.Namespace) -> None:
    """After the native figures of ``--onednn-isa both``: the same command in a child with ``AVX2``."""
    if args.onednn_isa != "both":
        return
    print(f"\n=== the same, {ISA_ENV}=AVX2 (a child process) ===", flush=True)
    env = {**os.environ, ISA_ENV: "AVX2"}
    subprocess.run([sys.executable, *sys.argv, "--onednn-isa", "AVX2"], env=env, check=True)


def route(model: torch.nn.Module, mode: str, **kw: object) -> str:
    """Apply CPU matmul route ``mode`` to ``model`` (gpt2_core.cpu_matmul.apply) and describe it, with the
    seconds ``auto``'s timing took."""
    from gpt2_core import cpu_matmul

    start = time.perf_counter()
    choice = cpu_matmul.apply(model, mode, **kw)  # type: ignore[arg-type]
    return f"cpu matmul {mode}: {choice}, decided in {time.perf_counter() - start:.2f} s"


def interleaved(
    fns: dict[str, Callable[[], None]], repeats: int
) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Wall and CPU seconds per call of each function, alternating so a noisy neighbour hits all alike.

    CPU time (all this process's threads) is the figure to trust on a shared machine: time spent waiting
    for a core does not count in it.
    """
    wall: dict[str, list[float]] = {name: [] for name in fns}
    cpu: dict[str, list[float]] = {name: [] for name in fns}
    for r in range(repeats):
        order = list(fns.items()) if r % 2 == 0 else list(reversed(fns.items()))
        for name, fn in order:
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            t0, c0 = time.perf_counter(), time.process_time()
            fn()
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            wall[name].append(time.perf_counter() - t0)
            cpu[name].append(time.process_time() - c0)
    return wall, cpu


def report(wall: dict[str, list[float]], cpu: dict[str, list[float]], work: float, unit: str) -> None:
    """Print best/median throughput by wall clock and by CPU time, and ours/transformers ratios."""
    for label, times in (("wall clock", wall), ("CPU time", cpu)):
        res = {name: summary(t, work) for name, t in times.items()}
        print(f"  by {label} ({unit}, best / median):")
        for name, (b, m) in res.items():
            print(f"    {name:13s} {b:9.1f} / {m:9.1f}")
        ours, ref = res["ours"], res["transformers"]
        print(f"    ratio ours/transformers: best {ours[0] / ref[0]:.2f}x, median {ours[1] / ref[1]:.2f}x")


def summary(times: list[float], work: float) -> tuple[float, float]:
    """(best, median) throughput for ``work`` units per call."""
    return work / min(times), work / statistics.median(times)


def hf_twin(model: torch.nn.Module):  # noqa: ANN201 (transformers is imported lazily)
    """A transformers ``GPT2LMHeadModel`` holding exactly ``model``'s weights (Conv1D = our Linear, transposed)."""
    from gpt2_core.weights import CONV1D_SUFFIXES, model_state_dict
    from transformers import GPT2Config, GPT2LMHeadModel

    c = model.config
    hf = GPT2LMHeadModel(
        GPT2Config(
            vocab_size=c.vocab_size,
            n_positions=c.block_size,
            n_embd=c.n_embd,
            n_layer=c.n_layer,
            n_head=c.n_head,
            resid_pdrop=0.0,
            embd_pdrop=0.0,
            attn_pdrop=0.0,
            pad_token_id=50256,
        )
    )
    sd = {k: v.t() if k.endswith(CONV1D_SUFFIXES) else v for k, v in model_state_dict(model).items()}
    sd["transformer.wte.weight"] = sd["transformer.wte.weight"][: c.vocab_size]  # drop vocab padding rows
    missing, unexpected = hf.load_state_dict(sd, strict=False)
    assert not unexpected and all(k == "lm_head.weight" or k.endswith(".attn.bias") for k in missing), (
        missing,
        unexpected,
    )
    hf.tie_weights()
    return hf
