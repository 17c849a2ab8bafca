"""The GPU acceptance run: every figure that says whether ``gpt2 train`` is fit for a single H200, and the
GPU tests, in one go.

    python bench/gpu_acceptance.py run --out DIR [--dry-run] [--work DIR] [--deadline SECONDS]

``bench/gpu_acceptance.sh`` sets up the bare GPU machine and calls ``run``; ``--dry-run`` runs the same steps
on CPU with tiny shapes and a few steps, so the whole script is proven without a GPU. Each step runs in its
own process under its own time budget (clipped to what is left of ``--deadline``): a failure, a hang or an
out-of-memory in one is recorded and the next still runs. Steps, in the order they run:

- ``data``: ``gpt2 data prepare`` of the built-in python-stdlib corpus (offline): the tokens of every step.
- ``tests`` (1, with the checks behind 4 and 5), first, so that the deadline never clips it: ``pytest -m cuda``
  over the test files that hold ``cuda`` tests, which are the pass/fail checks of a GPU:
  a run SIGKILLed after a checkpoint and resumed follows the uninterrupted one
  (``tests/test_resume_cuda.py``), gpt2-xl trains on one GPU and ``--fp8`` learns
  (``packages/gpt2-train/tests/test_accel.py``); then the model and generation tests with torch's default
  device set to the GPU (``pytest --torch-device``).
- ``bench`` (2): the 124M step as ``gpt2 train`` builds it (bf16 autocast, compiled, fused AdamW; micro
  batches 16 and 32 x 1024), timed over 20 steps after 5 of warm-up, against transformers'
  ``GPT2LMHeadModel`` (sdpa, bf16 autocast, compiled, the same AdamW) on the same batches; tokens/s, MFU
  against the device's dense bf16 peak (``gpt2_train.mfu``: 989 TFLOP/s for an H200), peak memory.
- ``e2e`` (3): ``gpt2 train --preset gpt2-124m-fineweb`` for 100 steps at the larger micro batch (no gradient
  accumulation, as the bare step), with logging every 10 steps, val loss and a checkpoint at step 50; its
  logged tokens/s against the bare step's.
- ``speedrun`` (6): the same 100 steps with ``--preset gpt2-124m-speedrun`` (Muon + WSD): its logged tokens/s
  against ``e2e``'s (AdamW), the cost of Muon's Newton-Schulz iterations in a real step.
- ``xl`` (4): gpt2-xl's step (activation checkpointing only if the plain one runs out of memory).
- ``fp8`` (5): ``--fp8`` (torchao) for 124M, and for xl while time is left: speed, and losses over the same
  steps and batches as bf16 from the same initial weights.

This script measures; what must hold on a GPU is checked by those tests, which it runs and counts. The speed
figures are printed against their targets. ``DIR/figures.json`` (rewritten after every step) holds each
step's status, seconds and figures, and the targets; ``DIR/acceptance.log`` holds everything the steps
printed. Runs, data and per-step figures live in ``--work`` (a temporary folder by default).
"""

from __future__ import annotations

import argparse
import datetime
import functools
import json
import math
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BENCH = Path(__file__).resolve().parent
H200_PEAK = 989e12  # dense bf16 FLOP/s, NVIDIA's H200 datasheet; the MFU figures use gpt2_train.mfu's table


@dataclass
class Plan:
    """Shapes, step counts and time budgets (seconds) of one acceptance run."""

    model: str = "gpt2"
    seq_len: int = 1024
    micros: tuple[int, ...] = (16, 32)
    steps: int = 20
    warmup: int = 5
    compile: bool = True
    xl_model: str = "gpt2-xl"
    xl_micro: int = 8
    data_tokens: int = 5_000_000
    val_tokens: int = 1_000_000
    train_steps: int = 100
    checkpoint_step: int = 50
    log_every: int = 10
    eval_batches: int = 20
    # Ceilings per step; together above the deadline, which clips the last steps (fp8 gets what is left).
    budgets: dict[str, float] = field(
        default_factory=lambda: {
            "data": 30,
            "bench": 150,
            "e2e": 70,
            "speedrun": 60,
            "xl": 120,
            "fp8": 150,
            "tests": 165,
        }
    )
    deadline: float = 450.0
    device: str = "cuda"


