"""One optimizer step: gradient accumulation over micro-batches, clipping, and a guarded AdamW update.

This is the function ``gpt2 train`` runs and ``bench/train_throughput.py`` times. It never reads a
value back to the host on CUDA: loss and grad norm come back as device tensors that the loop reads
only on logged steps, and a non-finite step is skipped on the device by fused AdamW's ``found_inf``.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Protocol

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel


class BatchSource(Protocol):
    """What the trainer pulls batches from: gpt2-data's ShardLoader, SFT's loader, or a test's list.

    ``next_batch`` returns ``(x, y)`` int64 tensors of shape (B, T); targets of -100 do not count.
    ``state_dict``/``load_state_dict`` capture the exact position (saved in every checkpoint, so the
    values must be plain Python containers, numbers, strings and tensors).
    """

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor]: ...

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None: ...


@dataclass
class StepResult:
    """Device tensors; read them (``float(...)``) only when logging."""

    loss: torch.Tensor
    """Mean loss over every micro-batch of the step and every rank."""
    grad_norm: torch.Tensor
    """Global gradient norm before clipping."""
    finite: torch.Tensor
    """False when the loss or gradients were NaN/inf and the update was skipped."""


class TrainStep:
    """``step(source, lr)`` runs ``grad_accum`` micro-batches from ``source`` and updates the model.

    ``model`` may be a plain ``GPT``, a compiled one, or a DDP wrapper; with DDP the gradient
    all-reduce happens only on the last micro-batch.
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
    ) -> None:
        self.model = model
        self.optimizer = optimizer
        self.grad_accum = grad_accum
        self.grad_clip = grad_clip
        self.device = device
        self.autocast_dtype = autocast_dtype
        self.params = [p for g in optimizer.param_groups for p in g["params"]]
        self.ddp = isinstance(model, DistributedDataParallel)
        self.world_size = dist.get_world_size() if self.ddp else 1
        # Fused AdamW skips a step on the device when found_inf is 1; otherwise we check on the host,
        # which costs nothing on CPU where everything is synchronous anyway.
        self.device_skip = bool(optimizer.defaults.get("fused"))

    def _to_device(self, t: torch.Tensor) -> torch.Tensor:
        if self.device.type == "cuda":
            return t.pin_memory().to(self.device, non_blocking=True)
        return t.to(self.device)

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.autocast_dtype)

    def __call__(self, source: BatchSource, lr: float) -> StepResult:
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        loss_sum = torch.zeros((), device=self.device)
        for micro in range(self.grad_accum):
            x, y = source.next_batch()
            x, y = self._to_device(x), self._to_device(y)
            last = micro == self.grad_accum - 1
            sync = contextlib.nullcontext() if (last or not self.ddp) else self.model.no_sync()
            with sync:
                with self._autocast():
                    _, loss = self.model(x, y)
                # Each micro-batch's mean, scaled so the accumulated gradient is the mean over the step.
                (loss / self.grad_accum).backward()
            loss_sum += loss.detach()
        loss = loss_sum / self.grad_accum
        if self.ddp:
            dist.all_reduce(loss, op=dist.ReduceOp.SUM)
            loss = loss / self.world_size
        if self.grad_clip > 0:
            grad_norm = torch.nn.utils.clip_grad_norm_(self.params, self.grad_clip)
        else:
            grad_norm = torch.nn.utils.get_total_norm([p.grad for p in self.params if p.grad is not None])
        finite = torch.isfinite(grad_norm) & torch.isfinite(loss)
        if self.device_skip:
            self.optimizer.found_inf = (~finite).float()  # type: ignore[attr-defined]
            self.optimizer.step()
        elif bool(finite):
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return StepResult(loss=loss, grad_norm=grad_norm, finite=finite)
