"""How the ranks share the model (``--parallel``): DDP, or PyTorch's FSDP2 (``fully_shard``).

``ddp``: every rank holds the whole model, its gradients and AdamW state; DDP all-reduces the gradients.

``fsdp``: each rank holds 1/N of every parameter (a ``DTensor`` sharded on dim 0), of its gradient and of the
AdamW state. Each transformer block is a group whose parameters are all-gathered just before its forward and
again before its backward, and whose gradients are reduce-scattered right after; the root group holds the
embeddings, the final LayerNorm and the head. A tied head's weight *is* the token embedding: one parameter,
in the root's group, sharded once, and the optimizer sees it once; an untied head is one more parameter of
the root's group.

On GPUs, a bf16 run (``--precision``) all-gathers parameters in bf16 and reduce-scatters gradients in fp32
(``MixedPrecisionPolicy``); the shards, and so AdamW, stay fp32. Every activation is then bf16, the residual
stream too (DDP's autocast keeps that in fp32), as in torchtitan; autocast's fp32 ops (LayerNorm, the loss)
still run in fp32. CPU runs keep fp32 parameters, with autocast as under DDP.
``--fsdp-cpu-offload`` keeps the shards, gradients and AdamW state in CPU memory (``CPUOffloadPolicy``).

:func:`parallelize` wraps the model once, in the order torchtitan applies: module swaps (float8, the CPU matmul
route) and activation checkpointing first, then ``torch.compile`` (under FSDP each block in place, so parameter
names and checkpoints stay the same), then DDP or ``fully_shard`` (blocks, then the root), so FSDP's all-gather
and reduce-scatter hooks run around the compiled blocks, outside the compiled code. It runs before the
optimizer is built (which must hold FSDP's shards) and before a checkpoint is loaded: every wrapper shares the
model's parameters, so loading into the model in place loads into what the step function calls.

Every rank must run the same number of forward passes of a sharded model, since each one all-gathers with
every rank: evaluations that only rank 0 runs (text samples) gather the whole model first
(:func:`full_state_dict`).
"""

from __future__ import annotations

from typing import Any

import torch
from gpt2_core.model import GPT
from torch.nn.parallel import DistributedDataParallel

from gpt2_train import accel
from gpt2_train.config import TrainConfig
from gpt2_train.distributed import DistEnv


def is_sharded(model: torch.nn.Module) -> bool:
    """Whether ``model`` was sharded by :func:`shard` (FSDP2's ``fully_shard``)."""
    from torch.distributed.fsdp import FSDPModule

    return isinstance(model, FSDPModule)


def param_dtype(autocast_dtype: torch.dtype | None, device: torch.device) -> torch.dtype | None:
    """The dtype FSDP all-gathers parameters in: bf16 for a bf16 run on a GPU, else None (as stored, fp32)."""
    return autocast_dtype if device.type == "cuda" and autocast_dtype == torch.bfloat16 else None


def shard(model: GPT, env: DistEnv, *, compute_dtype: torch.dtype | None, cpu_offload: bool) -> GPT:
    """Shard ``model`` in place over the ranks of ``env`` with ``fully_shard``: each block, then the root.

    ``compute_dtype``: see :func:`param_dtype`. Parameters move to ``env.device`` group by group as they are
    sharded (or stay in CPU memory with ``cpu_offload``), so the whole model is never on one GPU at once.
    """
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import (
        CPUOffloadPolicy,
        MixedPrecisionPolicy,
        OffloadPolicy,
        fully_shard,
    )

    mesh = init_device_mesh(env.device.type, (env.world_size,))
    options: dict[str, Any] = dict(
        mesh=mesh,
        mp_policy=MixedPrecisionPolicy(
            param_dtype=compute_dtype, reduce_dtype=torch.float32 if compute_dtype else None
        ),
        offload_policy=CPUOffloadPolicy(pin_memory=env.device.type == "cuda")
        if cpu_offload
        else OffloadPolicy(),
    )
    for block in model.transformer.h:
        fully_shard(block, **options)
    # The root takes what no block holds: both embeddings (the token one is also a tied head), ln_f, the head.
    fully_shard(model, **options)
    return model


def parallelize(
    model: GPT,
    cfg: TrainConfig,
    env: DistEnv,
    *,
    loss_head: torch.nn.Module | None = None,
    autocast: torch.dtype | None = None,
) -> torch.nn.Module:
    """``model`` as the step function calls it: with ``cfg``'s speed-ups (``accel.apply``: float8, activation
    checkpointing, the CPU matmul route, compile), then sharded (``--parallel fsdp``) or, under torchrun,
    wrapped in DDP. Call it once, before the optimizer is built.

    ``loss_head``: a module around ``model`` that computes the loss (the data-vocabulary head); it is what gets
    compiled and DDP-wrapped (``--parallel fsdp`` refuses it in ``TrainConfig``). ``autocast``: the run's
    autocast dtype (None: fp32), which also sets the dtype FSDP all-gathers in (:func:`param_dtype`).
    """
    wrapped = accel.apply(model, cfg, env.device, loss_head=loss_head, autocast=autocast)
    if cfg.parallel == "fsdp":
        dtype = param_dtype(autocast, env.device)
        return shard(model, env, compute_dtype=dtype, cpu_offload=cfg.fsdp_cpu_offload)
    if env.enabled:
        ids = [env.device.index] if env.device.type == "cuda" else None
        wrapped = DistributedDataParallel(wrapped, device_ids=ids)
    return wrapped


def set_gradient_sync(model: torch.nn.Module, sync: bool) -> None:
    """Whether the next backward of sharded ``model`` reduce-scatters gradients (all but a step's last
    micro-batch accumulate unreduced, unsharded gradients instead: FSDP2's counterpart of DDP's ``no_sync``)."""
    model.set_requires_gradient_sync(sync)  # type: ignore[operator]


def local_tensor(t: torch.Tensor) -> torch.Tensor:
    """This rank's part of ``t``: the local shard of a ``DTensor``, ``t`` itself otherwise."""
    from torch.distributed.tensor import DTensor

    return t.to_local() if isinstance(t, DTensor) else t


def replicated(t: torch.Tensor) -> torch.Tensor:
    """A plain tensor for a ``DTensor`` every rank holds whole (a global grad norm), ``t`` itself otherwise."""
    from torch.distributed.tensor import DTensor

    return t.full_tensor() if isinstance(t, DTensor) else t


def full_state_dict(model: torch.nn.Module, env: DistEnv) -> dict[str, torch.Tensor]:
    """The whole state dict of sharded ``model`` in CPU memory on rank 0 (empty on the others); every rank
    must call it, since each tensor is all-gathered in turn."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    state = get_model_state_dict(model, options=options)
    return state if env.is_main else {}