# CPU: tiny models, a few steps; "tiny" stands in for gpt2-xl (whose AdamW state alone is 18 GiB).
DRY = Plan(
    model="nano",
    seq_len=64,
    micros=(2, 4),
    steps=3,
    warmup=1,
    compile=False,
    xl_model="tiny",
    xl_micro=2,
    data_tokens=200_000,
    val_tokens=20_000,
    train_steps=12,
    checkpoint_step=6,
    log_every=2,
    eval_batches=2,
    budgets={"data": 60, "bench": 150, "e2e": 150, "speedrun": 150, "xl": 120, "fp8": 120, "tests": 300},
    deadline=1200.0,
    device="cpu",
)
Save = Callable[[dict[str, Any]], None]
"""What a step calls with its figures so far, so a timeout keeps them."""
# fp8 (opt-in) last: it takes what time is left, xl included only when enough is.
STEPS = ("data", "tests", "bench", "e2e", "speedrun", "xl", "fp8")
NUMBERS = {"tests": 1, "bench": 2, "e2e": 3, "xl": 4, "fp8": 5, "speedrun": 6}


def plan_for(dry_run: bool) -> Plan:
    return DRY if dry_run else Plan()


# --- the steps (each runs in its own process) --------------------------------------------------------


def data_dir(work: Path) -> Path:
    return work / "data"


def step_data(plan: Plan, work: Path, budget: float, save: Save) -> dict[str, Any]:
    """Tokenize the interpreter's own standard library (offline) into train and val shards."""
    out = data_dir(work)
    cmd = [
        *gpt2_command(),
        "data",
        "prepare",
        "--out",
        str(out),
        "--max-tokens",
        str(plan.data_tokens),
        "--val-tokens",
        str(plan.val_tokens),
        "--shard-tokens",
        str(plan.data_tokens),
    ]
    run_logged(cmd)
    manifest = json.loads((out / "manifest.json").read_text())
    return {
        "dir": str(out),
        "dataset": manifest["dataset"],
        "shards": [(s["name"], s["tokens"]) for s in manifest["shards"]],
    }


def batches(work: Path, micro: int, seq_len: int, vocab: int):
    """The prepared train shards from their start (every call the same batches), random tokens without."""
    from train_throughput import RandomTokens

    if (data_dir(work) / "manifest.json").is_file():
        from gpt2_data.loader import ShardLoader

        return ShardLoader(data_dir(work), batch_size=micro, seq_len=seq_len, seed=0), "python-stdlib shards"
    return RandomTokens(micro, seq_len, vocab), "random tokens (data step failed)"


def measure(
    plan: Plan, work: Path, model_name: str, micro: int, label: str, **flags: object
) -> dict[str, Any]:
    """One of our steps as ``gpt2 train`` builds it: tokens/s, MFU, peak memory and every step's loss."""
    import torch
    from train_gpu import bind, free, ours_step, throughput, timed

    device = torch.device(plan.device)
    free()
    step, model = ours_step(shape_args(plan), model_name, micro, device, **flags)
    source, tokens = batches(work, micro, plan.seq_len, model.config.vocab_size)
    losses: list[float] = []
    sec = timed(bind(step, source), plan.steps, plan.warmup, device, losses)
    fig = {"label": label, "model": model_name, "micro": micro, "seq_len": plan.seq_len, "tokens": tokens}
    fig |= throughput(model, micro, sec, plan.seq_len, device) | {"losses": losses}
    print_figure(fig)
    del step, model
    return fig


def measure_hf(plan: Plan, work: Path, micro: int) -> dict[str, Any]:
    """transformers' GPT-2 of the same shape on the same batches (train_gpu.hf_step)."""
    import torch
    from gpt2_core import GPT, get_preset
    from train_gpu import free, hf_step, throughput, timed

    device = torch.device(plan.device)
    free()
    source, tokens = batches(work, micro, plan.seq_len, 50257)
    losses: list[float] = []
    sec = timed(hf_step(micro, shape_args(plan), device, source), plan.steps, plan.warmup, device, losses)
    with torch.device("meta"):
        shape = GPT(get_preset(plan.model))  # transformers' model: the unpadded vocab
    fig = {"label": "transformers", "model": plan.model, "micro": micro, "seq_len": plan.seq_len}
    fig |= {"tokens": tokens} | throughput(shape, micro, sec, plan.seq_len, device) | {"losses": losses}
    print_figure(fig)
    return fig


