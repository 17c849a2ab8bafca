"""`gpt2 serve` under load: N concurrent streaming clients against a running server.

    uv run python bench/serve.py [--clients 1 4 8 16] [--tokens 64] [--rounds 2] [--url URL --model NAME]

Without --url it saves a 124M model (`gpt2` preset, random weights: speed does not depend on what the
weights say) with the chat template, starts `gpt2 serve --max-batch 16` on it in a subprocess and stops it
at the end. Each client sends one streamed chat request (`max_tokens` = --tokens, greedy); random weights
rarely pick the end-of-turn token, so replies run the full length (usage says how many tokens came).

Prints, per N: aggregate tokens/s (all completion tokens / wall time of the round), time to first token
p50/p95 (request sent -> first content chunk), and per-token latency p50/p95 (gaps between a client's
content chunks), over --rounds rounds; and the load average, since the machine may be shared.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).parent))
from _machine import machine  # noqa: E402

QUESTION = "Hello! Can you tell me what a transformer is, in two sentences?"


def percentile(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, round(q * (len(values) - 1)))]


async def one_client(http: httpx.AsyncClient, model: str, tokens: int) -> tuple[float, list[float], int]:
    """(time to first token, gaps between chunks, completion tokens) of one streamed request."""
    body = {
        "model": model,
        "messages": [{"role": "user", "content": QUESTION}],
        "max_tokens": tokens,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    start = time.perf_counter()
    arrivals: list[float] = []
    used = 0
    async with http.stream("POST", "/v1/chat/completions", json=body) as response:
        response.raise_for_status()
        async for line in response.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if chunk.get("usage"):
                used = chunk["usage"]["completion_tokens"]
            if any(c["delta"].get("content") for c in chunk["choices"]):
                arrivals.append(time.perf_counter())
    gaps = [b - a for a, b in zip(arrivals, arrivals[1:])]
    return arrivals[0] - start, gaps, used


async def round_of(url: str, model: str, n: int, tokens: int) -> tuple[float, list[float], list[float], int]:
    async with httpx.AsyncClient(base_url=url, timeout=600, limits=httpx.Limits(max_connections=n)) as http:
        start = time.perf_counter()
        results = await asyncio.gather(*(one_client(http, model, tokens) for _ in range(n)))
        wall = time.perf_counter() - start
    return wall, [r[0] for r in results], [g for r in results for g in r[1]], sum(r[2] for r in results)


def start_server(tmp: Path, threads: int) -> tuple[subprocess.Popen[bytes], str, str]:
    import torch
    from gpt2_core import GPT, get_preset
    from gpt2_core.chat_template import add_chat_template

    torch.manual_seed(0)
    add_chat_template(GPT(get_preset("gpt2").padded(64))).save_pretrained(tmp / "gpt2-124m-random")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "gpt2_cli", "serve", "--model", str(tmp / "gpt2-124m-random")]
    cmd += ["--port", str(port), "--max-batch", "16", "--dtype", "float32", "--threads", str(threads)]
    server = subprocess.Popen(cmd, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while True:
        try:
            httpx.get(url + "/health")
            return server, url, "gpt2-124m-random"
        except httpx.TransportError:
            if server.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("the server did not start") from None
            time.sleep(0.5)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clients", type=int, nargs="+", default=[1, 4, 8, 16])
    ap.add_argument("--tokens", type=int, default=64, help="max_tokens of each request")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--threads", type=int, default=0, help="the server's torch threads (0: its default)")
    ap.add_argument("--url", help="a running server (default: start one on a random 124M model)")
    ap.add_argument("--model", default="", help="the model's id on --url")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        server = None
        if args.url:
            url, model = args.url, args.model or httpx.get(args.url + "/v1/models").json()["data"][0]["id"]
        else:
            server, url, model = start_server(Path(tmp), args.threads)
        try:
            asyncio.run(round_of(url, model, 1, 8))  # warm-up
            print(f"# {machine()}")
            threads = f"server --threads {args.threads or 'default'}" if server else "server at " + url
            print(
                f"# {model}: streamed chat, {args.tokens}-token replies, greedy, {args.rounds} rounds per N; {threads}"
            )
            print("| clients | aggregate tokens/s | first token p50 / p95 | per token p50 / p95 | load avg |")
            print("|---|---|---|---|---|")
            base = None
            for n in args.clients:
                ttft: list[float] = []
                gaps: list[float] = []
                done = wall = 0.0
                load = os.getloadavg()[0]
                for _ in range(args.rounds):
                    w, t, g, used = asyncio.run(round_of(url, model, n, args.tokens))
                    wall, done, ttft, gaps = wall + w, done + used, ttft + t, gaps + g
                rate = done / wall
                base = base or rate
                print(
                    f"| {n} | {rate:.1f} ({rate / base:.2f}x) "
                    f"| {statistics.median(ttft) * 1000:.0f} / {percentile(ttft, 0.95) * 1000:.0f} ms "
                    f"| {statistics.median(gaps) * 1000:.0f} / {percentile(gaps, 0.95) * 1000:.0f} ms "
                    f"| {load:.1f} |",
                    flush=True,
                )
        finally:
            if server is not None:
                server.terminate()
                server.wait(30)


if __name__ == "__main__":
    main()
