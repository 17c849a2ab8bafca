"""`gpt2 chat` speed on CPU: first-token latency and tokens/s of a 124M model, with the KV cache reused
across turns (what `ChatSession` does) against recomputing the whole history each turn.

    uv run python bench/chat.py [--threads N] [--repeats 3] [--tokens 64]

Random weights: speed does not depend on what the weights say. Sampling is greedy; random weights give
<|end|> (a mean embedding) a near-average logit, so replies run the full --tokens.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _machine import machine  # noqa: E402

TURNS = [
    "Hello! Can you tell me what a transformer is, in two sentences?",
    "And how is GPT-2 different from the original transformer?",
    "Thanks. What should I read next?",
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--tokens", type=int, default=64)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from gpt2_core import GPT, get_preset
    from gpt2_core.chat import ChatSampling, ChatSession
    from gpt2_core.chat_template import add_chat_template

    torch.manual_seed(0)
    model = add_chat_template(GPT(get_preset("gpt2").padded(64))).eval()
    sampling = ChatSampling(max_new_tokens=args.tokens, temperature=0)

    def conversation(reuse: bool) -> list[tuple[int, float, float, float]]:
        """(prompt tokens, first-token seconds, its CPU seconds, tokens/s after the first) of each turn.

        CPU time (this process's, all threads) does not count waiting for a busy machine's cores.
        """
        session = ChatSession(model, sampling, system="You are a helpful assistant.")
        out = []
        for text in TURNS:
            if not reuse:
                session.cache.truncate(0)
            t0, c0 = time.perf_counter(), time.process_time()
            first = cpu_first = None
            for _ in session.reply(text):
                if first is None:
                    first, cpu_first = time.perf_counter(), time.process_time()
            end = time.perf_counter()
            n = session.last_reply_len
            assert n == args.tokens, f"reply ended after {n} tokens"
            out.append((session.last_prompt_len, first - t0, cpu_first - c0, (n - 1) / (end - first)))
        return out

    conversation(True)  # warm-up
    results = {"reused": [], "recomputed": []}
    for r in range(args.repeats):
        for name in ["reused", "recomputed"] if r % 2 == 0 else ["recomputed", "reused"]:
            results[name].append(conversation(name == "reused"))

    print(f"# {machine()}")
    print(f"# gpt2 124M, random weights, fp32, greedy, {args.tokens}-token replies, median of {args.repeats}")
    print("| turn | prompt tokens | first token, cache reused | first token, history recomputed | tokens/s |")
    print("|---|---|---|---|---|")

    def ms(runs: list, i: int) -> str:
        return f"{statistics.median(x[i] for x in runs) * 1000:.0f}"

    for turn in range(len(TURNS)):
        reused = [run[turn] for run in results["reused"]]
        recomputed = [run[turn] for run in results["recomputed"]]
        print(
            f"| {turn + 1} | {reused[0][0]} | {ms(reused, 1)} ms (CPU {ms(reused, 2)} ms) "
            f"| {ms(recomputed, 1)} ms (CPU {ms(recomputed, 2)} ms) "
            f"| {statistics.median(x[3] for x in reused):.1f} |"
        )


if __name__ == "__main__":
    main()
