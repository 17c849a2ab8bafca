"""``torch.optim.Muon`` with its Newton-Schulz iteration in the run's precision.

torch's Muon orthogonalises every update in bf16, always. A CPU without native bf16 matrix products (AVX2 only,
where ``--precision auto`` trains in fp32) computes those products slowly: there Muon's step cost 5.5x AdamW's
(BENCHMARKS.md), in fp32 7% more, as on a CPU with AVX512-BF16. :class:`Muon` runs the iteration in ``ns_dtype``:
bf16 in one process is torch's own step unchanged; another dtype runs the same algorithm (Keller Jordan's Muon, as torch 2.15
implements it: Nesterov momentum, the quintic iteration, the learning-rate adjustment, decoupled weight decay)
in that dtype. The state (each matrix's ``momentum_buffer``) is torch's, so checkpoints load either way. A
group's ``cautious_weight_decay`` (Chen et al. 2025, "Cautious Weight Decay", arXiv:2510.12402), which torch's
Muon lacks, takes our step in any dtype.

On several ranks the iteration is split among them (``gpt2_train.muon_owners``): under FSDP2 each update is
formed on the rank's shard and orthogonalised whole by the matrix's owner rank; under DDP each rank
orthogonalises the matrices it owns and receives the others'.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch
import torch.distributed as dist
from torch.distributed.tensor import DTensor

from gpt2_train.muon_owners import orthogonalise_replicated, orthogonalise_sharded
from gpt2_train.parallel import local_tensor


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
    """``torch.optim.Muon`` (the same arguments) whose Newton-Schulz iteration runs in ``ns_dtype``, and is split
    over ranks when there are several (``gpt2_train.muon_owners``: each rank orthogonalises the matrices it
    owns).

    Sharded parameters (FSDP2's ``DTensor``s) form their momentum on their shard (its buffer a ``DTensor`` too,
    so DCP saves and re-shards it as AdamW's state) and send their update to its owner, over their device
    mesh's group. Whole parameters on several ranks (DDP) name those ranks in ``process_group``: each rank
    keeps every momentum buffer (rank 0 saves them all) and the owners broadcast their results. Either way
    every rank must step with the same parameters having gradients.

    ``cautious_weight_decay`` (a param group's, default False): the decoupled weight decay only where the
    orthogonalised update and the parameter agree in sign (``update * param >= 0``, as modded-nanogpt and
    nanochat mask it), elementwise, so on a rank's shard as on the whole matrix.
    """

    def __init__(
        self,
        params: Iterable[Any],
        *,
        ns_dtype: torch.dtype = torch.bfloat16,
        process_group: dist.ProcessGroup | None = None,
        cautious_weight_decay: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(params, **kwargs)
        self.defaults["cautious_weight_decay"] = cautious_weight_decay
        for group in self.param_groups:
            group.setdefault("cautious_weight_decay", cautious_weight_decay)
        self.ns_dtype = ns_dtype
        self.process_group = process_group

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        sharded = any(isinstance(p, DTensor) for g in self.param_groups for p in g["params"])
        cautious = any(g.get("cautious_weight_decay") for g in self.param_groups)
        if not sharded and self.process_group is None and self.ns_dtype == torch.bfloat16 and not cautious:
            return super().step(closure)
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr = float(group["lr"])
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            updates = [self._momentum(p, group) for p in params]
            orthogonalise = self._orthogonaliser(group)
            if sharded:
                mesh = params[0].device_mesh
                rows = [p.shape[0] for p in params]
                where = torch.device(mesh.device_type)
                results = orthogonalise_sharded(
                    updates, rows, orthogonalise, self.ns_dtype, mesh.get_group(), where
                )
            elif self.process_group is not None:
                results = orthogonalise_replicated(updates, orthogonalise, self.ns_dtype, self.process_group)
            else:
                results = [orthogonalise(u) for u in updates]
            decay = 1 - lr * group["weight_decay"]
            for param, result in zip(params, results, strict=True):
                local, update = local_tensor(param), result.to(param.dtype)
                if group.get("cautious_weight_decay"):
                    # Where the step (-lr * update) moves the weight towards 0 (or not at all), decay with it;
                    # elsewhere the decay would pull against the update, and is left out.
                    local.mul_(torch.where(update * local >= 0, decay, 1.0))
                else:
                    local.mul_(decay)
                local.add_(update, alpha=-adjusted_lr(lr, group["adjust_lr_fn"], param.shape))
        return loss

    def _orthogonaliser(self, group: dict[str, Any]) -> Callable[[torch.Tensor], torch.Tensor]:
        """The Newton-Schulz iteration with ``group``'s settings, in ``ns_dtype``."""
        coefficients, steps, eps = group["ns_coefficients"], group["ns_steps"], group["eps"]
        return lambda update: newton_schulz(update, coefficients, steps, eps, self.ns_dtype)

    def _momentum(self, param: torch.Tensor, group: dict[str, Any]) -> torch.Tensor:
        """``param``'s update before orthogonalisation (its momentum buffer moved on by its gradient, then
        Nesterov's look-ahead), on this rank's part of ``param``: its shard, or all of it."""
        state = self.state[param]
        if "momentum_buffer" not in state:
            state["momentum_buffer"] = torch.zeros_like(param.grad, memory_format=torch.preserve_format)
        buf, grad = local_tensor(state["momentum_buffer"]), local_tensor(param.grad)
        buf.lerp_(grad, 1 - group["momentum"])
        return grad.lerp(buf, group["momentum"]) if group["nesterov"] else buf
