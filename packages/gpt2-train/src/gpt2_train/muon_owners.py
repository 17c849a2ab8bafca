"""Muon's Newton-Schulz work split over ranks: each matrix has an owner rank that orthogonalises its update
whole, and the other ranks get their part of the result from it.

Newton-Schulz needs a whole matrix, and costs the same on every rank that runs it. Each matrix is given to one
rank (:func:`owners`), so each rank runs about 1/N of the iterations. Two layouts of the updates:

- sharded (``--parallel fsdp``): each rank holds some rows of every update (its momentum is formed on its
  shard of the gradient). :func:`orthogonalise_sharded` gathers each update's rows to its owner, which
  orthogonalises it and scatters the rows back, so the momentum stays sharded and a rank receives only the
  matrices it owns;
- replicated (``--parallel ddp``): every rank holds every update whole (gradients are all-reduced).
  :func:`orthogonalise_replicated` orthogonalises each on its owner, which broadcasts the result.

Every transfer is asynchronous and issued in the matrices' order on every rank, so the owners orthogonalise at
the same time while the transfers go on; one process does no transfer at all.

This is the owner split of nanochat's DistMuon (karpathy/nanochat, ``nanochat/optims.py``), which
reduce-scatters stacks of same-shape gradients so that each rank owns whole matrices, and of Moonlight's
distributed Muon (Liu et al. 2025, "Muon is Scalable for LLM Training", arXiv:2502.16982), which gathers the
ZeRO-1 shards of each update to compute it whole; here the shards are FSDP2's (``DTensor``, ``Shard(0)``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.distributed as dist

Orthogonalise = Callable[[torch.Tensor], torch.Tensor]
"""A whole 2-D update -> its orthogonalised form (same shape), in the dtype given beside it."""


def owners(sizes: Sequence[int], world_size: int) -> list[int]:
    """The rank that owns each matrix of ``sizes`` (element counts): round-robin over the matrices taken
    largest first (ties in their order), so no rank's share exceeds another's by more than one matrix, the
    smallest ones evening out the rest."""
    owner = [0] * len(sizes)
    for turn, i in enumerate(sorted(range(len(sizes)), key=lambda i: -sizes[i])):
        owner[i] = turn % world_size
    return owner


def orthogonalise_sharded(
    shards: Sequence[torch.Tensor],
    rows: Sequence[int],
    orthogonalise: Orthogonalise,
    dtype: torch.dtype,
    group: dist.ProcessGroup,
    device: torch.device,
) -> list[torch.Tensor]:
    """This rank's rows of each orthogonalised update, given its rows of each update (collective over ``group``).

    ``shards[i]``: this rank's rows of update ``i`` (a matrix of ``rows[i]`` rows), cut as FSDP2 shards dim 0
    (``torch.chunk``: ``ceil(rows / N)`` rows to each rank in rank order, fewer to the last one that has any,
    none after it); every rank passes the matrices in the same order. ``orthogonalise`` runs on each matrix's
    owner and returns ``dtype``; the rows come back in ``dtype`` on each shard's device. ``device``: where
    ``group`` communicates (the GPU for NCCL, even when FSDP keeps the shards in CPU memory).
    """
    world, me = group.size(), group.rank()
    if world == 1:
        return [orthogonalise(s) for s in shards]
    owner = owners([r * s.shape[1] for r, s in zip(rows, shards, strict=True)], world)
    chunks = [-(-r // world) for r in rows]  # rows per rank, the last ranks' padded to it
    gathered: list[list[torch.Tensor] | None] = []
    pending = []
    for shard, chunk, src in zip(shards, chunks, owner, strict=True):
        padded = torch.zeros(chunk, shard.shape[1], dtype=shard.dtype, device=device)
        padded[: shard.shape[0]] = shard
        into = [torch.empty_like(padded) for _ in range(world)] if src == me else None
        gathered.append(into)
        pending.append(dist.gather(padded, into, group=group, group_dst=src, async_op=True))
    out, sent = [], []
    for i, (shard, chunk, src) in enumerate(zip(shards, chunks, owner, strict=True)):
        mine = torch.empty(chunk, shard.shape[1], dtype=dtype, device=device)
        parts = None
        if src == me:
            pending[i].wait()
            whole = orthogonalise(torch.cat(gathered[i])[: rows[i]])  # type: ignore[arg-type]
            padded = torch.zeros(chunk * world, whole.shape[1], dtype=dtype, device=device)
            padded[: rows[i]] = whole
            parts = list(padded.split(chunk))
        sent.append(dist.scatter(mine, parts, group=group, group_src=src, async_op=True))
        out.append(mine)
    for work in [*pending, *sent]:
        work.wait()
    return [o[: s.shape[0]].to(s.device) for o, s in zip(out, shards, strict=True)]


def orthogonalise_replicated(
    updates: Sequence[torch.Tensor],
    orthogonalise: Orthogonalise,
    dtype: torch.dtype,
    group: dist.ProcessGroup,
) -> list[torch.Tensor]:
    """Each update orthogonalised, on every rank, given every update whole on every rank (collective over
    ``group``, every rank passing the same updates in the same order): each owner orthogonalises its own
    (``orthogonalise``, returning ``dtype``) and broadcasts it."""
    world, me = group.size(), group.rank()
    if world == 1:
        return [orthogonalise(u) for u in updates]
    owner = owners([u.numel() for u in updates], world)
    out, pending = [], []
    for update, src in zip(updates, owner, strict=True):
        if src == me:
            result = orthogonalise(update).contiguous()  # a tall matrix's comes back transposed
        else:
            result = torch.empty(update.shape, dtype=dtype, device=update.device)
        pending.append(dist.broadcast(result, group=group, group_src=src, async_op=True))
        out.append(result)
    for work in pending:
        work.wait()
    return out
