"""Resume and extension crossed with the other features a user combines them with: each optimizer x schedule x
parallelism, killed (SIGKILL, then the same command with ``--resume auto``) and, for WSD, the finished run
extended from ``RUN_DIR/stable`` as gpt2-train's README types it; every logger on; the AdamW runs with rows aligned
to documents and the batch and sequence length warming up, the Muon runs with Muon's step-dependent options. Each ends as its planned, uninterrupted twin does, bit for bit; ``latest``
is its newest checkpoint; jsonl, TensorBoard and wandb (offline) each hold every step once, with the twin's
values. The suite runs a pairwise cover of the product (``PAIRWISE``);
``GPT2_FULL_CROSSING=1`` runs all of it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from cli_helpers import TORCHRUN, metrics
from wandb_records import followed_history

LOGGERS = ["console", "jsonl", "tensorboard", "wandb", "kill-switch"]
"""Every logger, and last the test's own (tests/fixtures/gpt2-kill-switch), which SIGKILLs rank 0 right after
the others logged step ``GPT2_KILL_AT_STEP``."""
STEPS, LONGER, KILL_AT = 8, 12, 5
"""The planned run, a WSD run's extension, and the step after which the run dies (its checkpoint: step 4)."""
COMPARED = ("train/loss", "train/lr", "train/grad_norm", "val/loss")

PAIRWISE = {
    ("adamw", "cosine", "none"),
    ("muon", "wsd", "none"),
    ("adamw", "wsd", "ddp"),
    ("muon", "cosine", "ddp"),
    ("adamw", "cosine", "fsdp"),
    ("muon", "wsd", "fsdp"),
}
"""Every pair of an optimizer, a schedule and a parallelism, each in at least one combination: what the suite
runs (each combination costs a minute or more of two cores). ``GPT2_FULL_CROSSING=1`` runs the whole product."""
FULL = bool(os.environ.get("GPT2_FULL_CROSSING"))
COMBOS = [
    pytest.param(
        optimizer,
        schedule,
        parallel,
        marks=pytest.mark.skipif(
            not FULL and (optimizer, schedule, parallel) not in PAIRWISE,
            reason="beyond the pairwise cover; GPT2_FULL_CROSSING=1 runs it",
        ),
    )
    for optimizer in ("adamw", "muon")
    for schedule in ("cosine", "wsd")
    for parallel in ("none", "ddp", "fsdp")
]


def command(parallel: str, *args: str) -> list[str]:
    launcher = [sys.executable] if parallel == "none" else [*TORCHRUN, "--nproc-per-node=2"]
    return [*launcher, "-m", "gpt2_cli", "train", *args]


def run(parallel: str, args: list[str], env: dict[str, str], kill_at: int = 0) -> None:
    """``gpt2 train ARGS`` in a fresh process (under torchrun with two ranks for ddp and fsdp), to die after step
    ``kill_at`` when given. Every run is a fresh process, the twin's too: one run in this process would inherit
    what earlier tests set (torch's thread count changes the last bits of a sum)."""
    env = {**env, "GPT2_KILL_AT_STEP": str(kill_at)} if kill_at else env
    r = subprocess.run(command(parallel, *args), capture_output=True, text=True, env=env, timeout=600)
    assert (r.returncode != 0) == bool(kill_at), f"exit {r.returncode}\n{r.stderr[-3000:]}"


def weights(run_dir: Path) -> dict[str, torch.Tensor]:
    from gpt2_core.model import GPT

    return GPT.from_pretrained(run_dir / "latest").state_dict()  # either layout, as one model


def tensorboard(run_dir: Path) -> dict[str, dict[int, float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir / "tensorboard"))
    acc.Reload()  # applies each purge: a resumed run's steps replace those its killed one logged
    out = {}
    for tag in COMPARED:
        events = acc.Scalars(tag) if tag in acc.Tags()["scalars"] else []
        steps = [e.step for e in events]
        assert len(steps) == len(set(steps)), f"{tag}: a step twice in TensorBoard: {steps}"
        out[tag] = {e.step: e.value for e in events}
    return out