def step_bench(plan: Plan, work: Path, budget: float, save: Save) -> dict[str, Any]:
    out: dict[str, Any] = {"peak_flops_reference": H200_PEAK}
    for micro in plan.micros:
        for who in ("ours", "transformers"):
            key = f"{who}_micro{micro}"
            out[key] = guarded(
                lambda who=who, micro=micro: (
                    measure(plan, work, plan.model, micro, "ours")
                    if who == "ours"
                    else measure_hf(plan, work, micro)
                )
            )
            save(out)
        ours, theirs = out[f"ours_micro{micro}"], out[f"transformers_micro{micro}"]
        if "tokens_per_s" in ours and "tokens_per_s" in theirs:
            out[f"ratio_micro{micro}"] = ours["tokens_per_s"] / theirs["tokens_per_s"]
    return out


def train_command(
    plan: Plan, work: Path, run_dir: Path, *extra: str, preset: str = "gpt2-124m-fineweb"
) -> list[str]:
    """``gpt2 train --preset PRESET`` shortened to ``plan.train_steps`` steps on the prepared data.

    One micro batch per step (the bare step's shape), warm-up 20 steps so the losses move, a checkpoint and a
    val loss every ``plan.checkpoint_step`` steps, no HellaSwag (it downloads its data).
    """
    micro = plan.micros[-1]
    cmd = [
        *gpt2_command(),
        "train",
        "--preset",
        preset,
        "--data-dir",
        str(data_dir(work)),
        "--run-dir",
        str(run_dir),
        "--max-steps",
        str(plan.train_steps),
        "--micro-batch",
        str(micro),
        "--seq-len",
        str(plan.seq_len),
        "--total-batch-tokens",
        str(micro * plan.seq_len),
        "--warmup-steps",
        str(max(1, plan.train_steps // 5)),
        "--log-every",
        str(plan.log_every),
        "--eval-every",
        str(plan.checkpoint_step),
        "--eval-batches",
        str(plan.eval_batches),
        "--sample-every",
        str(plan.checkpoint_step),
        "--hellaswag-every",
        "0",
        "--checkpoint-every-steps",
        str(plan.checkpoint_step),
        "--checkpoint-every-seconds",
        "0",
    ]
    if plan.model != "gpt2":
        cmd += ["--model", plan.model]
    return cmd + list(extra)


def read_metrics(run_dir: Path) -> dict[int, dict[str, float]]:
    """step -> the metrics logged for it in ``run_dir/metrics.jsonl`` (a later row of a step wins: a resumed
    run logs again the steps its killed predecessor logged after the checkpoint)."""
    rows: dict[int, dict[str, float]] = {}
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return rows
    for line in path.read_text().splitlines():
        row = json.loads(line)
        step = int(row.pop("step"))
        row.pop("time", None)
        if "train/loss" in row and step in rows:
            rows[step] = {k: v for k, v in rows[step].items() if not k.startswith("train/")}
        rows.setdefault(step, {}).update(row)
    return rows


def e2e_run_dir(work: Path) -> Path:
    return work / "runs" / "e2e"


def step_e2e(plan: Plan, work: Path, budget: float, save: Save) -> dict[str, Any]:
    out = shortened_run(plan, work, e2e_run_dir(work), "gpt2-124m-fineweb")
    bare = read_step(work, "bench").get(f"ours_micro{plan.micros[-1]}", {}).get("tokens_per_s")
    out["bare_step_tokens_per_s"] = bare
    out["ratio_to_bare_step"] = out["tokens_per_s"] / bare if bare and out["tokens_per_s"] else None
    return out


def step_speedrun(plan: Plan, work: Path, budget: float, save: Save) -> dict[str, Any]:
    out = shortened_run(plan, work, work / "runs" / "speedrun", "gpt2-124m-speedrun")
    adamw = read_step(work, "e2e").get("tokens_per_s")
    out["adamw_tokens_per_s"] = adamw
    out["ratio_to_adamw"] = out["tokens_per_s"] / adamw if adamw and out["tokens_per_s"] else None
    return out


def shortened_run(plan: Plan, work: Path, run_dir: Path, preset: str) -> dict[str, Any]:
    """:func:`train_command` of ``preset`` run to its end: tokens/s and MFU of the steady intervals, losses,
    val losses and checkpoints."""
    t0 = time.perf_counter()
    run_logged(train_command(plan, work, run_dir, preset=preset))
    wall = time.perf_counter() - t0
    rows = read_metrics(run_dir)
    logged = sorted(s for s in rows if "train/tokens_per_sec" in rows[s])
    # The first interval holds compilation; the later ones exclude val loss and checkpoints (the trainer
    # restarts its clock after them).
    steady = logged[1:]
    out: dict[str, Any] = {
        "micro": plan.micros[-1],
        "steps": max(rows) if rows else 0,
        "wall_s": wall,
        "tokens_per_s": statistics.median(rows[s]["train/tokens_per_sec"] for s in steady)
        if steady
        else None,
        "mfu": statistics.median(rows[s]["train/mfu"] for s in steady)
        if steady and "train/mfu" in rows[steady[0]]
        else None,
        "losses": {s: rows[s]["train/loss"] for s in logged},
        "val_losses": {s: rows[s]["val/loss"] for s in sorted(rows) if "val/loss" in rows[s]},
        "checkpoints": sorted(p.name for p in run_dir.glob("step_*") if p.is_dir()),
    }
    return out


def step_xl(plan: Plan, work: Path, budget: float, save: Save) -> dict[str, Any]:
    import torch

    fig = None
    try:
        fig = measure(plan, work, plan.xl_model, plan.xl_micro, "xl (plain)")
    except torch.OutOfMemoryError:
        print("xl (plain): out of memory; again with activation checkpointing")
    if fig is None:  # outside the except block, whose traceback still holds the first attempt's tensors
        fig = measure(
            plan,
            work,
            plan.xl_model,
            plan.xl_micro,
            "xl --activation-checkpointing",
            activation_checkpointing=True,
        )
    return fig


def step_fp8(plan: Plan, work: Path, budget: float, save: Save) -> dict[str, Any]:
    """float8 against the bf16 figures of the bench and xl steps (same weights, batches and steps)."""
    t0 = time.perf_counter()
    # No float8 on CPU: the dry run takes the same path with bf16, to prove the plumbing.
    flags = {"fp8": plan.device == "cuda"}
    out: dict[str, Any] = {"fp8": flags["fp8"]}
    micro = plan.micros[-1]
    runs = [("124m", plan.model, micro, read_step(work, "bench").get(f"ours_micro{micro}", {}))]
    runs.append(("xl", plan.xl_model, plan.xl_micro, read_step(work, "xl")))
    for name, model_name, m, bf16 in runs:
        if name == "xl" and budget - (time.perf_counter() - t0) < 0.6 * plan.budgets["xl"]:
            out[name] = {"error": "not run: too little of the step's time budget left for an xl compile"}
            continue
        label = f"{name} --fp8" if flags["fp8"] else f"{name} (dry run: bf16 in place of fp8)"
        xl_flags = (
            {"activation_checkpointing": True}
            if name == "xl" and "checkpointing" in bf16.get("label", "")
            else {}
        )
        fig = guarded(functools.partial(measure, plan, work, model_name, m, label, **flags, **xl_flags))
        if "tokens_per_s" in fig and "tokens_per_s" in bf16:
            fig["speedup_vs_bf16"] = fig["tokens_per_s"] / bf16["tokens_per_s"]
            diffs = [abs(a - b) for a, b in zip(fig["losses"], bf16["losses"])]
            fig["max_abs_loss_diff_vs_bf16"] = max(diffs)
            fig["final_loss_bf16"] = bf16["losses"][-1]
        out[name] = fig
        save(out)
    return out


def step_tests(plan: Plan, work: Path, budget: float, save: Save) -> dict[str, Any]:
    """``pytest -m cuda``, then the model and generation tests with ``plan.device`` as torch's default."""
    out = {}
    model_tests = [
        "packages/gpt2-core/tests/test_model.py",
        "packages/gpt2-core/tests/test_generate.py",
        "tests/test_chat_kv_reuse.py",
    ]
    # Only the files that hold cuda tests: collecting the others would import what a bare GPU machine lacks
    # (the serve and eval packages' dependencies).
    cuda_files = [
        str(path.relative_to(ROOT))
        for path in sorted([*ROOT.glob("packages/*/tests/test_*.py"), *ROOT.glob("tests/test_*.py")])
        if "pytest.mark.cuda" in path.read_text(encoding="utf-8")
    ]
    runs = {
        "cuda_marked": ["-m", "cuda", *cuda_files],
        f"model_generation_on_{plan.device}": [f"--torch-device={plan.device}", *model_tests],
    }
    for name, args in runs.items():
        xml = work / f"pytest-{name}.xml"
        cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={xml}", *args]
        rc = run_logged(cmd, check=False)
        out[name] = {"exit_code": rc, **junit_counts(xml)}
        save(out)
    return out


def junit_counts(xml: Path) -> dict[str, Any]:
    """Test counts and the failing tests' ids from a pytest ``--junitxml`` report."""
    import xml.etree.ElementTree as ET

    if not xml.is_file():
        return {"error": "no junit report written"}
    root = ET.parse(xml).getroot()
    suite = root if root.tag == "testsuite" else root.find("testsuite")
    cases = suite.findall("testcase")
    failed = [
        f"{c.get('classname')}::{c.get('name')}"
        for c in cases
        if c.find("failure") is not None or c.find("error") is not None
    ]
    skipped = sum(c.find("skipped") is not None for c in cases)
    return {
        "tests": len(cases),
        "failed": len(failed),
        "skipped": skipped,
        "passed": len(cases) - len(failed) - skipped,
        "failures": failed,
    }


STEP_FUNCS = {
    "data": step_data,
    "bench": step_bench,
    "e2e": step_e2e,
    "speedrun": step_speedrun,
    "xl": step_xl,
    "fp8": step_fp8,
    "tests": step_tests,
}


# --- helpers ----------------------------------------------------------------------------------------------


def gpt2_command() -> list[str]:
    """``gpt2`` as a module, since the GPU machine has the packages on PYTHONPATH and no console script."""
    return [sys.executable, "-m", "gpt2_cli"]


def shape_args(plan: Plan) -> argparse.Namespace:
    """What train_gpu's builders read from its command line."""
    return argparse.Namespace(model=plan.model, seq_len=plan.seq_len, compile=plan.compile)


def run_logged(cmd: list[str], check: bool = True) -> int:
    """Run ``cmd`` with its output going where ours goes; raise on a non-zero exit when ``check``."""
    print("$ " + " ".join(cmd), flush=True)
    rc = subprocess.call(cmd)
    if check and rc:
        raise RuntimeError(f"{' '.join(cmd[2:5])} ... exited with code {rc}")
    return rc


def guarded(fn) -> dict[str, Any]:
    """``fn()``'s figures, or the error it raised (so the next measurement of the step still runs)."""
    import torch

    try:
        return fn()
    except Exception as e:  # recorded, not fatal: the step's other measurements still run
        print(f"  failed: {type(e).__name__}: {e}", flush=True)
        if isinstance(e, torch.OutOfMemoryError):
            return {"error": "out of memory"}
        return {"error": f"{type(e).__name__}: {str(e)[:500]}"}


def print_figure(fig: dict[str, Any]) -> None:
    mfu = f"{100 * fig['mfu']:.1f}%" if fig.get("mfu") is not None else "n/a"
    mem = f"{fig['peak_mem_gib']:.1f} GiB" if fig.get("peak_mem_gib") is not None else "n/a"
    print(
        f"  {fig['label']:40s} {fig['model']} micro {fig['micro']}: {fig['tokens_per_s']:12,.0f} tokens/s  "
        f"MFU {mfu}  peak mem {mem}  loss {fig['losses'][0]:.3f} -> {fig['losses'][-1]:.3f}",
        flush=True,
    )


def read_step(work: Path, name: str) -> dict[str, Any]:
    """The figures step ``name`` wrote, or {} when it failed or has not run."""
    path = work / f"{name}.json"
    return json.loads(path.read_text()).get("figures") or {} if path.is_file() else {}


def write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str) + "\n")
    os.replace(tmp, path)


