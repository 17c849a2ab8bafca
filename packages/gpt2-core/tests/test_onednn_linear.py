"""``gpt2_core.onednn_linear``: oneDNN's fp32 products equal F.linear's, gradients included, only fp32 CPU
uses them, and swapping a model's layers keeps its parameters and state dict."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.autograd.forward_ad as forward_ad
import torch.nn as nn
import torch.nn.functional as F
from gpt2_core import GPT, get_preset
from gpt2_core import onednn_linear as linear_module
from gpt2_core.onednn_linear import OneDNNLinear, onednn_built, swap_in, swap_out
from gpt2_core.onednn_linear import onednn_linear as linear

needs_onednn = pytest.mark.skipif(not onednn_built(), reason="no oneDNN fp32 linear in this build")


def spy_on_onednn(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, ...]]:
    """Record the input shape of every oneDNN product."""
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


def test_swapped_layers_keep_their_parameters_state_dict_and_ties() -> None:
    torch.manual_seed(0)
    model = GPT(get_preset("nano"))
    ref = copy.deepcopy(model)
    params = dict(model.named_parameters())
    optimizer = torch.optim.AdamW(model.parameters())  # built before the swap, as a trainer may
    names = swap_in(model)
    assert names == [n for n, m in ref.named_modules() if isinstance(m, nn.Linear)]
    assert all(type(model.get_submodule(n)) is OneDNNLinear for n in names)
    assert dict(model.named_parameters()) == params  # the same Parameter objects
    assert model.lm_head.weight is model.transformer.wte.weight
    assert optimizer.param_groups[0]["params"] == list(params.values())
    state, ref_state = model.state_dict(), ref.state_dict()
    assert list(state) == list(ref_state)
    for k in state:
        assert torch.equal(state[k], ref_state[k]), k
    ref.load_state_dict(state)  # and a swapped model's checkpoint loads into a plain one
    swap_out(model)
    assert all(type(m) is nn.Linear for m in model.modules() if isinstance(m, nn.Linear))


def test_float8_and_other_linear_subclasses_are_left_alone() -> None:
    class Custom(nn.Linear):
        pass

    model = nn.Sequential(nn.Linear(4, 4), Custom(4, 4))
    assert swap_in(model) == ["0"] and type(model[1]) is Custom


@needs_onednn
def test_model_training_step_matches_f_linear(monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(0)
    ours = GPT(get_preset("nano"))
    ref = copy.deepcopy(ours)
    swap_in(ours)
    idx, targets = torch.randint(0, 50257, (2, 16)), torch.randint(0, 50257, (2, 16))
    with monkeypatch.context() as m:
        calls = spy_on_onednn(m)
        _, loss = ours(idx, targets)
        loss.backward()
    # At the default thresholds the LM head (32 tokens x 32 x 50257) is big enough, nano's blocks are not.
    assert (2, 16, 32) in calls and (2, 16, 50257) in calls
    _, ref_loss = ref(idx, targets)  # plain nn.Linear
    ref_loss.backward()
    assert loss.item() == pytest.approx(ref_loss.item(), rel=1e-6)
    for (name, p), q in zip(ours.named_parameters(), ref.parameters(), strict=True):
        torch.testing.assert_close(p.grad.to_dense(), q.grad.to_dense(), rtol=1e-4, atol=1e-6, msg=name)