def assert_same_run(got: Path, twin: Path, steps: int, wandb_lost: int = 0) -> None:
    """``got`` ended as ``twin``: same weights bit for bit, ``latest`` its newest checkpoint, each logger
    holding every step once with the twin's values; W&B may lack steps up to ``wandb_lost``, which a SIGKILLed
    process had logged but W&B's service had not yet written (gpt2-wandb's README)."""
    ours, theirs = weights(got), weights(twin)
    for name, tensor in theirs.items():
        assert torch.equal(ours[name], tensor), name
    assert os.readlink(got / "latest") == f"step_{steps:08d}"
    newest = max(int(p.name[5:]) for p in got.glob("step_*") if p.is_dir())
    assert newest >= steps  # an abandoned branch may hold later steps; latest is this run's newest
    rows, twin_rows = metrics(got), metrics(twin)
    for tag in COMPARED:
        mine = [(r["step"], r[tag]) for r in rows if tag in r]
        assert mine == [(r["step"], r[tag]) for r in twin_rows if tag in r], f"jsonl {tag}"
    assert [r["step"] for r in rows if "train/loss" in r] == list(range(1, steps + 1))
    ours_tb, twin_tb = tensorboard(got), tensorboard(twin)
    for tag in COMPARED:
        assert ours_tb[tag] == twin_tb[tag], f"tensorboard {tag}"
    history, twin_history = followed_history(got), followed_history(twin)
    assert sorted(twin_history) == list(range(1, steps + 1))
    assert set(range(wandb_lost + 1, steps + 1)) <= set(history) <= set(twin_history), sorted(history)
    for step, row in history.items():
        for tag in COMPARED:
            assert row.get(tag) == twin_history[step].get(tag), f"wandb {tag} at step {step}"


@pytest.mark.slow
@pytest.mark.parametrize(("optimizer", "schedule", "parallel"), COMBOS)
def test_killed_and_extended_runs_end_as_their_twins(
    optimizer: str,
    schedule: str,
    parallel: str,
    data_dir: Path,
    tmp_path: Path,
    fixture_plugin,
) -> None:
    env = {**fixture_plugin("gpt2-kill-switch"), "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    env.pop("GPT2_KILL_AT_STEP", None)
    # One thread per process, as torchrun gives each rank: a single process's two threads summed in another
    # order when the machine was busy (the twin and the killed run differed in the last bit of step 1's loss
    # when run after the other combinations, never alone).
    env["OMP_NUM_THREADS"] = "1"
    planned = ["--model", "nano", "--micro-batch", "2", "--seq-len", "32", "--total-batch-tokens", "128"]
    planned += [
        "--data-dir",
        str(data_dir),
        "--device",
        "cpu",
        "--precision",
        "fp32",
        "--cpu-matmul",
        "torch",
    ]
    planned += ["--optimizer", optimizer, "--lr-schedule", schedule, "--warmup-steps", "2", "--lr", "3e-3"]
    planned += ["--eval-every", "4", "--eval-batches", "2", "--checkpoint-every-steps", "2"]
    planned += ["--checkpoint-every-seconds", "0", *(x for name in LOGGERS for x in ("--logger", name))]
    if optimizer == "adamw":
        # The data's step-dependent options across the kill and the stable point (the Muon runs keep the plain
        # stream): rows start at documents, and the batch and sequence-length warm-ups run until step 6 (rows of
        # 8 tokens, 4 to 6 of them a rank; of 16, 3 to 4; then 2 of 32).
        planned += ["--align-documents", "--seq-len-warmup-steps", "6", "--seq-len-start", "8"]
        planned += ["--batch-warmup-steps", "6", "--batch-warmup-start", "0.5"]
    if parallel == "fsdp":
        planned += ["--parallel", "fsdp"]
    if optimizer == "muon":
        # Muon's step-dependent and sharded options, and the untied head, across the kill (step 5) and the
        # stable point (step 6): the momentum warm-up runs past both; the head is a tensor of its own in every
        # checkpoint layout. The extension names none of them: the checkpoint carries them.
        untied = tmp_path / "untied.toml"
        untied.write_text("[train]\nmodel_overrides = {tie_word_embeddings = false}\n")
        planned += ["--config", str(untied), "--muon-momentum-warmup-steps", "8"]
        planned += ["--muon-weight-decay", "0.1", "--muon-cautious-weight-decay"]
    # A cosine run: SIGKILLed after step 5 (checkpoint 4), then the same command line (a requeued job),
    # against its twin. A WSD run: the same, then trained longer from the end of its stable phase (step 6) as
    # gpt2-train's README types it (everything else is the run's own), against a run planned that long.
    twin, killed = tmp_path / "twin", tmp_path / "killed"
    planned_steps = STEPS if schedule == "cosine" else LONGER
    run(parallel, [*planned, "--run-dir", str(twin), "--max-steps", str(planned_steps)], env)
    again = [*planned, "--run-dir", str(killed), "--max-steps", str(STEPS), "--resume", "auto"]
    run(parallel, again, env, kill_at=KILL_AT)
    assert max(r["step"] for r in metrics(killed)) == KILL_AT
    run(parallel, again, env)
    if schedule == "wsd":
        assert os.readlink(killed / "stable") == "step_00000006"
        extend = ["--run-dir", str(killed), "--resume", str(killed / "stable"), "--max-steps", str(LONGER)]
        run(parallel, extend, env)
    assert_same_run(killed, twin, planned_steps, wandb_lost=KILL_AT - 1)
    if optimizer == "muon":
        from gpt2_core.model import GPT

        resumed = GPT.from_pretrained(killed / "latest")
        assert not resumed.config.tie_word_embeddings
        assert resumed.lm_head.weight.data_ptr() != resumed.transformer.wte.weight.data_ptr()
