"""The model: exact GPT-2 shapes and parameter counts, initialisation, vocab padding, loss and KV cache."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from gpt2_core import GPT, PRESETS, GPTConfig, UserError, get_preset
from gpt2_core.kv_cache import KVCache


@pytest.mark.parametrize(
    ("name", "count"),
    [
        ("gpt2", 124_439_808),
        ("gpt2-medium", 354_823_168),
        ("gpt2-large", 774_030_080),
        ("gpt2-xl", 1_557_611_200),
    ],
)
def test_gpt2_presets_have_the_published_parameter_counts(name: str, count: int) -> None:
    with torch.device("meta"):  # shapes only: no memory, no init cost
        model = GPT(get_preset(name))
    assert model.num_params() == count
    assert model.lm_head.weight is model.transformer.wte.weight


@pytest.mark.parametrize("name", ["tiny", "nano"])
def test_small_presets_are_small(name: str) -> None:
    with torch.device("meta"):
        n = GPT(get_preset(name)).num_params()
    assert n < 10_000_000
    if name == "tiny":
        assert n > 1_000_000


def test_parameter_names_follow_hugging_face() -> None:
    with torch.device("meta"):
        model = GPT(get_preset("nano"))
    names = set(model.state_dict())
    for key in (
        "transformer.wte.weight",
        "transformer.wpe.weight",
        "transformer.h.1.ln_1.weight",
        "transformer.h.1.attn.c_attn.weight",
        "transformer.h.1.attn.c_proj.bias",
        "transformer.h.1.ln_2.bias",
        "transformer.h.1.mlp.c_fc.weight",
        "transformer.h.1.mlp.c_proj.weight",
        "transformer.ln_f.weight",
        "lm_head.weight",
    ):
        assert key in names


def test_get_preset_copies_and_rejects_unknown_names() -> None:
    cfg = get_preset("nano", dropout=0.1)
    assert cfg.dropout == 0.1 and PRESETS["nano"].dropout == 0.0
    with pytest.raises(UserError, match="unknown model preset 'gpt5'"):
        get_preset("gpt5")


def test_init_statistics() -> None:
    torch.manual_seed(0)
    cfg = GPTConfig(n_layer=8, n_head=4, n_embd=256, block_size=128)
    model = GPT(cfg)
    h = model.transformer.h
    resid_std = 0.02 / math.sqrt(2 * cfg.n_layer)
    assert model.transformer.wte.weight.std().item() == pytest.approx(0.02, rel=0.02)
    assert model.transformer.wpe.weight.std().item() == pytest.approx(0.02, rel=0.05)
    for block in h:
        assert block.attn.c_attn.weight.std().item() == pytest.approx(0.02, rel=0.05)
        assert block.mlp.c_fc.weight.std().item() == pytest.approx(0.02, rel=0.05)
        assert block.attn.c_proj.weight.std().item() == pytest.approx(resid_std, rel=0.05)
        assert block.mlp.c_proj.weight.std().item() == pytest.approx(resid_std, rel=0.05)
        assert block.attn.c_attn.bias.abs().max().item() == 0
        assert torch.equal(block.ln_1.weight, torch.ones(cfg.n_embd))
        assert block.ln_1.bias.abs().max().item() == 0
    assert cfg.dropout == 0.0 and GPTConfig().dropout == 0.0


def test_config_validation_messages() -> None:
    with pytest.raises(UserError, match="divisible by n_head"):
        GPTConfig(n_embd=30, n_head=4)
    with pytest.raises(UserError, match="dropout"):
        GPTConfig(dropout=1.5)
    with pytest.raises(UserError, match="outside vocab_size"):
        GPTConfig(special_tokens={"<|im_start|>": 50257})
    with pytest.raises(UserError, match="smaller than vocab_size"):
        GPTConfig(padded_vocab_size=100)
    with pytest.raises(UserError, match="tie_word_embeddings must be true or false"):
        GPTConfig(tie_word_embeddings="false")  # type: ignore[arg-type]


def test_padded_vocab_records_both_sizes() -> None:
    cfg = get_preset("nano").padded()
    assert (cfg.vocab_size, cfg.padded_vocab_size) == (50257, 50304)
    assert get_preset("nano").padded_vocab_size == 50257  # unpadded by default
    with torch.device("meta"):
        model = GPT(cfg)
    assert model.transformer.wte.weight.shape == (50304, cfg.n_embd)
    assert GPTConfig.from_dict(cfg.to_dict()) == cfg


def test_forward_with_targets_ignores_masked_positions(nano: GPT) -> None:
    torch.manual_seed(1)
    idx = torch.randint(0, 50257, (2, 10))
    targets = torch.randint(0, 50257, (2, 10))
    targets[0, :4] = -100
    targets[1, 7:] = -100
    logits, loss = nano(idx, targets)
    assert logits.shape == (2, 10, 50257)
    keep = targets != -100
    expected = F.cross_entropy(logits[keep], targets[keep])
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    # What the masked targets would have been does not matter; they get no gradient either.
    other = targets.clone()
    other[~keep] = 7
    _, other_loss = nano(idx, torch.where(keep, targets, torch.full_like(targets, -100)))
    assert other_loss.item() == pytest.approx(loss.item(), rel=1e-6)
    _, unmasked = nano(idx, other)
    assert unmasked.item() != pytest.approx(loss.item(), rel=1e-6)
    # A custom ignore_index works the same way.
    _, custom = nano(idx, torch.where(keep, targets, torch.full_like(targets, -1)), ignore_index=-1)
    assert custom.item() == pytest.approx(loss.item(), rel=1e-6)


def test_without_targets_only_the_last_position_is_computed(nano: GPT) -> None:
    idx = torch.randint(0, 50257, (3, 12))
    logits, loss = nano(idx)
    assert loss is None and logits.shape == (3, 1, 50257)
    full, _ = nano(idx, torch.zeros_like(idx))
    torch.testing.assert_close(logits[:, 0], full[:, -1])


def test_sequence_longer_than_the_window_is_refused(nano: GPT) -> None:
    with pytest.raises(ValueError, match="context window"):
        nano(torch.zeros(1, 65, dtype=torch.long))


@pytest.mark.parametrize("split", [1, 5])
def test_kv_cache_continuation_equals_a_full_forward(nano: GPT, split: int) -> None:
    """Prefill, then one multi-token chunk (cache.length > 0 and T > 1: the explicit mask) and one token."""
    torch.manual_seed(2)
    idx = torch.randint(0, 50257, (2, 12))
    full, _ = nano(idx, torch.zeros_like(idx))
    cache = KVCache(nano.config, 2, "cpu", torch.float32)
    with torch.no_grad():
        first, _ = nano(idx[:, :split], torch.zeros_like(idx[:, :split]), kv_cache=cache)
        assert cache.length == split
        chunk, _ = nano(idx[:, split:11], torch.zeros_like(idx[:, split:11]), kv_cache=cache)
        last, _ = nano(idx[:, 11:], kv_cache=cache)
    assert cache.length == 12
    torch.testing.assert_close(torch.cat([first, chunk, last], dim=1), full, atol=1e-5, rtol=1e-5)


def test_kv_cache_truncate_reuses_a_prefix(nano: GPT) -> None:
    idx = torch.randint(0, 50257, (1, 8))
    cache = KVCache(nano.config, 1, "cpu", torch.float32)
    with torch.no_grad():
        nano(idx, kv_cache=cache)
        cache.truncate(5)
        logits, _ = nano(idx[:, 5:], kv_cache=cache)
        expected, _ = nano(idx)
    torch.testing.assert_close(logits, expected, atol=1e-5, rtol=1e-5)


def test_all_positions_without_targets_equals_the_logits_with_targets() -> None:
    import gpt2_core

    torch.manual_seed(0)
    model = gpt2_core.GPT(gpt2_core.get_preset("nano")).eval()
    idx = torch.randint(0, 50257, (2, 9))
    with torch.no_grad():
        every, loss = model(idx, all_positions=True)
        with_targets, _ = model(idx, idx)
        last, _ = model(idx)
    assert loss is None and every.shape == (2, 9, model.config.padded_vocab_size)
    assert torch.equal(every, with_targets)
    torch.testing.assert_close(every[:, [-1]], last)  # one row vs nine: the BLAS may block them differently
    assert {"Tokenizer", "SamplingConfig", "generate", "stream"} <= set(gpt2_core.__all__)


def test_an_untied_head_is_a_matrix_of_its_own() -> None:
    """``tie_word_embeddings=False``: the head is its own parameter, initialised as the other matrices, counted
    in the parameters, and it and the embedding train apart (the lookup's gradient is dense on the CPU too:
    AdamW refuses a sparse one)."""
    torch.manual_seed(0)
    cfg = GPTConfig(n_layer=2, n_head=2, n_embd=64, block_size=16, tie_word_embeddings=False)
    model = GPT(cfg).train()
    head, wte = model.lm_head.weight, model.transformer.wte.weight
    assert head is not wte and not torch.equal(head, wte)
    assert head.std().item() == pytest.approx(0.02, rel=0.02)
    tied = GPT(GPTConfig(**{**cfg.to_dict(), "tie_word_embeddings": True}))
    assert model.num_params() == tied.num_params() + head.numel()
    assert len(list(model.parameters())) == len(list(tied.parameters())) + 1
    assert "lm_head.weight" in dict(model.named_parameters())

    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    idx = torch.randint(0, cfg.vocab_size, (2, 16))
    _, loss = model(idx, idx)
    loss.backward()
    assert head.grad.layout == torch.strided and wte.grad.layout == torch.strided
    assert not torch.equal(head.grad, wte.grad)
    torch.optim.AdamW(model.parameters(), lr=1e-3).step()
    for name, p in model.named_parameters():
        assert not torch.equal(before[name], p), name
    assert not torch.equal(head, wte)
    with torch.no_grad():
        wte.zero_()  # the head no longer follows the embedding: the logits do not all become equal
        logits, _ = model.eval()(idx)
    assert logits.std() > 0
