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
loss, interpolating linearly between evaluations (``-`` when it never does): a run planned for the whole
budget, read part-way. That understates a WSD run, whose loss falls mostly in its decay at the end; so the
best Muon + WSD setting also runs planned for ``--shorter`` fractions of the budget (its decay at the end of
each), and the fraction a planned run needs is interpolated between those runs' final val losses (the
question the modded-nanogpt speedrun asks: how many tokens does a run need to reach the target loss).

``--variant NAME="FLAGS"`` (repeatable) runs that best Muon + WSD setting with FLAGS added, planned for each
``--variant-fractions`` fraction of the budget (0.4 by default): one technique on its own
(``momentum-warmup="--muon-momentum-warmup-steps 100"``), or several together; ``{out}`` in FLAGS is ``--out``,
where ``wide-untied.toml`` (the wide model with an untied head) is written. Each variant's final val losses are
printed beside the plain setting's, budget by budget. ``--planned-muon-lr`` runs the shorter and variant runs at
that Muon lr instead of the sweep's best (the name of each run says its lr).
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
WIDE_UNTIED_TOML = """[train]
model_overrides = {n_layer = 6, n_head = 6, n_embd = 384, tie_word_embeddings = false}
"""


@dataclass
class Run:
    name: str
    recipe: str
    """adamw+cosine or muon+wsd."""
    flags: list[str]
    curve: list[tuple[int, float]] = field(default_factory=list)
    """(tokens, val loss) at each evaluation: the tokens trained on (fewer than 512 a step in a batch warm-up)."""
    steps: int = 0
    """Steps at the last evaluation."""
    speed: float = 0.0
    """Median logged training tokens/s (one thread; depends on the machine's load: compare runs side by side)."""


def flags_for(args: argparse.Namespace, recipe: str, lr: float, steps: int) -> list[str]:
    """`gpt2 train` flags of one run: ``recipe`` at peak ``lr`` (AdamW's --lr, or Muon's --muon-lr)."""
    flags = ["--preset", "tiny", "--eval-every", str(args.eval_every), "--max-steps", str(steps)]
    flags += ["--eval-batches", str(args.eval_batches)]
    if args.scale == "wide":
        flags += ["--config", str(args.out / "wide.toml")]
    if recipe == "adamw+cosine":
        return [*flags, "--optimizer", "adamw", "--lr-schedule", "cosine", "--lr", f"{lr}"]
    flags += ["--optimizer", "muon", "--lr-schedule", "wsd", "--decay-fraction", str(args.decay_fraction)]
    return [*flags, "--decay-shape", args.decay_shape, "--muon-lr", f"{lr}"]


