"""DDP set-up from torchrun's environment, and the few collectives the trainer needs.

Under ``torchrun`` the variables RANK, LOCAL_RANK and WORLD_SIZE are set; without them this is a
single process and every helper is a no-op. NCCL on GPUs, gloo on CPU. Control flags (stop, save a
checkpoint now) travel over a separate gloo group so deciding them never waits on the GPU stream.

FSDP needs a process group even for one process (``--parallel fsdp`` without torchrun, e.g. to offload a
model's state to the CPU on one GPU): ``setup_distributed(..., group_of_one=True)`` makes a group of one.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from gpt2_core.device import pick_device
from gpt2_core.errors import UserError

T = TypeVar("T")


@dataclass
class DistEnv:
    """Where this process sits: its rank, the world size and its device."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")
    control_group: Any = None
    """A gloo group for CPU flags (None in a single process)."""
    joined: bool = False
    """Whether ``setup_distributed`` joined (or made) a process group, for ``teardown_distributed`` to leave."""

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def setup_distributed(device: str = "auto", *, group_of_one: bool = False) -> DistEnv:
    """Join torchrun's process group when there is one; pick this rank's device.

    ``group_of_one``: a single process makes a process group of its own (FSDP needs one).
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        dev = pick_device(device)
        if not group_of_one or dist.is_initialized():
            return DistEnv(device=dev)
        if dev.type == "mps":
            raise UserError(
                "--device mps: FSDP over MPS is not supported; use --parallel ddp or --device cpu"
            )
        dist.init_process_group(
            backend="nccl" if dev.type == "cuda" else "gloo", store=dist.HashStore(), rank=0, world_size=1
        )
        return DistEnv(device=dev, joined=True)
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = pick_device(device)
    if dev.type == "cuda":
        dev = torch.device("cuda", local_rank)
        torch.cuda.set_device(dev)
    elif dev.type == "mps":
        raise UserError("--device mps: DDP over MPS is not supported; run one process, or use --device cpu")
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
    control = dist.new_group(backend="gloo") if dev.type == "cuda" else dist.group.WORLD
    return DistEnv(
        rank=rank,
        local_rank=local_rank,
        world_size=world_size,
        device=dev,
        control_group=control,
        joined=True,
    )


def teardown_distributed(env: DistEnv) -> None:
    """Leave the process group ``setup_distributed`` joined, and drop ``env``'s hold on it: a gloo group
    still referenced when the interpreter exits is freed during finalisation, where gloo can abort the
    process (SIGABRT, "terminate called without an active exception") after a clean run."""
    if env.joined and dist.is_initialized():
        dist.destroy_process_group()
    env.control_group = None
    env.joined = False


def any_rank(env: DistEnv, flag: bool) -> bool:
    """True when ``flag`` is true on any rank (a CPU all-reduce; no GPU sync)."""
    if not env.enabled:
        return flag
    t = torch.tensor([int(flag)], dtype=torch.int32)
    dist.all_reduce(t, op=dist.ReduceOp.MAX, group=env.control_group)
    return bool(t.item())


def sum_over_ranks(env: DistEnv, t: torch.Tensor) -> torch.Tensor:
    """The sum of tensor ``t`` over ranks (a copy; ``t`` is left as it is)."""
    if not env.enabled:
        return t
    t = t.clone()
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def gather_objects(env: DistEnv, obj: Any) -> list[Any]:
    """Every rank's ``obj`` (containers, numbers, strings, tensors), in rank order, on every rank."""
    if not env.enabled:
        return [obj]
    # Serialised by hand: all_gather_object's own pickling of tensors fails to load in recent torch,
    # and this way nothing is unpickled beyond what weights_only allows.
    buf = io.BytesIO()
    torch.save(obj, buf)
    out: list[Any] = [None] * env.world_size
    dist.all_gather_object(out, buf.getvalue(), group=env.control_group)
    return [torch.load(io.BytesIO(b), weights_only=True) for b in out]


def broadcast_object(env: DistEnv, obj: Any) -> Any:
    """Rank 0's ``obj`` on every rank."""
    if not env.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0, group=env.control_group)
    return box[0]


def on_main_rank(env: DistEnv, fn: Callable[[], T]) -> T:
    """``fn()`` run by rank 0 alone (preparing data, choosing a checkpoint) while the others wait, its result
    on every rank. A ``UserError`` it raises is raised on every rank, so none is left waiting in a collective
    that rank 0 will never join. The result must pickle (``broadcast_object``)."""
    result: Any = None
    if env.is_main:
        try:
            result = fn()
        except UserError as e:
            result = e
    result = broadcast_object(env, result)
    if isinstance(result, UserError):
        raise result
    return result


def barrier(env: DistEnv) -> None:
    if env.enabled:
        dist.barrier(group=env.control_group)
