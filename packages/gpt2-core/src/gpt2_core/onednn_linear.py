"""``OneDNNLinear``: an ``nn.Linear`` whose fp32 CPU products run on oneDNN instead of MKL.

PyTorch sends fp32 matrix products on an x86 CPU to MKL and bf16 ones to oneDNN. On an AMD CPU MKL runs
its generic AVX2 code, while oneDNN runs the widest instructions the CPU has. With AVX-512 (a 2-core AMD
EPYC, Zen 5) GPT-2's training products measured 390-470 GFLOP/s through oneDNN against 160-220 through
MKL, and decoding's matrix-vector products were 2x (blocks) to 3.6x (the 50257-row head) faster. Without
AVX-512 both libraries run AVX2 code and oneDNN's backward is the slower one (see BENCHMARKS.md), so
this module is not the model's: ``gpt2_core.cpu_matmul.apply`` swaps it in where a measurement on the
machine at hand shows it faster. It is the same fp32 arithmetic, summed in another order (differences
of fp32 rounding size).

oneDNN costs ~10 us more per call than MKL, so products under ``MIN_MACS`` stay on MKL. For the weight
gradient oneDNN first copies the (tokens, out) output gradient to transposed memory; when that copy leaves
the cache and ``in_features`` is small it costs more than it saves (2x slower at 512 tokens, 128 inputs and
50257 outputs on the Zen 5), so such products stay on MKL too.

Everywhere else (GPU, bf16 or autocast, torch.compile, jit tracing, forward-mode AD and torch.func
transforms, ``torch.backends.mkldnn`` disabled) this is ``F.linear``, and the parameters and state dict are
``nn.Linear``'s. Limits of the oneDNN path: no double backward; ``torch.fx.symbolic_trace`` cannot trace
through the device check (trace with torch.export instead).
"""

from __future__ import annotations

import functools
import platform

import torch
import torch.autograd.forward_ad as forward_ad
import torch.nn as nn
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

MIN_MACS = 1 << 19
"""Multiply-adds below which a product stays on MKL (a 768 x 768 matrix times one vector is ~0.6M)."""
MAX_CACHED_COPY = 1 << 22
"""Elements of output gradient (16 MiB of fp32) up to which oneDNN's transposed copy of it is cheap."""
MIN_WEIGHT_GRAD_IN = 256
"""in_features from which the weight gradient goes through oneDNN, however big that copy."""


@functools.cache
def onednn_built() -> bool:
    """Whether this is an x86 build of PyTorch with its oneDNN linear op (whatever the CPU)."""
    return (
        platform.machine().lower() in ("x86_64", "amd64")
        and torch.backends.mkldnn.is_available()
        and hasattr(torch.ops.mkldnn, "_linear_pointwise")
    )


def _onednn(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """``x @ weight.T + bias`` by oneDNN; inputs may be transposed views (it reads strides)."""
    return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")


class _OneDNNLinearFunction(torch.autograd.Function):
    """The oneDNN op has no derivative formula: the backward's two products go through oneDNN too."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:  # noqa: ANN001
        # Like F.linear, keep the input only for the weight gradient and the weight only for the input's.
        ctx.save_for_backward(
            x if ctx.needs_input_grad[1] else None, weight if ctx.needs_input_grad[0] else None
        )
        return _onednn(x, weight, bias)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:  # noqa: ANN001
        x, weight = ctx.saved_tensors
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = _onednn(grad, weight.t(), None)  # grad @ weight
        g = grad.reshape(-1, grad.size(-1))
        if ctx.needs_input_grad[1]:
            x = x.reshape(-1, x.size(-1))
            use_onednn = x.size(1) >= MIN_WEIGHT_GRAD_IN or g.numel() <= MAX_CACHED_COPY
            grad_w = _onednn(g.t(), x.t(), None) if use_onednn else g.t() @ x
        if ctx.needs_input_grad[2]:
            grad_b = g.sum(0)
        return grad_x, grad_w, grad_b


def onednn_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``F.linear``, through oneDNN for big enough fp32 CPU products (see the module docstring)."""
    if (
        not torch.compiler.is_compiling()  # first: dynamo must not trace into the checks below
        and not torch.jit.is_tracing()
        and x.device.type == weight.device.type == "cpu"
        and x.dtype == weight.dtype == torch.float32
        and (bias is None or bias.dtype == torch.float32)
        and onednn_built()
        and x.numel() * weight.size(0) >= MIN_MACS
        and not torch.is_autocast_enabled("cpu")
        and not torch._C._are_functorch_transforms_active()
        and forward_ad._current_level < 0
        and torch.backends.mkldnn.enabled
    ):
        if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (x, weight, bias)):
            return _OneDNNLinearFunction.apply(x, weight, bias)
        return _onednn(x, weight, bias)
    return F.linear(x, weight, bias)


class OneDNNLinear(nn.Linear):
    """``nn.Linear`` (same parameters, initialisation and state dict) computed by :func:`onednn_linear`.

    It adds no state, so an ``nn.Linear`` becomes one by a change of class in place (as
    ``torch.nn.utils.parametrize`` does): :func:`swap_in` and :func:`swap_out`.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return onednn_linear(x, self.weight, self.bias)


def swap_in(model: nn.Module) -> list[str]:
    """Make every plain ``nn.Linear`` of ``model`` a :class:`OneDNNLinear`, in place; return their names.

    Subclasses of ``nn.Linear`` (torchao's float8 layers, ...) are left alone. Module objects, parameters
    (ties included), buffers, hooks and state-dict keys stay as they were.
    """
    names = []
    for name, module in model.named_modules():
        if type(module) is nn.Linear:
            module.__class__ = OneDNNLinear
        if type(module) is OneDNNLinear:
            names.append(name)
    return names


def swap_out(model: nn.Module) -> None:
    """Undo :func:`swap_in`: every :class:`OneDNNLinear` of ``model`` becomes a plain ``nn.Linear`` again."""
    for module in model.modules():
        if type(module) is OneDNNLinear:
            module.__class__ = nn.Linear
