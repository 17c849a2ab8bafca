"""``gpt2_core.linear``: oneDNN's fp32 products equal F.linear's, gradients included, and only fp32 CPU uses them."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from gpt2_core import GPT, get_preset
from gpt2_core import linear as linear_module
from gpt2_core.linear import Linear, linear, onednn_available

needs_onednn = pytest.mark.skipif(not onednn_available(), reason="no oneDNN fp32 path on this machine")


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, ...]]:
    """Shapes of the inputs of every oneDNN product made while the test runs, small products included."""
    monkeypatch.setattr(linear_module, "MIN_MACS", 0)
    monkeypatch.setattr(linear_module, "MIN_WEIGHT_GRAD_IN", 0)
    seen: list[tuple[int, ...]] = []
    real = linear_module._onednn

    def spy(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
        seen.append(tuple(x.shape))
        return real(x, w, b)

    monkeypatch.setattr(linear_module, "_onednn", spy)
    return seen


def grads(fn, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> list[torch.Tensor]:  # noqa: ANN001
    leaves = [t.detach().clone().requires_grad_() for t in (x, w, b) if t is not None]
    out = fn(*leaves) if b is not None else fn(*leaves, None)
    out.backward(torch.randn(out.shape, generator=torch.Generator().manual_seed(3)))
    return [out.detach()] + [t.grad for t in leaves]


@needs_onednn
@pytest.mark.parametrize("shape", [(5, 24), (2, 7, 24)])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("transposed_input", [False, True])
def test_output_and_gradients_equal_f_linear(
    calls: list, shape: tuple[int, ...], bias: bool, transposed_input: bool
) -> None:
    torch.manual_seed(0)
    x = torch.randn(shape)
    if transposed_input:  # a non-contiguous input, as attention's reshapes can give
        x = torch.randn(tuple(reversed(shape))).transpose(0, -1)
    w, b = torch.randn(40, 24), (torch.randn(40) if bias else None)
    ours, ref = grads(linear, x, w, b), grads(F.linear, x, w, b)
    assert len(calls) == 3  # forward, input gradient, weight gradient all went through oneDNN
    for a, r in zip(ours, ref, strict=True):
        torch.testing.assert_close(a, r, rtol=1e-5, atol=1e-5)


@needs_onednn
def test_small_products_and_narrow_weight_gradients_stay_on_blas(
    calls: list, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(linear_module, "MIN_MACS", 4 * 8 * 6)
    monkeypatch.setattr(linear_module, "MIN_WEIGHT_GRAD_IN", 9)
    monkeypatch.setattr(linear_module, "MAX_CACHED_COPY", 4 * 6 - 1)
    x, w = torch.randn(4, 8, requires_grad=True), torch.randn(6, 8, requires_grad=True)
    linear(x[:3], w).sum().backward()  # 3 * 8 * 6 multiply-adds: F.linear
    assert calls == []
    out, ref = grads(linear, x, w, None), grads(F.linear, x, w, None)
    assert calls == [(4, 8), (4, 6)]  # 8 inputs < 9 and a 4 x 6 copy: weight gradient on BLAS
    for a, r in zip(out, ref, strict=True):
        torch.testing.assert_close(a, r, rtol=1e-5, atol=1e-5)


@needs_onednn
def test_only_the_needed_gradients_are_computed(calls: list) -> None:
    x, w = torch.randn(4, 8), torch.randn(6, 8, requires_grad=True)
    linear(x, w).sum().backward()  # x needs no gradient: forward and weight gradient only
    assert len(calls) == 2 and w.grad is not None
    with torch.no_grad():
        linear(x, w)
    assert len(calls) == 3


@needs_onednn
@pytest.mark.filterwarnings("ignore:`torch.jit.trace` is deprecated")
def test_other_dtypes_autocast_and_tracing_use_f_linear(calls: list) -> None:
    x, w = torch.randn(4, 8), torch.randn(6, 8)
    assert linear(x.bfloat16(), w.bfloat16()).dtype == torch.bfloat16
    with torch.autocast("cpu", torch.bfloat16):
        assert linear(x, w).dtype == torch.bfloat16  # autocast applies as to nn.Linear
    torch.jit.trace(lambda a: linear(a, w), (x,), check_trace=False)  # the legacy ONNX exporter traces
    assert calls == []
    linear(x, w)
    assert calls == [(4, 8)]


def test_linear_is_an_nn_linear_with_the_same_state_dict() -> None:
    torch.manual_seed(0)
    ours = Linear(8, 6)
    ref = nn.Linear(8, 6)
    ref.load_state_dict(ours.state_dict())
    assert isinstance(ours, nn.Linear) and ours.state_dict().keys() == ref.state_dict().keys()
    x = torch.randn(3, 8)
    torch.testing.assert_close(ours(x), ref(x))


@needs_onednn
def test_model_training_step_matches_f_linear(monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(0)
    ours = GPT(get_preset("nano"))
    ref = copy.deepcopy(ours)
    idx, targets = torch.randint(0, 50257, (2, 16)), torch.randint(0, 50257, (2, 16))
    calls: list[tuple[int, ...]] = []
    real = linear_module._onednn
    monkeypatch.setattr(linear_module, "_onednn", lambda *a: calls.append(a[0].shape) or real(*a))
    _, loss = ours(idx, targets)
    loss.backward()
    assert len(calls) == 3  # at the default thresholds only the LM head (32 x 32 x 50257) is big enough
    monkeypatch.setattr(linear_module, "onednn_available", lambda: False)
    _, ref_loss = ref(idx, targets)
    ref_loss.backward()
    assert loss.item() == pytest.approx(ref_loss.item(), rel=1e-6)
    for (name, p), q in zip(ours.named_parameters(), ref.parameters(), strict=True):
        torch.testing.assert_close(p.grad.to_dense(), q.grad.to_dense(), rtol=1e-4, atol=1e-6, msg=name)
