"""Weight-only int8 (``gpt2_core.quantize``): the swap and the kernel's arithmetic."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from gpt2_core import GPT, get_preset
from gpt2_core.errors import UserError
from gpt2_core.quantize import Int8Linear, quantize_int8
from gpt2_core.runtime import RuntimeConfig, load_for_inference


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


def test_load_for_inference_quantizes(saved_nano: Path) -> None:
    model, choice = load_for_inference(
        saved_nano, RuntimeConfig(device="cpu", dtype="float32", quantize="int8")
    )
    assert isinstance(model.lm_head, Int8Linear)
    assert choice.route == "torch" and "no nn.Linear" in choice.reason
    with pytest.raises(UserError, match="--quantize must be one of none, int8, got 'int4'"):
        load_for_inference(saved_nano, RuntimeConfig(device="cpu", quantize="int4"))