def run_step(name: str, work: Path, dry_run: bool, budget: float) -> None:
    """In the step's own process: its figures, or the error, into ``work/name.json``."""
    plan = plan_for(dry_run)
    sys.path.insert(0, str(BENCH))
    t0 = time.perf_counter()
    path = work / f"{name}.json"

    def save(figures: dict[str, Any]) -> None:  # what is measured survives the step's timeout
        write_json(path, {"status": "partial", "figures": figures, "seconds": time.perf_counter() - t0})

    record: dict[str, Any] = {"status": "ok"}
    try:
        record["figures"] = STEP_FUNCS[name](plan, work, budget, save)
    except Exception as e:
        import traceback

        traceback.print_exc()
        partial = json.loads(path.read_text()).get("figures") if path.is_file() else None
        record = {"status": "failed", "error": f"{type(e).__name__}: {str(e)[:1000]}", "figures": partial}
    record["seconds"] = time.perf_counter() - t0
    write_json(path, record)


# --- targets ---------------------------------------------------------------------------------------------


def target(name: str, value: Any, threshold: str, ok: bool | None) -> dict[str, Any]:
    return {"target": name, "value": value, "threshold": threshold, "pass": ok}


def targets(steps: dict[str, dict[str, Any]], plan: Plan) -> list[dict[str, Any]]:
    """The tests' result and each speed figure against its target (None: not measured, or no peak known)."""
    fig = {name: rec.get("figures") or {} for name, rec in steps.items()}
    out = []
    tests = fig.get("tests", {})
    status = steps.get("tests", {}).get("status")
    if status not in (None, "ok"):  # killed or failed before its counts were all written: that is a failure
        out.append(target("1 tests finished", status, "ok", False))
    for name, counts in tests.items():
        ok = counts.get("exit_code") == 0 and counts.get("failed", 1) == 0
        if ok and counts.get("passed", 0) == 0:  # all skipped: the cuda-marked tests off a GPU
            ok = None if plan.device != "cuda" else False
        out.append(target(f"1 tests {name} pass", counts.get("failed"), "0 failed", ok))
    bench = fig.get("bench", {})
    for micro in plan.micros:
        mfu = bench.get(f"ours_micro{micro}", {}).get("mfu")
        out.append(
            target(f"2 MFU {plan.model} micro {micro}", mfu, ">= 0.50", None if mfu is None else mfu >= 0.5)
        )
        ratio = bench.get(f"ratio_micro{micro}")
        out.append(
            target(
                f"2 ours/transformers micro {micro}", ratio, ">= 1.3", None if ratio is None else ratio >= 1.3
            )
        )
    ratio = fig.get("e2e", {}).get("ratio_to_bare_step")
    out.append(
        target("3 e2e tokens/s / bare step", ratio, ">= 0.95", None if ratio is None else ratio >= 0.95)
    )
    # Muon's Newton-Schulz iterations, whole on one GPU, against a 32K-token step: ~5% of its FLOPs on paper
    # (BENCHMARKS.md, "On paper"), at a lower MFU than the step's large products.
    ratio = fig.get("speedrun", {}).get("ratio_to_adamw")
    out.append(
        target("6 speedrun tokens/s / AdamW's", ratio, ">= 0.85", None if ratio is None else ratio >= 0.85)
    )
    return out


