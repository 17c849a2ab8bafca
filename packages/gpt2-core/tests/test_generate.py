"""Generation: KV cache vs none, seeds, top-k/top-p, batching, stops, streaming, the sliding window."""

from __future__ import annotations

import copy
from collections.abc import Iterator

import pytest
import torch
from gpt2_core import GPT, UserError
from gpt2_core import generation as gen
from gpt2_core.generation import generate, generate_ids, sample_next, stream
from gpt2_core.kv_cache import KVCache
from gpt2_core.sampling import SamplingConfig
from gpt2_core.tokenizer import Tokenizer

GREEDY = SamplingConfig(max_new_tokens=30, temperature=0, stop_at_eot=False)


def ids_of(model: GPT, prompt: list[int], cfg: SamplingConfig, use_cache: bool = True) -> list[list[int]]:
    steps = list(generate_ids(model, prompt, cfg, use_cache=use_cache))
    return torch.stack(steps, dim=1).tolist()


@pytest.mark.parametrize("n", [1, 3])
def test_greedy_with_cache_equals_without(nano: GPT, tokenizer: Tokenizer, n: int) -> None:
    prompt = tokenizer.encode("The meaning of life is")
    cfg = SamplingConfig(max_new_tokens=30, temperature=0, stop_at_eot=False, num_return_sequences=n)
    cached = ids_of(nano, prompt, cfg)
    assert len(cached) == n and len(cached[0]) == 30
    assert cached == ids_of(nano, prompt, cfg, use_cache=False)
    assert all(row == cached[0] for row in cached)


