from __future__ import annotations

import pytest
import torch
from gpt2_core import GPT, UserError
from gpt2_core.device import pick_dtype
from gpt2_core.generation import generate_ids
from gpt2_core.sampling import SamplingConfig

CPU = torch.device("cpu")


def test_explicit_dtypes_and_a_bad_one() -> None:
    assert pick_dtype("float32", CPU) is torch.float32
    assert pick_dtype("bf16", CPU) is torch.bfloat16
    with pytest.raises(UserError, match="--dtype"):
        pick_dtype("int3", CPU)


@pytest.mark.parametrize(
    ("caps", "want"),
    [({"avx512_bf16": True}, torch.bfloat16), ({"amx_bf16": True}, torch.bfloat16), ({}, torch.float32)],
)
def test_auto_is_bf16_only_where_the_cpu_computes_in_it(
    monkeypatch: pytest.MonkeyPatch, caps: dict[str, bool], want: torch.dtype
) -> None:
    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: caps)
    assert pick_dtype("auto", CPU) is want
    assert pick_dtype("auto", torch.device("meta")) is torch.float32


def test_a_bf16_model_generates_with_a_bf16_cache(nano: GPT) -> None:
    model = nano.to(torch.bfloat16)
    cfg = SamplingConfig(max_new_tokens=12, temperature=0, stop_at_eot=False, num_return_sequences=2)
    steps = torch.stack(list(generate_ids(model, [464, 3290, 318], cfg)), dim=1)
    assert steps.shape == (2, 12) and torch.equal(steps[0], steps[1])
