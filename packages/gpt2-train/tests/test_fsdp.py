"""``--parallel fsdp`` in one process (a process group of one): the same training as DDP's path, the tie kept,
sharded checkpoints that resume exactly and load as one model, and either layout resuming either kind of run.

Two ranks run under torchrun in the root tests (tests/test_train_fsdp.py)."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from gpt2_core.errors import UserError
from gpt2_core.model import GPT
from gpt2_train.checkpointer import Checkpointer
from gpt2_train.config import TrainConfig
from gpt2_train.distributed import setup_distributed
from gpt2_train.parallel import is_sharded
from gpt2_train.trainer import Trainer

from .conftest import CountingSource, small_config, small_model


@pytest.fixture(autouse=True)
def leave_the_group() -> Iterator[None]:
    """Each test's process group of one is its own (as gpt2_train.run.run_training's is its run's)."""
    yield
    if dist.is_initialized():
        dist.destroy_process_group()


def trainer(run_dir: Path, tied: bool = True, **overrides: object) -> Trainer:
    """A 2-layer model (its head tied or not), 2 micro-batches a step, checkpoints every 2 steps; under
    --parallel fsdp in a process group of one, which the test ends (``leave_the_group``)."""
    values: dict = dict(max_steps=4, checkpoint_every_steps=2)
    values.update(overrides)
    cfg = small_config(run_dir, **values)
    env = setup_distributed(cfg.device, group_of_one=cfg.parallel == "fsdp")
    model = small_model(n_layer=2, tie_word_embeddings=tied)
    return Trainer(cfg, model=model, train_source=CountingSource(4, 16, seed=1), env=env)


def losses(run_dir: Path) -> dict[int, float]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return {r["step"]: r["train/loss"] for r in map(json.loads, lines) if "train/loss" in r}


def full_weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Every tensor whole (a sharded model's shards are gathered; with one rank, its shard is all of it)."""
    return {
        k: (v.full_tensor() if hasattr(v, "full_tensor") else v).detach().clone()
        for k, v in model.state_dict().items()
    }


def assert_close(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], atol: float = 1e-6) -> None:
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=atol, msg=k)


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, torch.Tensor]]:
    run = tmp_path_factory.mktemp("ddp") / "run"
    tr = trainer(run)
    tr.fit()
    return run, full_weights(tr.model)


@pytest.mark.parametrize(
    "options",
    [{}, {"activation_checkpointing": True, "fsdp_cpu_offload": True}],
    ids=["plain", "checkpointing+offload"],
)
def test_one_process_fsdp_trains_as_ddp_does(ddp_run, tmp_path: Path, options: dict) -> None:
    run = tmp_path / "run"
    tr = trainer(run, parallel="fsdp", **options)
    tr.start()
    model = tr.model
    assert is_sharded(model) and dist.is_initialized()
    assert model.lm_head.weight is model.transformer.wte.weight  # tied, and sharded once
    params = [p for g in tr.optimizer.param_groups for p in g["params"]]
    assert len({id(p) for p in params}) == len(params) == len(list(model.parameters()))
    tr.fit()
    assert dist.is_initialized()  # the group is its owner's to end, not the trainer's
    ref_run, ref = ddp_run
    a, b = losses(run), losses(ref_run)
    assert sorted(a) == sorted(b) == [1, 2, 3, 4]
    assert all(abs(a[s] - b[s]) < 1e-6 for s in a), (a, b)
    assert_close(full_weights(model), ref)

    latest = run / "latest"
    state = json.loads((latest / "state.json").read_text())
    assert state["layout"] == "dcp" and "sharded/.metadata" in state["files"]
    assert not (latest / "model.safetensors").exists()
    loaded = GPT.from_pretrained(latest)  # read into one model, without a process group
    assert_close(full_weights(loaded), ref)


def test_sharded_checkpoint_resumes_bit_identical(tmp_path: Path) -> None:
    ref = trainer(tmp_path / "ref", parallel="fsdp", keep=1)
    ref.fit()
    assert [p.name for p in Checkpointer(tmp_path / "ref").checkpoints()] == ["step_00000004"]
    part = trainer(tmp_path / "run", parallel="fsdp", max_steps=2)
    part.fit()
    resumed = trainer(tmp_path / "run", parallel="fsdp", resume="latest")
    resumed.fit()
    assert resumed.step == 4
    assert losses(tmp_path / "run")[4] == losses(tmp_path / "ref")[4]
    a, b = full_weights(resumed.model), full_weights(ref.model)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_truncated_shard_falls_back_to_the_previous_checkpoint(tmp_path: Path, capsys) -> None:
    trainer(tmp_path / "run", parallel="fsdp").fit()
    shard = tmp_path / "run" / "step_00000004" / "sharded" / "__0_0.distcp"
    shard.write_bytes(shard.read_bytes()[:1000])
    resumed = trainer(tmp_path / "run", parallel="fsdp", resume="latest")
    resumed.start()
    assert resumed.step == 2
    assert "checkpoint step_00000004 is unreadable" in capsys.readouterr().err
    resumed.close()


