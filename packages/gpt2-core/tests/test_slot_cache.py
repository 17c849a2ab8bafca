"""SlotKVCache: sequences of different lengths decoded as one batch, joining and leaving between steps,
give the tokens each gives alone."""

from __future__ import annotations

import torch
from gpt2_core.generate import generate_ids
from gpt2_core.model import GPT, KVCache, SlotKVCache
from gpt2_core.sampling import SamplingConfig


def test_rows_join_and_leave_between_steps_and_match_decoding_alone(nano: GPT) -> None:
    greedy = SamplingConfig(max_new_tokens=12, temperature=0, stop_at_eot=False)
    prompts = [list(range(100, 105)), list(range(200, 217)), [7], list(range(300, 330))]
    alone = [[int(t[0]) for t in generate_ids(nano, p, greedy)] for p in prompts]

    slots = SlotKVCache(nano.config, 3, "cpu", torch.float32)
    prefill = KVCache(nano.config, 1, "cpu", torch.float32)
    rows: list[int] = []  # which prompt each active row decodes
    out: dict[int, list[int]] = {i: [] for i in range(len(prompts))}
    joins = {0: [0, 1], 3: [2], 6: [3]}  # step -> prompts that join before it
    with torch.inference_mode():
        for step in range(40):
            for i in joins.get(step, []):
                prefill.truncate(0)
                logits, _ = nano(torch.tensor([prompts[i]]), kv_cache=prefill)
                assert slots.add(prefill) == len(rows)
                rows.append(i)
                out[i].append(int(logits[0, -1].argmax()))
            # Prompt 1 leaves after 5 tokens (a disconnect): its row is freed, the last row moves in.
            for row in reversed(range(len(rows))):
                i = rows[row]
                if len(out[i]) == len(alone[i]) or (i == 1 and len(out[i]) == 5):
                    slots.remove(row)
                    rows[row] = rows[-1]
                    rows.pop()
            assert slots.batch == len(rows)
            if not rows:
                break
            last = torch.tensor([[out[i][-1]] for i in rows])
            logits, _ = nano(last, kv_cache=slots)
            slots.advance(1)
            for row, i in enumerate(rows):
                out[i].append(int(logits[row, -1].argmax()))
    assert slots.batch == 0
    assert out[1] == alone[1][:5]
    for i in (0, 2, 3):
        assert out[i] == alone[i], i
