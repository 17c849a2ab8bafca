"""Weight-only int8 (``gpt2_core.quantize``): the swap, the kernel's arithmetic, and the quality it costs on a
model trained here for a few seconds."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from gpt2_core import GPT, get_preset
from gpt2_core.errors import UserError
from gpt2_core.generation import SamplingConfig, generate_ids
from gpt2_core.llm import LLM
from gpt2_core.quantize import Int8Linear, quantize_int8
from trained_tiny import trained_tiny


def test_int8_linear_is_the_dequantized_product() -> None:
    torch.manual_seed(0)
    lin = nn.Linear(64, 96)
    q = Int8Linear.from_float(lin.weight, lin.bias)
    assert q.weight.dtype == torch.int8 and q.weight.abs().amax(1).ge(126).all()  # per-row scales
    w = q.dequantized().float()
    step = q.scales.float()[:, None]
    assert ((w - lin.weight).abs() <= 0.51 * step).all()  # rounding: half a step (a clamp at 127 a hair more)
    x = torch.randn(3, 5, 64)
    with torch.no_grad():
        # The CPU kernel reads bf16 inputs: within bf16's rounding of the exact product.
        torch.testing.assert_close(q(x), F.linear(x, w, lin.bias), atol=2e-2, rtol=2e-2)
        assert q(x).dtype == torch.float32 and q(x.bfloat16()).dtype == torch.bfloat16


def test_quantize_swaps_every_linear_and_the_head(nano: GPT) -> None:
    model = quantize_int8(copy.deepcopy(nano))  # the fixture is shared
    assert not any(isinstance(m, nn.Linear) for m in model.modules())
    assert isinstance(model.lm_head, Int8Linear)
    assert model.transformer.wte.weight.dtype == torch.float32  # the lookups stay in float
    assert sum(isinstance(m, Int8Linear) for m in model.modules()) == 4 * model.config.n_layer + 1
    kept = quantize_int8(GPT(get_preset("nano")), head=False)
    assert kept.lm_head.weight is kept.transformer.wte.weight


def test_an_untied_head_is_swapped_like_the_other_linears() -> None:
    torch.manual_seed(0)
    model = GPT(get_preset("nano", tie_word_embeddings=False)).eval()
    idx = torch.randint(0, 50257, (2, 8))
    with torch.no_grad():
        expected, _ = model(idx, idx)
    head = model.lm_head.weight.detach().clone()
    quantize_int8(model)
    assert isinstance(model.lm_head, Int8Linear)
    assert model.lm_head.bias is None
    assert ((model.lm_head.dequantized() - head).abs() <= 0.51 * model.lm_head.scales.float()[:, None]).all()
    assert isinstance(model.transformer.wte.weight, nn.Parameter)  # the lookups stay in float
    with torch.no_grad():
        torch.testing.assert_close(model(idx, idx)[0], expected, atol=2e-2, rtol=0)
    kept = quantize_int8(GPT(get_preset("nano", tie_word_embeddings=False)), head=False)
    assert type(kept.lm_head) is nn.Linear


def test_the_loader_quantizes(saved_nano: Path) -> None:
    llm = LLM.load(saved_nano, device="cpu", dtype="float32", quantize="int8")
    assert isinstance(llm.model.lm_head, Int8Linear)
    assert llm.choice.route == "torch" and "no nn.Linear" in llm.choice.reason
    with pytest.raises(UserError, match="--quantize must be one of none, int8, got 'int4'"):
        LLM.load(saved_nano, device="cpu", quantize="int4")


@pytest.fixture(scope="module")
def trained() -> tuple[GPT, torch.Tensor, list[int]]:
    """A small model trained for 150 steps on this repository's READMEs, held-out tokens, and the README
    prompt (``trained_tiny``)."""
    model, val, prompt, _ = trained_tiny()
    return model, val, prompt


def _val_loss(model: GPT, val: torch.Tensor) -> float:
    n = (len(val) - 1) // 64 * 64
    x, y = val[:n].view(-1, 64), val[1 : n + 1].view(-1, 64)
    with torch.no_grad():
        return float(model(x, targets=y)[1])


def test_int8_costs_under_one_percent_of_val_loss_and_keeps_greedy_text(trained) -> None:
    model, val, prompt = trained
    quantized = quantize_int8(copy.deepcopy(model))
    fp32, int8 = _val_loss(model, val), _val_loss(quantized, val)
    assert fp32 < 6.5  # it learned something (uniform: ln 2553 = 7.8)
    assert abs(int8 - fp32) / fp32 < 0.01, (fp32, int8)
    assert len(prompt) > 5
    cfg = SamplingConfig(max_new_tokens=20, temperature=0.0, stop_at_eot=False)
    greedy = [[int(t[0]) for t in generate_ids(m, prompt, cfg, eot_id=-1)] for m in (model, quantized)]
    assert greedy[0] == greedy[1] and len(greedy[0]) == 20
    print(f"val loss fp32 {fp32:.4f} int8 {int8:.4f} ({(int8 - fp32) / fp32:+.3%})")
