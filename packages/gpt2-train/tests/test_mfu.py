"""MFU's ingredients: FLOPs per token, and the peak of the device in the dtype its matmuls run in."""

from __future__ import annotations

import pytest
import torch
from gpt2_core import GPT, get_preset
from gpt2_train import mfu
from gpt2_train.precision import autocast_dtype


def test_flops_per_token_is_6n_plus_attention() -> None:
    model = GPT(get_preset("nano"))
    c = model.config
    assert mfu.flops_per_token(model, 64) == 6 * model.num_params() + 12 * c.n_layer * c.n_embd * 64


def test_a_data_vocabulary_head_counts_only_its_rows() -> None:
    model = GPT(get_preset("nano"))
    c = model.config
    dropped = (c.padded_vocab_size - 1000) * c.n_embd
    assert mfu.flops_per_token(model, 64, head_rows=1000) == mfu.flops_per_token(model, 64) - 6 * dropped


def test_an_untied_model_counts_its_head_not_its_lookup() -> None:
    """Untied, the token embedding is a lookup (no FLOPs) and the head the matmul: N is the tied model's
    parameters plus nothing, and a data-vocabulary head cuts the head's rows as before."""
    tied = GPT(get_preset("nano"))
    untied = GPT(get_preset("nano", tie_word_embeddings=False))
    assert untied.num_params() == tied.num_params() + tied.transformer.wte.weight.numel()
    assert mfu.flops_per_token(untied, 64) == mfu.flops_per_token(tied, 64)
    assert mfu.flops_per_token(untied, 64, head_rows=1000) == mfu.flops_per_token(tied, 64, head_rows=1000)


@pytest.mark.parametrize(
    ("caps", "factor"), [({}, 1), ({"avx512_bf16": True}, 2), ({"amx_bf16": True, "avx512_bf16": True}, None)]
)
def test_cpu_bf16_peak_follows_the_instructions(
    monkeypatch: pytest.MonkeyPatch, caps: dict, factor: int | None
) -> None:
    monkeypatch.delenv(mfu.PEAK_ENV, raising=False)
    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: caps)
    cpu = torch.device("cpu")
    fp32, desc = mfu.peak_flops(cpu)
    bf16, bf16_desc = mfu.peak_flops(cpu, torch.bfloat16)
    assert fp32 > 0 and "fp32" in desc
    if factor is None:  # AMX: 1024 FLOPs per cycle per core
        assert bf16 > 8 * fp32 and "AMX" in bf16_desc
    else:
        assert bf16 == factor * fp32


def test_peak_env_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(mfu.PEAK_ENV, "1e12")
    assert mfu.peak_flops(torch.device("cpu"), torch.bfloat16)[0] == 1e12


@pytest.mark.parametrize("native", [True, False])
def test_auto_precision_is_bf16_only_where_native(monkeypatch: pytest.MonkeyPatch, native: bool) -> None:
    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: {"avx512_bf16": native})
    cpu = torch.device("cpu")
    assert autocast_dtype("auto", cpu) == (torch.bfloat16 if native else None)
    assert autocast_dtype("bf16", cpu) == torch.bfloat16
    assert autocast_dtype("fp32", cpu) is None
