"""Cross-entropy over the vocabulary, without full-size fp32 copies of the logits.

``F.cross_entropy(logits.float(), targets)`` makes an fp32 copy of the logits (with bf16 logits), writes a
log-softmax as big as them, and in backward zero-fills one more such tensor and reads two. For GPT-2 those
tensors are (B*T, 50257): the largest in the step. Here the forward keeps one log-sum-exp per row, and the
backward writes the gradient straight into a tensor of the logits' dtype, a block of rows at a time, so the
fp32 temporaries stay small (on a CPU, in cache). The result is the same mean cross-entropy (fp32), except
that a mean over no counted target is 0 with a zero gradient, not NaN.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

CPU_BLOCK = 1 << 19
"""fp32 elements per block of rows on a CPU (2 MiB, ~10 GPT-2 rows): stays in cache between the passes."""
GPU_BLOCK = 1 << 27
"""On a GPU a block is only bounded for memory (512 MiB): every block costs kernel launches."""


def _block_rows(logits: torch.Tensor) -> int:
    block = CPU_BLOCK if logits.device.type == "cpu" else GPU_BLOCK
    return max(1, block // logits.size(1))


class _CrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits: torch.Tensor, targets: torch.Tensor, ignore_index: int) -> torch.Tensor:  # noqa: ANN001
        rows = _block_rows(logits)
        lse = torch.cat([torch.logsumexp(b.float(), dim=1) for b in logits.split(rows)])
        valid = targets != ignore_index
        safe = torch.where(valid, targets, 0)  # ignored rows pick logit 0, then count for nothing
        picked = logits.gather(1, safe[:, None]).squeeze(1).float()
        count = valid.sum().clamp(min=1)  # no counted target: 0 loss and 0 gradient, not 0/0
        ctx.save_for_backward(logits, safe, valid, count)
        return torch.where(valid, lse - picked, 0.0).sum() / count

    @staticmethod
    @once_differentiable  # the gradient is computed in place, not as a differentiable graph
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:  # noqa: ANN001
        logits, safe, valid, count = ctx.saved_tensors
        rows = _block_rows(logits)
        # d loss / d logits = (softmax - one_hot(target)) / count on counted rows, 0 on ignored ones.
        scale = torch.where(valid, grad / count, 0.0)
        out = torch.empty_like(logits)
        for start in range(0, logits.size(0), rows):
            end = min(start + rows, logits.size(0))
            p = torch.softmax(logits[start:end], dim=1, dtype=torch.float32)
            p[torch.arange(end - start, device=p.device), safe[start:end]] -= 1
            torch.mul(p, scale[start:end, None], out=out[start:end])
        return out, None, None


IGNORE_INDEX = -100
"""Targets with this value do not count (PyTorch's ``cross_entropy`` default): SFT's prompt tokens, padding."""


def cross_entropy(
    logits: torch.Tensor, targets: torch.Tensor, ignore_index: int = IGNORE_INDEX
) -> torch.Tensor:
    """Mean cross-entropy (fp32) of ``logits`` (N, V) against ``targets`` (N,), skipping ``ignore_index``.

    Equals ``F.cross_entropy(logits.float(), targets, ignore_index=ignore_index)``, except when every target
    is ignored (a conversation cut to its prompt): then the loss is 0 and the gradient zero, where
    ``F.cross_entropy`` gives NaN. Callers that weight micro-batches by their number of targets (the
    trainer) rely on that: a micro-batch without targets adds nothing.
    """
    if torch.compiler.is_compiling():  # a compiled graph fuses the plain version into one kernel itself
        total = F.cross_entropy(logits.float(), targets, ignore_index=ignore_index, reduction="sum")
        return total / (targets != ignore_index).sum().clamp(min=1)
    return _CrossEntropy.apply(logits, targets, ignore_index)
