"""``gpt2_core.linear``: oneDNN's fp32 products equal F.linear's, gradients included, and only fp32 CPU uses them."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.autograd.forward_ad as forward_ad
import torch.nn as nn
import torch.nn.functional as F
from gpt2_core import GPT, get_preset
from gpt2_core import linear as linear_module
from gpt2_core.linear import Linear, linear, onednn_built

# The oneDNN path runs on AMD CPUs only; any x86 build with the op can test it.
needs_onednn = pytest.mark.skipif(not onednn_built(), reason="no oneDNN fp32 linear in this build")


def spy_on_onednn(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, ...]]:
    """Turn the oneDNN path on here and record the input shape of every oneDNN product."""
    monkeypatch.setattr(linear_module, "onednn_available", lambda: True)
    seen: list[tuple[int, ...]] = []
    real = linear_module._onednn

    def spy(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
        seen.append(tuple(x.shape))
        return real(x, w, b)

    monkeypatch.setattr(linear_module, "_onednn", spy)
    return seen


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, ...]]:
    """``spy_on_onednn`` with the size thresholds off: small test products go through oneDNN too."""
    monkeypatch.setattr(linear_module, "MIN_MACS", 0)
    monkeypatch.setattr(linear_module, "MIN_WEIGHT_GRAD_IN", 0)
    return spy_on_onednn(monkeypatch)


def grads(fn, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None, needs=(True, True, True)) -> list:  # noqa: ANN001
    """The output and the gradients of the inputs flagged in ``needs`` (None for the others)."""
    leaves = [None if t is None else t.detach().clone().requires_grad_(n) for t, n in zip((x, w, b), needs)]
    out = fn(*leaves)
    out.backward(torch.randn(out.shape, generator=torch.Generator().manual_seed(3)))
    return [out.detach()] + [None if t is None else t.grad for t in leaves]


def assert_same(ours: list, ref: list) -> None:
    for a, r in zip(ours, ref, strict=True):
        assert (a is None) == (r is None)
        if a is not None:
            torch.testing.assert_close(a, r, rtol=1e-5, atol=1e-5)


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
    assert_same(grads(linear, x, w, b), grads(F.linear, x, w, b))
    assert len(calls) == 3  # forward, input gradient, weight gradient all went through oneDNN


@needs_onednn
@pytest.mark.parametrize(
    "needs, products",
    [((False, True, True), 2), ((True, False, False), 2), ((False, False, True), 1)],
    ids=["frozen input", "frozen weight and bias", "bias only"],
)
def test_only_the_needed_gradients_are_computed(calls: list, needs: tuple, products: int) -> None:
    x, w, b = torch.randn(4, 8), torch.randn(6, 8), torch.randn(6)
    assert_same(grads(linear, x, w, b, needs), grads(F.linear, x, w, b, needs))
    assert len(calls) == products
    with torch.no_grad():
        linear(x, w)
    assert len(calls) == products + 1


@needs_onednn
def test_small_products_and_narrow_weight_gradients_stay_on_mkl(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = spy_on_onednn(monkeypatch)
    monkeypatch.setattr(linear_module, "MIN_MACS", 2 * 4 * 8 * 6)
    monkeypatch.setattr(linear_module, "MIN_WEIGHT_GRAD_IN", 9)
    monkeypatch.setattr(linear_module, "MAX_CACHED_COPY", 2 * 4 * 6 - 1)
    x, w, b = torch.randn(2, 4, 8), torch.randn(6, 8), torch.randn(6)
    assert_same(grads(linear, x[:1], w, b), grads(F.linear, x[:1], w, b))  # 4 x 8 x 6 multiply-adds: F.linear
    assert calls == []
    assert_same(grads(linear, x, w, b), grads(F.linear, x, w, b))
    assert calls == [(2, 4, 8), (2, 4, 6)]  # 8 inputs < 9 and a 2 x 4 x 6 copy: weight gradient on MKL


@needs_onednn
@pytest.mark.filterwarnings(
    "ignore:`torch.jit.trace` is deprecated", "ignore:`torch.jit.script` is deprecated"
)
@pytest.mark.filterwarnings("ignore:TF32 acceleration on top of oneDNN")
def test_other_dtypes_autocast_tracing_compiling_and_switches_use_f_linear(calls: list) -> None:
    x, w = torch.randn(4, 8), torch.randn(6, 8)
    assert linear(x.bfloat16(), w.bfloat16()).dtype == torch.bfloat16
    with torch.autocast("cpu", torch.bfloat16):
        assert linear(x, w).dtype == torch.bfloat16  # autocast applies as to nn.Linear
    torch.jit.trace(lambda a: linear(a, w), (x,), check_trace=False)  # the legacy ONNX exporter traces
    torch.compile(lambda a: linear(a, w), backend="eager", fullgraph=True)(x)
    with torch.backends.mkldnn.flags(enabled=False):
        linear(x, w)
    with forward_ad.dual_level():
        tangent = forward_ad.unpack_dual(linear(forward_ad.make_dual(x, torch.ones_like(x)), w)).tangent
    torch.testing.assert_close(tangent, F.linear(torch.ones_like(x), w))
    torch.testing.assert_close(torch.func.grad(lambda a: linear(a, w).sum())(x), w.sum(0).expand(4, 8))
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
    with monkeypatch.context() as m:
        calls = spy_on_onednn(m)
        _, loss = ours(idx, targets)
        loss.backward()
    # At the default thresholds the LM head (32 tokens x 32 x 50257) is big enough, nano's blocks are not.
    assert (2, 16, 32) in calls and (2, 16, 50257) in calls
    _, ref_loss = ref(idx, targets)  # F.linear (the spy and the switch are undone)
    ref_loss.backward()
    assert loss.item() == pytest.approx(ref_loss.item(), rel=1e-6)
    for (name, p), q in zip(ours.named_parameters(), ref.parameters(), strict=True):
        torch.testing.assert_close(p.grad.to_dense(), q.grad.to_dense(), rtol=1e-4, atol=1e-6, msg=name)