def runs_for(args: argparse.Namespace) -> list[Run]:
    runs = []
    for lr in args.adamw_lr:
        flags = flags_for(args, "adamw+cosine", lr, args.steps)
        runs.append(Run(f"{args.scale}-adamw-cosine-lr{lr:g}", "adamw+cosine", flags))
    for lr in args.muon_lr:
        flags = flags_for(args, "muon+wsd", lr, args.steps)
        runs.append(Run(f"{args.scale}-muon-wsd-mlr{lr:g}", "muon+wsd", flags))
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
    speeds, tokens = [], {0: 0}
    for line in metrics.read_text().splitlines():
        row = json.loads(line)
        if "train/tokens" in row:  # every step's (the bench logs every step); 512 a step before it was logged
            tokens[row["step"]] = int(row["train/tokens"])
        if "val/loss" in row:
            run.curve.append((tokens.get(row["step"], row["step"] * 512), row["val/loss"]))
            run.steps = row["step"]
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
    ap.add_argument("--adamw-lr", type=float, nargs="+", default=[5e-4, 1e-3, 2e-3])
    ap.add_argument("--muon-lr", type=float, nargs="+", default=[0.005, 0.01, 0.02])
    ap.add_argument("--decay-fraction", type=float, default=0.4)
    ap.add_argument("--decay-shape", default="linear")
    ap.add_argument(
        "--shorter",
        type=float,
        nargs="*",
        default=[0.3, 0.4, 0.5, 0.6],
        help="Also run the best Muon + WSD setting planned for these fractions of the budget.",
    )
    ap.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar='NAME="FLAGS"',
        help="The best Muon + WSD setting with these gpt2 train flags added, at each --variant-fractions budget.",
    )
    ap.add_argument("--variant-fractions", type=float, nargs="+", default=[0.4])
    ap.add_argument(
        "--planned-muon-lr", type=float, help="Muon lr of the shorter and variant runs (default: the best)"
    )
    args = ap.parse_args()
    variants = dict(v.split("=", 1) for v in args.variant)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "wide.toml").write_text(WIDE_TOML)
    (args.out / "wide-untied.toml").write_text(WIDE_UNTIED_TOML)
    runs = runs_for(args)
    with ThreadPoolExecutor(args.jobs) as pool:
        runs = list(pool.map(lambda r: train(r, args.out), runs))

    best_muon = min((r for r in runs if r.recipe == "muon+wsd"), key=lambda r: r.curve[-1][1])
    if args.planned_muon_lr is not None:
        best_muon = next(r for r in runs if r.name == f"{args.scale}-muon-wsd-mlr{args.planned_muon_lr:g}")
    lr = float(best_muon.flags[best_muon.flags.index("--muon-lr") + 1])
    shorter = []
    for frac in args.shorter:
        steps = round(frac * args.steps)
        name = f"{best_muon.name}-steps{steps}"
        shorter.append(Run(name, "muon+wsd", flags_for(args, "muon+wsd", lr, steps)))
    for variant, extra in variants.items():
        for frac in args.variant_fractions:
            steps = round(frac * args.steps)
            name = f"{best_muon.name}-{variant}-steps{steps}"
            flags = extra.format(out=args.out).split()
            shorter.append(Run(name, variant, flags_for(args, "muon+wsd", lr, steps) + flags))
    with ThreadPoolExecutor(args.jobs) as pool:
        shorter = list(pool.map(lambda r: train(r, args.out), shorter))

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
    print(f"\n{best_muon.name} planned for fewer tokens (its WSD decay at the end of each budget):")
    plain = [r for r in shorter if r.recipe == "muon+wsd"]
    budgets = [(r.curve[-1][0], r.curve[-1][1]) for r in plain] + [(budget, best_muon.curve[-1][1])]
    for tokens, final in sorted(budgets):
        print(
            f"  {tokens:9,} tokens ({tokens / budget:.2f}): final val {final:.4f}  {'<=' if final <= target else '>'} {target:.4f}"
        )
    reach = tokens_to_reach(sorted(budgets), target)
    how = "the shortest budget run: at most this" if reach == min(budgets)[0] else "interpolated"
    if reach is not None:
        print(f"  fraction of the reference's tokens a planned run needs: {reach / budget:.2f} ({how})")
    if variants:
        print(
            f"\nvariants of {best_muon.name}: final val loss planned for each budget (plain: no flags added)"
        )
        fracs = sorted({*args.shorter, *args.variant_fractions, 1.0})
        print(f"{'variant':24} " + " ".join(f"{f:>8.2f}" for f in fracs) + "   flags")
        finals = {(r.recipe, r.steps): r.curve[-1] for r in [*shorter, best_muon]}
        for variant, extra in [("muon+wsd", ""), *variants.items()]:
            row = [finals.get((variant, round(f * args.steps))) for f in fracs]
            cells = " ".join(f"{v[1]:8.4f}" if v is not None else f"{'-':>8}" for v in row)
            fewer = [
                f"{v[0]:,}"
                for f, v in zip(fracs, row)
                if v is not None and v[0] != round(f * args.steps) * 512
            ]
            note = f" (trained on {', '.join(fewer)} tokens)" if fewer else ""
            print(f"{'plain' if variant == 'muon+wsd' else variant:24} {cells}   {extra}{note}")
        print(f"(reference: {ref.name}, {target:.4f})")
    print("\nval loss against tokens:")
    steps = [t for t, _ in runs[0].curve]
    print(f"{'tokens':>8} " + " ".join(f"{r.name[-16:]:>16}" for r in runs))
    for i, t in enumerate(steps):
        print(f"{t:8,} " + " ".join(f"{r.curve[i][1]:16.4f}" if i < len(r.curve) else " " * 16 for r in runs))


if __name__ == "__main__":
    main()
