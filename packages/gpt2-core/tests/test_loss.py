"""The blockwise cross-entropy equals F.cross_entropy, and the sparse tied embedding equals a dense one."""

from __future__ import annotations

import copy
from unittest import mock

import pytest
import torch
import torch.nn.functional as F
from gpt2_core import GPT, get_preset
from gpt2_core import loss as loss_module
from gpt2_core.loss import cross_entropy


def both(logits: torch.Tensor, targets: torch.Tensor, ignore_index: int = -100) -> tuple:
    """(loss, grad) of ours and of F.cross_entropy on fp32 copies of ``logits``, for an upstream grad 1.7."""
    out = []
    for fn in (
        lambda x: cross_entropy(x, targets, ignore_index),
        lambda x: F.cross_entropy(x.float(), targets, ignore_index=ignore_index),
    ):
        x = logits.clone().requires_grad_()
        loss = fn(x)
        loss.backward(torch.tensor(1.7))
        assert loss.dtype == torch.float32 and x.grad.dtype == logits.dtype
        out.append((loss.detach(), x.grad.float()))
    return out


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("block", [1 << 19, 3 * 1000])  # one block; blocks of 3 rows, the last one short
def test_equals_torch_cross_entropy(monkeypatch: pytest.MonkeyPatch, dtype: torch.dtype, block: int) -> None:
    monkeypatch.setattr(loss_module, "CPU_BLOCK", block)
    torch.manual_seed(0)
    logits = (torch.randn(37, 1000) * 4).to(dtype)
    targets = torch.randint(0, 1000, (37,))
    targets[::5] = -100
    (ours, g_ours), (ref, g_ref) = both(logits, targets)
    assert ours.item() == pytest.approx(ref.item(), rel=1e-6)
    tol = 1e-7 if dtype == torch.float32 else 1e-4  # bf16 gradients round to 8 bits
    assert torch.allclose(g_ours, g_ref, atol=tol, rtol=0 if dtype == torch.float32 else 1e-2)
    assert not g_ours[::5].any()  # ignored rows get no gradient


def test_custom_ignore_index_and_all_ignored() -> None:
    logits = torch.randn(6, 50)
    targets = torch.tensor([1, -1, 3, -1, 5, 6])
    (ours, _), (ref, _) = both(logits, targets, ignore_index=-1)
    assert ours.item() == pytest.approx(ref.item(), rel=1e-6)


@pytest.mark.parametrize("compiling", [False, True])  # the custom Function, and the plain compiled form
def test_all_ignored_is_zero_loss_and_zero_gradient(compiling: bool) -> None:
    x = torch.randn(6, 50).requires_grad_()
    with mock.patch.object(torch.compiler, "is_compiling", return_value=compiling):
        loss = cross_entropy(x, torch.full((6,), -100))
    assert (
        loss.item() == 0.0
    )  # F.cross_entropy gives NaN here: a micro-batch cut to its prompt would poison the step
    loss.backward()
    assert x.grad is not None and not x.grad.any() and not x.grad.isnan().any()


def test_target_out_of_range_is_an_error() -> None:
    with pytest.raises(RuntimeError):
        cross_entropy(torch.randn(2, 10), torch.tensor([3, 10]))


def test_sparse_tied_embedding_gives_the_dense_gradient() -> None:
    """The token embedding's sparse gradient lands in the tied head's dense one: same sum, dense result."""
    torch.manual_seed(0)
    model = GPT(get_preset("nano")).train()
    dense = copy.deepcopy(model)
    idx = torch.randint(0, 50257, (2, 16))
    for m, sparse in ((model, True), (dense, False)):
        with mock.patch.object(torch.compiler, "is_compiling", return_value=not sparse):
            for _ in range(2):  # two micro-batches: accumulation into an existing .grad too
                _, loss = m(idx, idx)
                loss.backward()
    grad, ref = model.transformer.wte.weight.grad, dense.transformer.wte.weight.grad
    assert grad.layout == torch.strided and model.lm_head.weight.grad is grad
    assert torch.allclose(grad, ref, atol=1e-7, rtol=1e-5)
    before = model.transformer.wte.weight.detach().clone()
    torch.optim.AdamW(model.parameters(), lr=1e-3).step()  # AdamW refuses sparse gradients: this one is dense
    assert not torch.equal(before, model.transformer.wte.weight)
