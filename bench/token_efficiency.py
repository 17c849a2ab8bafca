"""Tokens to reach AdamW's val loss: AdamW + cosine (build-nanogpt's recipe) against Muon + WSD, through
`gpt2 train` itself, on the same model, data, batch, token budget and data order.

    uv run python bench/token_efficiency.py --scale tiny [--jobs 2] [--out runs/token-efficiency]
    uv run python bench/token_efficiency.py --scale wide --adamw-lr 2e-3 --muon-lr 0.02

Each run is one `gpt2 train` process with OMP_NUM_THREADS=1 (``--jobs`` of them at once), logging val loss
every ``--eval-every`` steps to RUN/metrics.jsonl. Figures are in tokens, so they do not depend on how busy
the machine is. Scales:

- ``tiny``: the `tiny` preset (4 x 128, Shakespeare, 800 steps of 512 tokens) with a small learning-rate
  sweep for each optimizer, three values each (the same effort for both): AdamW's --lr, Muon's --muon-lr
  (its AdamW part at tiny's --lr);
- ``wide``: the same data and batch on a 6 x 384 model (6 heads), one run per recipe at the learning rates
  given (the best of the tiny sweep carried over).

Prints each run's val loss against tokens, its final val loss, and the fraction of the reference's tokens
(the AdamW + cosine run with the lowest final val loss) at which it first reaches the reference's final val
loss, interpolating linearly between evaluations; ``-`` when it never does. A run's own curve is used:
a Muon + WSD run planned for the whole budget, read part-way (the question asked by the modded-nanogpt
speedrun: how many tokens until the loss is GPT-2's).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _machine import machine  # noqa: E402

WIDE_TOML = """[train]
model_overrides = {n_layer = 6, n_head = 6, n_embd = 384}
"""


@dataclass
class Run:
    name: str
    recipe: str
    """adamw+cosine or muon+wsd."""
    flags: list[str]
    curve: list[tuple[int, float]] = field(default_factory=list)
    """(tokens, val loss) at each evaluation."""
    speed: float = 0.0
    """Median logged training tokens/s (one thread; depends on the machine's load: compare runs side by side)."""


def runs_for(args: argparse.Namespace) -> list[Run]:
    common = ["--preset", "tiny", "--eval-every", str(args.eval_every), "--max-steps", str(args.steps)]
    common += ["--eval-batches", str(args.eval_batches)]
    if args.scale == "wide":
        common += ["--config", str(args.out / "wide.toml")]
    adamw = ["--optimizer", "adamw", "--lr-schedule", "cosine"]
    muon = ["--optimizer", "muon", "--lr-schedule", "wsd", "--decay-fraction", str(args.decay_fraction)]
    muon += ["--decay-shape", args.decay_shape]
    runs = []
    for lr in args.adamw_lr:
        runs.append(
            Run(f"{args.scale}-adamw-cosine-lr{lr:g}", "adamw+cosine", [*common, *adamw, "--lr", f"{lr}"])
        )
    for lr in args.muon_lr:
        runs.append(
            Run(f"{args.scale}-muon-wsd-mlr{lr:g}", "muon+wsd", [*common, *muon, "--muon-lr", f"{lr}"])
        )
    return runs


def train(run: Run, out: Path) -> Run:
    run_dir = out / run.name
    metrics = run_dir / "metrics.jsonl"
    done = run_dir / "done"
    if not done.exists():
        cmd = [sys.executable, "-m", "gpt2_cli", "train", *run.flags, "--run-dir", str(run_dir)]
        cmd += ["--overwrite", "--logger", "jsonl", "--checkpoint-every-seconds", "0", "--keep", "1"]
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        if metrics.exists():
            metrics.unlink()
        with (out / f"{run.name}.log").open("w") as log:
            subprocess.run(cmd, check=True, env=env, stdout=log, stderr=subprocess.STDOUT)
        done.touch()
    tokens_per_step = 512
    speeds = []
    for line in metrics.read_text().splitlines():
        row = json.loads(line)
        if "val/loss" in row:
            run.curve.append((row["step"] * tokens_per_step, row["val/loss"]))
        if "train/tokens_per_sec" in row:
            speeds.append(row["train/tokens_per_sec"])
    run.speed = statistics.median(speeds)
    return run


def tokens_to_reach(curve: list[tuple[int, float]], target: float) -> float | None:
    """Tokens at which ``curve`` first reaches ``target`` (linear between evaluations); None if never."""
    prev = None
    for tokens, loss in curve:
        if loss <= target:
            if prev is None:
                return float(tokens)
            t0, l0 = prev
            return t0 + (l0 - target) / (l0 - loss) * (tokens - t0)
        prev = (tokens, loss)
    return None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scale", choices=("tiny", "wide"), default="tiny")
    ap.add_argument("--out", type=Path, default=Path("runs/token-efficiency"))
    ap.add_argument("--jobs", type=int, default=2, help="Runs at once (each one thread).")
    ap.add_argument("--steps", type=int, default=800, help="Optimizer steps of 512 tokens per run.")
    ap.add_argument("--eval-every", type=int, default=50)
    ap.add_argument("--eval-batches", type=int, default=32, help="Micro-batches of 4 x 128 per val loss.")
    ap.add_argument("--adamw-lr", type=float, nargs="+", default=[1e-3, 2e-3, 4e-3])
    ap.add_argument("--muon-lr", type=float, nargs="+", default=[0.01, 0.02, 0.04])
    ap.add_argument("--decay-fraction", type=float, default=0.4)
    ap.add_argument("--decay-shape", default="linear")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "wide.toml").write_text(WIDE_TOML)
    runs = runs_for(args)
    with ThreadPoolExecutor(args.jobs) as pool:
        runs = list(pool.map(lambda r: train(r, args.out), runs))

    print(f"machine: {machine()}")
    print(
        f"scale {args.scale}: {args.steps} steps x 512 tokens, val loss every {args.eval_every} steps "
        f"({args.eval_batches} x 512 tokens)"
    )
    ref = min((r for r in runs if r.recipe == "adamw+cosine"), key=lambda r: r.curve[-1][1])
    target, budget = ref.curve[-1][1], ref.curve[-1][0]
    print(f"reference: {ref.name}, final val loss {target:.4f} at {budget:,} tokens")
    print(f"{'run':32} {'final val':>9} {'tokens to ref':>14} {'fraction':>8} {'tok/s':>7}")
    for r in runs:
        reach = tokens_to_reach(r.curve, target)
        frac = f"{reach / budget:8.2f}" if reach is not None else f"{'-':>8}"
        reach_s = f"{reach:14,.0f}" if reach is not None else f"{'-':>14}"
        print(f"{r.name:32} {r.curve[-1][1]:9.4f} {reach_s} {frac} {r.speed:7.0f}")
    print("\nval loss against tokens:")
    steps = [t for t, _ in runs[0].curve]
    print(f"{'tokens':>8} " + " ".join(f"{r.name[-16:]:>16}" for r in runs))
    for i, t in enumerate(steps):
        print(f"{t:8,} " + " ".join(f"{r.curve[i][1]:16.4f}" if i < len(r.curve) else " " * 16 for r in runs))


if __name__ == "__main__":
    main()