def test_a_bf16_model_on_a_cpu_attends_in_fp32_through_its_cache(nano: GPT) -> None:
    """On a CPU the cache holds fp32 keys and values whatever the model's dtype (``cache_dtype``: torch's bf16
    attention is the slower there); the model sees its own dtype back, and decoding through the cache gives
    the logits of a forward pass without one, within bf16 rounding."""
    model = copy.deepcopy(nano).to(torch.bfloat16).eval()
    cache = KVCache(model.config, 2, "cpu", torch.bfloat16)
    assert cache.k.dtype == cache.v.dtype == torch.float32
    ids = torch.randint(0, 50257, (2, 12), generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        model(ids[:, :8], kv_cache=cache)
        stepped = [model(ids[:, t : t + 1], kv_cache=cache)[0] for t in range(8, 12)]
        uncached = [model(ids[:, : t + 1])[0] for t in range(8, 12)]  # attention in bf16
    for logits, reference in zip(stepped, uncached, strict=True):
        assert logits.dtype == torch.bfloat16
        torch.testing.assert_close(logits.float(), reference.float(), atol=0.1, rtol=0.05)


def test_same_seed_same_text(nano: GPT, tokenizer: Tokenizer) -> None:
    cfg = SamplingConfig(max_new_tokens=20, seed=123, top_k=0, num_return_sequences=2)
    first = generate(nano, tokenizer, "Once upon a time", cfg)
    assert first == generate(nano, tokenizer, "Once upon a time", cfg)
    other = generate(
        nano, tokenizer, "Once upon a time", SamplingConfig(max_new_tokens=20, seed=124, top_k=0)
    )
    assert other[0] != first[0]


def test_generation_leaves_the_model_mode_alone(nano: GPT, tokenizer: Tokenizer) -> None:
    nano.train()
    generate(nano, tokenizer, "x", SamplingConfig(max_new_tokens=2, seed=0))
    assert nano.training


def test_top_k_one_is_greedy_and_top_k_limits_the_choice() -> None:
    torch.manual_seed(0)
    logits = torch.randn(4, 100)
    cfg1 = SamplingConfig(top_k=1, temperature=1.5)
    assert torch.equal(sample_next(logits, cfg1, 100), logits.argmax(-1))
    top3 = set(logits[0].topk(3).indices.tolist())
    g = torch.Generator().manual_seed(0)
    picks = {
        int(sample_next(logits[:1], SamplingConfig(top_k=3, temperature=5.0), 100, g)) for _ in range(300)
    }
    assert picks == top3


def test_top_p_keeps_the_smallest_nucleus() -> None:
    probs = torch.tensor([[0.05, 0.5, 0.15, 0.3]])
    logits = probs.log()
    g = torch.Generator().manual_seed(0)

    def picks(top_p: float) -> set[int]:
        cfg = SamplingConfig(top_p=top_p, top_k=0)
        return {int(sample_next(logits, cfg, 4, g)) for _ in range(300)}

    assert picks(0.5) == {1}
    assert picks(0.7) == {1, 3}
    assert picks(0.9) == {1, 3, 2}
    assert picks(1.0) == {0, 1, 2, 3}


def test_padded_ids_are_never_sampled() -> None:
    logits = torch.zeros(3, 64)
    logits[:, 50:] = 100.0  # padding rows made irresistible
    for cfg in (SamplingConfig(temperature=0), SamplingConfig(top_k=0), SamplingConfig(top_p=0.5)):
        assert int(sample_next(logits, cfg, 50).max()) < 50


def test_padded_model_never_generates_padding(always) -> None:
    from gpt2_core import get_preset

    torch.manual_seed(0)
    model = always(GPT(get_preset("nano").padded()), 50300)  # a padding row wins every time
    for cfg in (GREEDY, SamplingConfig(max_new_tokens=10, top_k=5, seed=0, stop_at_eot=False)):
        assert max(max(row) for row in ids_of(model, [1, 2, 3], cfg)) < 50257


def test_num_return_sequences_is_one_batch(nano: GPT, monkeypatch: pytest.MonkeyPatch) -> None:
    batches: list[int] = []
    forward = nano.forward
    monkeypatch.setattr(
        nano, "forward", lambda idx, *a, **k: batches.append(idx.size(0)) or forward(idx, *a, **k)
    )
    cfg = SamplingConfig(max_new_tokens=6, seed=0, num_return_sequences=4, stop_at_eot=False)
    rows = ids_of(nano, [10, 11, 12], cfg)
    assert len(rows) == 4 and len(batches) == 6  # one forward per step for all four
    assert batches[0] == 1 and set(batches[1:]) == {4}  # the shared prompt runs once
    assert len({tuple(r) for r in rows}) > 1  # sampled independently


def test_stops_at_endoftext(nano: GPT, tokenizer: Tokenizer, always) -> None:
    always(nano, tokenizer.eot_id)
    steps = list(generate_ids(nano, [1, 2], SamplingConfig(max_new_tokens=10, temperature=0)))
    assert len(steps) == 1
    assert generate(nano, tokenizer, "hi", SamplingConfig(max_new_tokens=10, temperature=0)) == [""]
    assert list(stream(nano, tokenizer, "hi", SamplingConfig(max_new_tokens=10, temperature=0))) == []
    # Without stop_at_eot it keeps going.
    cfg = SamplingConfig(max_new_tokens=3, temperature=0, stop_at_eot=False)
    assert generate(nano, tokenizer, "hi", cfg) == ["<|endoftext|>" * 3]


def test_stops_at_a_stop_string(nano: GPT, tokenizer: Tokenizer, always) -> None:
    (hello,) = tokenizer.encode("Hello")
    always(nano, hello)
    cfg = SamplingConfig(max_new_tokens=20, temperature=0, stop=["loHel"], num_return_sequences=2)
    assert generate(nano, tokenizer, "", cfg) == ["Hel", "Hel"]
    cfg = SamplingConfig(max_new_tokens=20, temperature=0, stop=["loHel"])
    assert "".join(stream(nano, tokenizer, "", cfg)) == "Hel"
    cfg = SamplingConfig(max_new_tokens=3, temperature=0, stop=["absent"])
    assert generate(nano, tokenizer, "", cfg) == ["HelloHelloHello"]
    assert "".join(stream(nano, tokenizer, "", cfg)) == "HelloHelloHello"


def fake_generate_ids(tokens: list[int]):  # noqa: ANN201
    def fake(model, prompt_ids, cfg, **kwargs) -> Iterator[torch.Tensor]:  # noqa: ANN001
        for t in tokens[: cfg.max_new_tokens]:
            yield torch.tensor([t] * cfg.num_return_sequences)

    return fake


@pytest.mark.parametrize("text", ["a 🙂 b 日本語 👨‍👩‍👧!", "🇫🇷🇫🇷", "ñ€𝄞"])
def test_streaming_never_splits_a_character(
    nano: GPT, tokenizer: Tokenizer, monkeypatch: pytest.MonkeyPatch, text: str
) -> None:
    # Byte-level tokens: one per byte, so every multi-byte character is split across tokens.
    byte_tokens = [tokenizer.encoding.encode_single_token(bytes([b])) for b in text.encode()]
    assert len(byte_tokens) > len(text)
    monkeypatch.setattr(gen, "generate_ids", fake_generate_ids(byte_tokens))
    cfg = SamplingConfig(max_new_tokens=len(byte_tokens))
    pieces = list(stream(nano, tokenizer, "", cfg))
    assert "".join(pieces) == text == generate(nano, tokenizer, "", cfg)[0]
    assert all("\ufffd" not in p for p in pieces)


def test_streaming_concatenates_to_the_generated_text(nano: GPT, tokenizer: Tokenizer) -> None:
    cfg = SamplingConfig(max_new_tokens=40, seed=7, top_k=0, stop_at_eot=False)
    assert "".join(stream(nano, tokenizer, "Hi", cfg)) == generate(nano, tokenizer, "Hi", cfg)[0]
    with pytest.raises(UserError, match="num-seq"):
        list(stream(nano, tokenizer, "Hi", SamplingConfig(num_return_sequences=2)))


def test_stream_reports_its_ids_and_closing_it_leaves_the_cache_consistent(
    nano: GPT, tokenizer: Tokenizer
) -> None:
    cfg = SamplingConfig(max_new_tokens=10, temperature=0, stop_at_eot=False)
    prompt = tokenizer.encode("Hi there")
    ids = [int(t[0]) for t in generate_ids(nano, prompt, cfg)]
    generated: list[int] = []
    assert "".join(stream(nano, tokenizer, "", cfg, prompt_ids=prompt, generated=generated))
    assert generated == ids
    cache = KVCache(nano.config, 1, "cpu", torch.float32)
    generated.clear()
    pieces = stream(nano, tokenizer, "", cfg, prompt_ids=prompt, kv_cache=cache, generated=generated)
    next(pieces)
    pieces.close()
    # Stopped after the first piece: the cache holds the prompt and every new id but the last.
    assert cache.length == len(prompt) + len(generated) - 1
    assert generated == ids[: len(generated)]


@pytest.mark.parametrize("use_cache", [True, False])
def test_beyond_the_context_window_the_window_slides(nano: GPT, use_cache: bool) -> None:
    window = nano.config.block_size
    for prompt_len in (window - 5, window, 2 * window):
        rows = ids_of(nano, list(range(prompt_len)), GREEDY, use_cache=use_cache)
        assert len(rows[0]) == GREEDY.max_new_tokens


def test_empty_prompt_starts_from_endoftext(
    nano: GPT, tokenizer: Tokenizer, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[list[int]] = []
    forward = nano.forward
    monkeypatch.setattr(
        nano, "forward", lambda idx, *a, **k: seen.append(idx[0].tolist()) or forward(idx, *a, **k)
    )
    (text,) = generate(nano, tokenizer, "", SamplingConfig(max_new_tokens=3, seed=0, stop_at_eot=False))
    assert seen[0] == [tokenizer.eot_id]
    assert isinstance(text, str)


def test_sampling_config_validation() -> None:
    for bad in (
        {"max_new_tokens": -1},
        {"temperature": -1},
        {"top_k": -1},
        {"top_p": 0},
        {"num_return_sequences": 0},
    ):
        with pytest.raises(UserError):
            SamplingConfig(**bad)
