"""SlotCache's packed passes (decode tokens and prompt chunks of independent sequences, joining and leaving)
give the tokens each sequence gives alone."""

from __future__ import annotations

import pytest
import torch
from gpt2_core.generation import generate_ids
from gpt2_core.model import GPT
from gpt2_core.presets import get_preset
from gpt2_core.sampling import SamplingConfig
from gpt2_serve.slot_cache import Chunk, SlotCache


@pytest.fixture(scope="module")
def nano() -> GPT:
    """A 2-layer, 32-wide GPT with the full GPT-2 vocabulary and a 64-token window, random weights."""
    torch.manual_seed(0)
    return GPT(get_preset("nano")).eval()


def alone(model: GPT, prompt: list[int], n: int) -> list[int]:
    greedy = SamplingConfig(max_new_tokens=n, temperature=0, stop_at_eot=False)
    return [int(t[0]) for t in generate_ids(model, prompt, greedy)]


@pytest.mark.parametrize("chunk", [1, 7, 1000])
def test_packed_passes_with_chunked_prompts_match_decoding_alone(nano: GPT, chunk: int) -> None:
    assert nano.lm_head.weight.dtype == torch.float32  # fp32: greedy ties must not depend on rounding
    prompts = [list(range(100, 105)), list(range(200, 217)), [7], list(range(300, 330))]
    want = [alone(nano, p, 12) for p in prompts]
    cache = SlotCache(nano.config, 3, "cpu", torch.float32)
    slot_of: dict[int, int] = {}  # prompt -> slot
    fed = {i: 0 for i in range(len(prompts))}
    out: dict[int, list[int]] = {i: [] for i in range(len(prompts))}
    arrives = [0, 0, 3, 6]  # the step before which each prompt asks for a slot
    pending = [0, 1, 2, 3]
    free = [0, 1, 2]
    with torch.inference_mode():
        for step in range(300):
            while pending and arrives[pending[0]] <= step and free:
                slot_of[pending.pop(0)] = free.pop(0)
            # Prompt 1 leaves after 5 tokens (a disconnect): its slot is freed, nothing moves.
            for i in list(slot_of):
                if len(out[i]) == len(want[i]) or (i == 1 and len(out[i]) == 5):
                    cache.release(slot_of[i])
                    free.append(slot_of.pop(i))
                    free.sort()
            if not slot_of and not pending:
                break
            decode = [i for i in slot_of if fed[i] == len(prompts[i])]
            chunks = []
            budget = chunk
            for i in slot_of:
                if fed[i] < len(prompts[i]) and budget > 0:
                    n = min(budget, len(prompts[i]) - fed[i])
                    chunks.append((i, Chunk(slot_of[i], fed[i], n)))
                    budget -= n
            if not decode and not chunks:
                continue
            N = cache.plan([slot_of[i] for i in decode], [c for _, c in chunks])
            lo, hi = cache.decode_span
            ids = [0] * (hi - lo)
            for i in decode:
                ids[slot_of[i] - lo] = out[i][-1]
            for i, c in chunks:
                ids += prompts[i][c.start : c.start + c.count]
            assert len(ids) == N
            x = nano.hidden(torch.tensor([ids]), cache)
            logits = nano.lm_head(x[0])
            for i in decode:
                out[i].append(int(logits[slot_of[i] - lo].argmax()))
            at = hi - lo
            for i, c in chunks:
                at += c.count
                fed[i] += c.count
                if fed[i] == len(prompts[i]):
                    out[i].append(int(logits[at - 1].argmax()))
    assert out[1] == want[1][:5]
    for i in (0, 2, 3):
        assert out[i] == want[i], i
    assert cache.host_lengths == cache.lengths[:-1].tolist()


def test_a_plan_past_the_context_window_or_off_the_slot_length_is_refused(nano: GPT) -> None:
    cache = SlotCache(nano.config, 2, "cpu", torch.float32)
    with pytest.raises(ValueError):
        cache.plan([], [Chunk(0, 3, 2)])  # slot 0 holds 0 tokens, not 3
    with pytest.raises(ValueError):
        cache.plan([], [Chunk(0, 0, nano.config.block_size + 1)])