# --- the orchestrator ------------------------------------------------------------------------------------


def machine_info() -> dict[str, Any]:
    import torch
    from _machine import machine

    info = {"machine": machine(), "torch": torch.__version__}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    return info


def tee(proc: subprocess.Popen, log) -> None:
    for line in proc.stdout:
        sys.stdout.write(line)
        sys.stdout.flush()
        log.write(line)
        log.flush()


def run_all(out: Path, work: Path, dry_run: bool, deadline: float | None) -> dict[str, Any]:
    plan = plan_for(dry_run)
    deadline = deadline or plan.deadline
    start = time.monotonic()
    sys.path.insert(0, str(BENCH))
    result: dict[str, Any] = {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "dry_run": dry_run,
        **machine_info(),
        "plan": asdict(plan),
        "work": str(work),
        "steps": {},
        "targets": [],
    }
    env = dict(os.environ, PYTHONUNBUFFERED="1", HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    env["PYTHONPATH"] = os.pathsep.join([str(BENCH), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    with open(out / "acceptance.log", "a", encoding="utf-8") as log:
        log.write(f"# {result['date']} {result['machine']}\n")
        for name in STEPS:
            left = deadline - (time.monotonic() - start)
            budget = min(plan.budgets[name], left)
            label = f"step {NUMBERS[name]} ({name})" if name in NUMBERS else f"setup ({name})"
            if budget < 15:
                result["steps"][name] = {"status": "skipped", "error": f"no time left ({left:.0f} s)"}
                continue
            banner = f"\n=== {label}: budget {budget:.0f} s ===\n"
            sys.stdout.write(banner)
            log.write(banner)
            t0 = time.monotonic()
            cmd = [sys.executable, __file__, "step", name, "--work", str(work), "--budget", str(budget)]
            proc = subprocess.Popen(
                cmd + (["--dry-run"] if dry_run else []),
                cwd=ROOT,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                env=env,
                start_new_session=True,  # its own process group: a timeout kills its children too
            )
            reader = threading.Thread(target=tee, args=(proc, log), daemon=True)
            reader.start()
            try:
                proc.wait(timeout=budget)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            reader.join(timeout=5)
            seconds = time.monotonic() - t0
            path = work / f"{name}.json"
            record = json.loads(path.read_text()) if path.is_file() else {"status": "partial"}
            if record["status"] == "partial":  # the step did not finish: keep what it measured
                timed_out = seconds >= budget
                record["status"] = "timeout" if timed_out else "failed"
                record["error"] = (
                    f"killed after its budget of {budget:.0f} s"
                    if timed_out
                    else f"exited with code {proc.returncode} before finishing"
                )
            record["wall_s"] = seconds
            result["steps"][name] = record
            result["targets"] = targets(result["steps"], plan)
            result["total_s"] = time.monotonic() - start
            write_json(out / "figures.json", result)
            summary = f"=== {label}: {record['status']} in {seconds:.0f} s {record.get('error', '')}\n"
            sys.stdout.write(summary)
            log.write(summary)
    result["targets"] = targets(result["steps"], plan)
    result["total_s"] = time.monotonic() - start
    write_json(out / "figures.json", result)
    return result


def print_targets(result: dict[str, Any]) -> None:
    print(f"\n{'target':42s} {'value':>14s}  threshold              result")
    for t in result["targets"]:
        v = t["value"]
        value = f"{v:.4g}" if isinstance(v, float) else str(v)
        verdict = {True: "pass", False: "FAIL", None: "n/a"}[t["pass"]]
        print(f"{t['target']:42s} {value:>14s}  {t['threshold']:22s} {verdict}")
    print(f"total {result['total_s']:.0f} s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="every step, each in its own process under its time budget")
    run.add_argument("--out", required=True, type=Path, help="folder for acceptance.log and figures.json")
    run.add_argument(
        "--work", type=Path, help="folder for data, runs and per-step figures (default: a temp dir)"
    )
    run.add_argument("--dry-run", action="store_true", help="CPU, tiny shapes, a few steps")
    run.add_argument("--deadline", type=float, help="seconds for all steps together (default: the plan's)")
    one = sub.add_parser("step", help="one step, in this process")
    one.add_argument("name", choices=STEPS)
    one.add_argument("--work", required=True, type=Path)
    one.add_argument("--dry-run", action="store_true")
    one.add_argument("--budget", type=float, default=math.inf)
    args = ap.parse_args()

    if args.command == "run":
        args.out.mkdir(parents=True, exist_ok=True)
        work = args.work or Path(tempfile.mkdtemp(prefix="gpt2-acceptance-"))
        work.mkdir(parents=True, exist_ok=True)
        print_targets(run_all(args.out.resolve(), work.resolve(), args.dry_run, args.deadline))
    else:
        run_step(args.name, args.work, args.dry_run, args.budget)


if __name__ == "__main__":
    main()
