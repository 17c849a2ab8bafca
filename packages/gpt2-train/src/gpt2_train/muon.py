"""``torch.optim.Muon`` with its Newton-Schulz iteration in the run's precision.

torch's Muon orthogonalises every update in bf16, always. A CPU without native bf16 matrix products (AVX2 only,
where ``--precision auto`` trains in fp32) computes those products slowly: there Muon's step cost 5.5x AdamW's
(BENCHMARKS.md), in fp32 7% more, as on a CPU with AVX512-BF16. :class:`Muon` runs the iteration in ``ns_dtype``:
bf16 is torch's own step unchanged; another dtype runs the same algorithm (Keller Jordan's Muon, as torch 2.15
implements it: Nesterov momentum, the quintic iteration, the learning-rate adjustment, decoupled weight decay)
in that dtype. The state (each matrix's ``momentum_buffer``) is torch's, so checkpoints load either way.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch


def adjusted_lr(lr: float, adjust_lr_fn: str | None, shape: torch.Size) -> float:
    """Muon's per-matrix learning rate, as torch's: ``original`` (Keller Jordan's, sqrt(max(1, A/B))) or
    ``match_rms_adamw`` (0.2 sqrt(max(A, B)), Moonshot's "Muon is Scalable for LLM Training")."""
    a, b = shape[:2]
    if adjust_lr_fn == "match_rms_adamw":
        return lr * 0.2 * math.sqrt(max(a, b))
    return lr * math.sqrt(max(1, a / b))


def newton_schulz(
    update: torch.Tensor, coefficients: tuple[float, float, float], steps: int, eps: float, dtype: torch.dtype
) -> torch.Tensor:
    """The quintic Newton-Schulz iteration of torch's Muon on a 2-D ``update``, computed in ``dtype``: an
    approximately orthogonal matrix of ``update``'s shape (its singular values near 1)."""
    a, b, c = coefficients
    x = update.to(dtype=dtype, copy=True)
    tall = update.size(0) > update.size(1)
    if tall:
        x = x.T
    x.div_(x.norm().clamp(min=eps))  # spectral norm at most 1
    for _ in range(steps):
        gram = x @ x.T
        x = torch.addmm(x, torch.addmm(gram, gram, gram, beta=b, alpha=c), x, beta=a)
    return x.T if tall else x


class Muon(torch.optim.Muon):
    """``torch.optim.Muon`` (the same arguments) whose Newton-Schulz iteration runs in ``ns_dtype``."""

    def __init__(
        self, params: Iterable[Any], *, ns_dtype: torch.dtype = torch.bfloat16, **kwargs: Any
    ) -> None:
        super().__init__(params, **kwargs)
        self.ns_dtype = ns_dtype

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        if self.ns_dtype == torch.bfloat16:
            return super().step(closure)
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, momentum = float(group["lr"]), group["momentum"]
            for param in group["params"]:
                if param.grad is None:
                    continue
                state = self.state[param]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.zeros_like(
                        param.grad, memory_format=torch.preserve_format
                    )
                buf = state["momentum_buffer"]
                buf.lerp_(param.grad, 1 - momentum)
                update = param.grad.lerp(buf, momentum) if group["nesterov"] else buf
                update = newton_schulz(
                    update, group["ns_coefficients"], group["ns_steps"], group["eps"], self.ns_dtype
                )
                param.mul_(1 - lr * group["weight_decay"])
                param.add_(update.to(param.dtype), alpha=-adjusted_lr(lr, group["adjust_lr_fn"], param.shape))
        return loss
