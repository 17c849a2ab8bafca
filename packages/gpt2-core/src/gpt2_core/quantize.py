"""Weight-only int8 inference: a module swap applied by the loader, as gpt-fast's ``quantize.py`` does it.

Each ``nn.Linear`` of the blocks, and the head, becomes an :class:`Int8Linear`: its weight rounded to int8
with one scale per output channel (``scale = max|w_row| / 127``, symmetric). Decoding one token reads every
weight once, so a quarter of fp32's bytes (half of bf16's) is what makes it faster; the products stay in
floating point.

- On the CPU the product is ``torch.ops.aten._weight_int8pack_mm`` (PyTorch's own int8-weight kernel, the one
  torchao's int8 weight-only config reaches on CPU): ``x @ w.T * scales`` without a float copy of the weight.
  Its input is bfloat16 whatever the model's dtype (the layer casts in and out): with float32 inputs the
  kernel measured 3-40x slower than plain fp32 ``F.linear`` at every row count, with bfloat16 ones 2x faster
  than fp32 at 1-4 rows, on AVX-512 and under ``ATEN_CPU_CAPABILITY=avx2`` alike (BENCHMARKS.md).
- Elsewhere (CUDA, MPS) it is gpt-fast's ``F.linear(x, w.to(x.dtype)) * scales`` in the model's dtype.

A tied head (GPT-2's: the token embedding) gets an int8 copy of its own (the embedding stays in the model's
dtype for the lookups, which read one row per token), since the head is the largest single read of a decode
step (38.6M of gpt2's 124M weights); an untied head is a plain Linear and is swapped like the others.
Position embeddings and LayerNorms stay as they are.

Quality measured on a trained tiny model and the figures are in BENCHMARKS.md; ``quantize_int8`` is for
inference only (the buffers have no gradient).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from gpt2_core.errors import UserError

MODES = ("none", "int8")
"""``--quantize`` values: ``none`` keeps the weights as loaded."""


class Int8Linear(nn.Module):
    """``nn.Linear`` with int8 weights (out, in) and per-output-channel scales (out,) in the kernel's dtype.

    ``forward(x)``: x (..., in) float -> (..., out) in x's dtype.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool,
        dtype: torch.dtype,
        device: torch.device | str | None = None,
        bias_dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.register_buffer(
            "weight", torch.empty(out_features, in_features, dtype=torch.int8, device=device)
        )
        self.register_buffer("scales", torch.empty(out_features, dtype=dtype, device=device))
        self.register_buffer(
            "bias", torch.empty(out_features, dtype=bias_dtype or dtype, device=device) if bias else None
        )

    @classmethod
    def from_float(cls, weight: torch.Tensor, bias: torch.Tensor | None = None) -> Int8Linear:
        """Quantize a float ``weight`` (out, in) (and keep ``bias`` (out,)) symmetrically per output row; the
        scales in bfloat16 on the CPU (the kernel's input type there), else in the weight's dtype."""
        w = weight.detach().float()
        dtype = torch.bfloat16 if weight.device.type == "cpu" else weight.dtype
        # Rounded to the stored scales' precision first, so that the int8 values are the nearest steps of
        # the scale the kernel will actually multiply by.
        scales = (w.abs().amax(dim=1).clamp(min=1e-12) / 127.0).to(dtype).float()
        q = torch.round(w / scales[:, None]).clamp(-127, 127).to(torch.int8)
        layer = cls(w.shape[1], w.shape[0], bias is not None, dtype, weight.device, weight.dtype)
        layer.weight.copy_(q)
        layer.scales.copy_(scales.to(dtype))
        if bias is not None:
            layer.bias.copy_(bias.detach())
        return layer

    def dequantized(self) -> torch.Tensor:
        """The weight the products use, (out, in) in float32 (for tests and measurements)."""
        return self.weight.float() * self.scales.float()[:, None]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type == "cpu":
            shape = x.shape
            flat = x.reshape(-1, shape[-1]).to(self.scales.dtype)
            y = torch.ops.aten._weight_int8pack_mm(flat, self.weight, self.scales)
            y = y.view(*shape[:-1], self.out_features).to(x.dtype)
        else:
            y = F.linear(x, self.weight.to(x.dtype)) * self.scales
        return y if self.bias is None else y + self.bias.to(y.dtype)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"
        )


def check_mode(mode: str) -> None:
    """``UserError`` naming ``--quantize`` for a value outside :data:`MODES`."""
    if mode not in MODES:
        raise UserError(f"--quantize must be one of {', '.join(MODES)}, got {mode!r}")


def quantize_int8(model: nn.Module, head: bool = True) -> nn.Module:
    """Swap every ``nn.Linear`` of ``model`` (a ``GPT``) for an :class:`Int8Linear`, in place; with ``head``,
    the head too (tied: an int8 copy, the embedding keeps its float weight; untied: swapped as the others are).
    Returns ``model`` (eval mode).

    Biases stay in the model's dtype.
    """
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.Linear) and (head or name != "lm_head"):
                setattr(parent, name, Int8Linear.from_float(child.weight, child.bias))
    return model.eval()