@pytest.mark.parametrize(("first", "then"), [("ddp", "fsdp"), ("fsdp", "ddp")])
def test_either_layout_resumes_either_kind_of_run(ddp_run, tmp_path: Path, first: str, then: str) -> None:
    trainer(tmp_path / "run", parallel=first, max_steps=2).fit()
    resumed = trainer(tmp_path / "run", parallel=then, resume="latest")
    resumed.fit()
    ref_run, ref = ddp_run
    assert abs(losses(tmp_path / "run")[4] - losses(ref_run)[4]) < 1e-6
    assert_close(full_weights(resumed.model), ref)


@pytest.fixture(scope="module")
def muon_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, torch.Tensor]]:
    run = tmp_path_factory.mktemp("muon") / "run"
    tr = trainer(run, optimizer="muon", precision="fp32")
    tr.fit()
    return run, full_weights(tr.model)


@pytest.mark.parametrize(("first", "then"), [("fsdp", "fsdp"), ("ddp", "fsdp"), ("fsdp", "ddp")])
def test_muon_under_fsdp_trains_and_resumes_as_one_process(
    muon_run, tmp_path: Path, first: str, then: str
) -> None:
    """Muon's momentum in the sharded checkpoint (a DTensor beside AdamW's state) and in the full one, each
    resumed by either kind of run: the uninterrupted plain run's losses and weights."""
    opts = dict(optimizer="muon", precision="fp32")
    trainer(tmp_path / "run", parallel=first, max_steps=2, **opts).fit()
    resumed = trainer(tmp_path / "run", parallel=then, resume="latest", **opts)
    resumed.fit()
    ref_run, ref = muon_run
    a, b = losses(tmp_path / "run"), losses(ref_run)
    assert sorted(a) == sorted(b) == [1, 2, 3, 4]
    assert all(abs(a[s] - b[s]) < 1e-6 for s in a), (a, b)
    assert_close(full_weights(resumed.model), ref)


@pytest.mark.parametrize(("first", "then"), [("fsdp", "fsdp"), ("fsdp", "ddp"), ("ddp", "fsdp")])
def test_an_untied_head_is_sharded_saved_and_resumed(tmp_path: Path, first: str, then: str) -> None:
    """An untied head is one more parameter of the root's group, under Muon's AdamW: its checkpoints of either
    layout hold it, load as one model and resume either kind of run to the uninterrupted run's weights."""
    opts = dict(tied=False, optimizer="muon", precision="fp32")
    ref = trainer(tmp_path / "ref", **opts)
    ref.fit()
    trainer(tmp_path / "run", parallel=first, max_steps=2, **opts).fit()
    half = GPT.from_pretrained(tmp_path / "run" / "latest")
    assert not half.config.tie_word_embeddings
    assert not torch.equal(half.lm_head.weight, half.transformer.wte.weight)
    resumed = trainer(tmp_path / "run", parallel=then, resume="latest", **opts)
    resumed.start()
    model = resumed.model
    assert model.lm_head.weight is not model.transformer.wte.weight
    params = [p for g in resumed.optimizer.param_groups for p in g["params"]]
    assert len({id(p) for p in params}) == len(params) == len(list(model.parameters()))
    resumed.fit()
    a, b = losses(tmp_path / "run"), losses(tmp_path / "ref")
    assert all(abs(a[s] - b[s]) < 1e-6 for s in a), (a, b)
    reference = full_weights(ref.model)
    assert_close(full_weights(resumed.model), reference)
    assert_close(full_weights(GPT.from_pretrained(tmp_path / "run" / "latest")), reference)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"parallel": "zero3"}, "--parallel must be ddp or fsdp"),
        ({"fsdp_cpu_offload": True}, "--fsdp-cpu-offload needs --parallel fsdp"),
        ({"parallel": "fsdp", "train_vocab": "data"}, "add --train-vocab full"),
    ],
)
def test_impossible_combinations_are_refused(options: dict, message: str) -> None:
    with pytest.raises(UserError, match=message):
        TrainConfig(**options)


@pytest.mark.slow
@pytest.mark.skipif(
    shutil.which(os.environ.get("CXX", "g++")) is None, reason="inductor needs a C++ compiler"
)
def test_compiled_blocks_with_checkpointing_under_fsdp(ddp_run, tmp_path: Path) -> None:
    """compile (each block, in place, before sharding) + activation checkpointing + FSDP: what a GPU run of
    --parallel fsdp does by default, here with inductor's CPU kernels."""
    import torch._dynamo

    torch._dynamo.reset()
    tr = trainer(tmp_path / "run", parallel="fsdp", compile=True, activation_checkpointing=True)
    tr.fit()
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] >= 1
    assert "_orig_mod" not in "".join(tr.model.state_dict())  # checkpoints keep the plain names
    ref_run, ref = ddp_run
    a, b = losses(tmp_path / "run"), losses(ref_run)
    assert all(abs(a[s] - b[s]) < 1e-4 for s in b), (a, b)
    assert_close(full_weights(GPT.from_pretrained(tmp_path / "run" / "latest")), ref, atol=1e-4)
