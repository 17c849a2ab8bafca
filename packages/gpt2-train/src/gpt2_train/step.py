"""One optimizer step: gradient accumulation over micro-batches, clipping, and a guarded AdamW update.

This is the function ``gpt2 train`` runs and ``bench/train_throughput.py`` times. It never reads a
value back from the GPU: loss and grad norm come back as device tensors that the loop reads only on
logged steps, and a non-finite step is skipped on the device by fused AdamW's ``found_inf``.

The objective of a step is the sum of the per-token losses over every counted target (not -100) of every
micro-batch on every rank, divided by the number of those targets. A mean of micro-batch means is not
that when masks make the counts unequal (SFT counts only assistant tokens): Hugging Face's trainer had
this fault and fixed it the same way, by normalising with the number of items in the whole batch. The
counts are taken from the batches on the host before the step, so knowing them costs no GPU sync.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
import torch.distributed as dist
from gpt2_core.loss import IGNORE_INDEX
from gpt2_data.batch_source import BatchSource
from torch.nn.parallel import DistributedDataParallel

from gpt2_train.parallel import is_sharded, replicated, set_gradient_sync
from gpt2_train.precision import autocast


@dataclass
class StepResult:
    """Device tensors; read them (``float(...)``) only when logging."""

    loss: torch.Tensor
    """Mean loss per counted target over every micro-batch of the step and every rank (NaN when none)."""
    grad_norm: torch.Tensor
    """Global gradient norm before clipping."""
    finite: torch.Tensor
    """False when the loss or gradients were NaN/inf and the update was skipped."""
    targets: int
    """Counted targets in the step over every rank; 0 means the step had nothing to learn and was skipped."""


class TrainStep:
    """``step(source, lr)`` runs ``grad_accum`` micro-batches from ``source`` and updates the model, each
    parameter group at ``lr`` times its ``lr_scale`` (1 when it has none; see ``gpt2_train.optim``).

    ``model`` may be a plain ``GPT``, a compiled one, a DDP wrapper or a sharded (FSDP2) model; across
    ranks, gradients are all-reduced (DDP) or reduce-scattered (FSDP) only in the last micro-batch's
    backward. ``count_group`` is the process group (gloo, CPU tensors) over which the ranks add up their
    target counts; default: the world group.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        *,
        grad_accum: int,
        grad_clip: float,
        device: torch.device,
        autocast_dtype: torch.dtype | None = None,
        count_group: dist.ProcessGroup | None = None,
    ) -> None:
        self.model = model
        self.optimizer = optimizer
        self.grad_accum = grad_accum
        self.grad_clip = grad_clip
        self.device = device
        self.autocast_dtype = autocast_dtype
        self.params = [p for g in optimizer.param_groups for p in g["params"]]
        self.ddp = isinstance(model, DistributedDataParallel)
        self.sharded = is_sharded(model)
        self.world_size = dist.get_world_size() if self.ddp or self.sharded else 1
        self.count_group = count_group
        # On a GPU, fused AdamW skips a step on the device when found_inf is 1; elsewhere we check on the
        # host, which costs nothing on CPU where everything is synchronous anyway.
        self.device_skip = bool(optimizer.defaults.get("fused")) and device.type == "cuda"

    def _to_device(self, t: torch.Tensor) -> torch.Tensor:
        if self.device.type == "cuda":
            return t.pin_memory().to(self.device, non_blocking=True)
        return t.to(self.device)

    def _count_targets(self, batches: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[list[int], int]:
        """Counted targets of each micro-batch here, and of the whole step over every rank."""
        counts = [int((y != IGNORE_INDEX).sum()) for _, y in batches]
        total = torch.tensor([sum(counts)], dtype=torch.int64)
        if self.world_size > 1:
            dist.all_reduce(total, op=dist.ReduceOp.SUM, group=self.count_group)
        return counts, int(total.item())

    def __call__(self, source: BatchSource, lr: float) -> StepResult:
        for group in self.optimizer.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)  # a group with a peak lr of its own (Muon's)
        batches = [source.next_batch() for _ in range(self.grad_accum)]
        counts, total = self._count_targets(batches)
        if total == 0:  # every target of the step is masked: nothing to learn, and 0/0 to avoid
            zero = torch.zeros((), device=self.device)
            self.optimizer.zero_grad(set_to_none=True)
            return StepResult(loss=zero * float("nan"), grad_norm=zero, finite=zero == 0, targets=0)
        loss_sum = torch.zeros((), device=self.device)
        for micro, (x, y) in enumerate(batches):
            x, y = self._to_device(x), self._to_device(y)
            last = micro == self.grad_accum - 1
            if self.sharded:
                set_gradient_sync(self.model, last)
            sync = self.model.no_sync() if self.ddp and not last else contextlib.nullcontext()
            with sync:
                with autocast(self.device, self.autocast_dtype):
                    _, loss = self.model(x, y)
                # The model gives this micro-batch's mean; weighted by its share of the step's targets it
                # becomes its sum over the step's count. DDP and FSDP average gradients over ranks: times
                # world_size.
                (loss * (counts[micro] * self.world_size / total)).backward()
            loss_sum += loss.detach() * counts[micro]
        if self.world_size > 1:
            dist.all_reduce(loss_sum, op=dist.ReduceOp.SUM)
        loss = loss_sum / total
        if self.grad_clip > 0:
            grad_norm = torch.nn.utils.clip_grad_norm_(self.params, self.grad_clip)
        else:
            grad_norm = torch.nn.utils.get_total_norm([p.grad for p in self.params if p.grad is not None])
        # Sharded gradients give a replicated DTensor, in CPU memory when FSDP offloads them.
        grad_norm = replicated(grad_norm).to(loss.device)
        finite = torch.isfinite(grad_norm) & torch.isfinite(loss)
        if self.device_skip:
            self.optimizer.found_inf = (~finite).float()  # type: ignore[attr-defined]
            self.optimizer.step()
        elif bool(finite):
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return StepResult(loss=loss, grad_norm=grad_norm, finite=finite, targets=total)
