"""`gpt2 serve` under load, beside the machine's limits, an older engine and transformers' continuous batching.

    uv run python bench/serve.py [--clients 1 4 8 16] [--tokens 64] [--rounds 2] [--threads 2]
        [--dtypes float32 auto] [--quantize none int8] [--old DIR] [--no-peer] [--long-prompt 1000] [--url URL --model NAME]

Without --url it saves a 124M model (`gpt2` preset, random weights: speed does not depend on what the
weights say) with the chat template, and for each dtype:

1. The machine's limits, measured in this process with --threads threads: a 2048-square GEMM in fp32 and in
   bf16 (where the CPU computes in it natively), and read bandwidth (summing a 1 GiB tensor). The
   weight-read bound of one decoding step is the model's weight bytes over that bandwidth.
2. Bare decoding (`generate_ids`, one sequence, the same prompt, greedy): the per-token time a lone
   client of the server should come close to.
3. `gpt2 serve --max-batch 16` of this checkout in a subprocess, and with --old DIR the same command run
   from DIR's sources (a checkout of an older commit: `git archive 564893a packages | tar -x -C DIR`), one
   after the other in the same run. N concurrent streamed chat requests (`max_tokens` = --tokens, greedy);
   random weights rarely pick the end-of-turn token, so replies run the full length (usage counts them).
   Then chunked prefill: seven streams running, and one request with a --long-prompt-token prompt arriving;
   the seven streams' per-token p50 / p95 / max while it is read.
4. The peer: transformers' continuous batching on our Hugging Face export of the same weights, in this
   process (`GPT2LMHeadModel.generate_batch`, its ContinuousBatchingManager; `transformers serve` needs
   its `serving` extra, not installed here), on the same prompt ids, N requests at once, greedy.

Prints per server and N: aggregate tokens/s, time to first token p50/p95 (request sent -> first content
chunk), per-token latency p50/p95 (gaps between a client's content chunks) and that p50 over the
weight-read bound; and the load average, since the machine may be shared.
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
MODEL = "gpt2-124m-random"


def percentile(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, round(q * (len(values) - 1)))]


# --- the machine's limits ---


def limits(threads: int) -> dict[str, float]:
    """GEMM GFLOP/s (fp32; bf16 where native) and read bandwidth GB/s, best of a few runs."""
    import torch
    from gpt2_core.device import _cpu_has_native_bf16

    torch.set_num_threads(threads)
    out: dict[str, float] = {}
    n = 2048
    for name, dtype in [("fp32", torch.float32)] + ([("bf16", torch.bfloat16)] * _cpu_has_native_bf16()):
        a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
        best = min(_time(lambda a=a, b=b: a @ b) for _ in range(5))
        out[f"gemm_{name}"] = 2 * n**3 / best / 1e9
    x = torch.ones(1 << 28)  # 1 GiB of fp32
    best = min(_time(lambda: x.sum()) for _ in range(5))
    out["read_gbs"] = x.numel() * 4 / best / 1e9
    return out


def _time(fn) -> float:  # noqa: ANN001
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def bare_decode_ms(
    model_dir: Path, dtype: str, quantize: str, prompt: list[int], tokens: int, threads: int
) -> float:
    """Median per-token time of greedy decoding of one sequence (after its first token), the model loaded
    as the server loads it (``gpt2_core.LLM``)."""
    from gpt2_core import LLM
    from gpt2_core.generation import generate_ids
    from gpt2_core.sampling import SamplingConfig

    model = LLM.load(model_dir, device="cpu", dtype=dtype, quantize=quantize, threads=threads).model
    cfg = SamplingConfig(max_new_tokens=tokens, temperature=0, stop_at_eot=False)
    gaps: list[float] = []
    for _ in range(2):
        last = None
        for _ in generate_ids(model, prompt, cfg):
            now = time.perf_counter()
            if last is not None:
                gaps.append(now - last)
            last = now
    return statistics.median(gaps) * 1000


# --- clients of a server ---


async def one_client(
    http: httpx.AsyncClient, model: str, tokens: int, content: str = QUESTION
) -> tuple[float, list[float], int, list[float]]:
    """(time to first token, gaps between chunks, completion tokens, chunk arrival times)."""
    body = {
        "model": model,
        "messages": [{"role": "user", "content": content}],
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
    return arrivals[0] - start, gaps, used, arrivals


async def round_of(url: str, model: str, n: int, tokens: int) -> tuple[float, list[float], list[float], int]:
    async with httpx.AsyncClient(base_url=url, timeout=900, limits=httpx.Limits(max_connections=n)) as http:
        start = time.perf_counter()
        results = await asyncio.gather(*(one_client(http, model, tokens) for _ in range(n)))
        wall = time.perf_counter() - start
    return wall, [r[0] for r in results], [g for r in results for g in r[1]], sum(r[2] for r in results)


async def long_prompt_arrives(url: str, model: str, long_tokens: int, tokens: int) -> dict[str, float]:
    """Seven streams run; once each has its first token, a request with a ``long_tokens`` prompt arrives.
    The seven streams' gaps between chunks from then until the long request's first token, and over
    their whole run."""
    long_text = " hello" * long_tokens  # one token per word in GPT-2's BPE; the template adds a few
    async with httpx.AsyncClient(base_url=url, timeout=900, limits=httpx.Limits(max_connections=8)) as http:
        streams = [asyncio.ensure_future(one_client(http, model, tokens)) for _ in range(7)]
        # Wait until all seven stream: each has sent a first chunk (polled through /health's counters).
        deadline = time.monotonic() + 300
        while (await http.get("/health")).json()["tokens_generated"] < 7 * 2 + _base_tokens[url]:
            if time.monotonic() > deadline:
                raise SystemExit("the seven streams did not start")
            await asyncio.sleep(0.01)
        sent = time.perf_counter()
        ttft, _, _, arrivals = await one_client(http, model, 4, long_text)
        first = arrivals[0]
        results = await asyncio.gather(*streams)
    during, every = [], []
    for _, gaps, _, times in results:
        every += gaps
        during += [b - a for a, b in zip(times, times[1:]) if b > sent and a < first]
    return {
        "p50": statistics.median(every),
        "p95": percentile(every, 0.95),
        "max": max(every),
        "during_p50": statistics.median(during) if during else float("nan"),
        "during_max": max(during) if during else float("nan"),
        "long_ttft": ttft,
    }


_base_tokens: dict[str, int] = {}


async def _tokens(url: str) -> int:
    async with httpx.AsyncClient(base_url=url) as http:
        return (await http.get("/health")).json()["tokens_generated"]


def start_server(
    model_dir: Path, dtype: str, threads: int, source: Path | None, step_tokens: int | None, quantize: str
) -> tuple[subprocess.Popen[bytes], str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "gpt2_cli", "serve", "--model", str(model_dir), "--port", str(port)]
    cmd += ["--max-batch", "16", "--dtype", dtype, "--threads", str(threads), "--model-name", MODEL]
    if step_tokens:
        cmd += ["--step-tokens", str(step_tokens)]
    if quantize != "none":
        cmd += ["--quantize", quantize]
    env = dict(os.environ)
    if source is not None:  # an older checkout's sources shadow the installed (editable) packages
        srcs = [str(p) for p in sorted((source / "packages").glob("*/src"))]
        env["PYTHONPATH"] = os.pathsep.join(srcs + [env.get("PYTHONPATH", "")])
    server = subprocess.Popen(cmd, stderr=subprocess.DEVNULL, env=env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while True:
        try:
            httpx.get(url + "/health")
            return server, url
        except httpx.TransportError:
            if server.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("the server did not start") from None
            time.sleep(0.5)


def bench_server(url: str, model: str, args: argparse.Namespace, label: str, bound_ms: float | None) -> None:
    asyncio.run(round_of(url, model, 1, 8))  # warm-up
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
        p50 = statistics.median(gaps) * 1000
        vs = f"{p50 / bound_ms:.2f}x" if bound_ms else "-"
        print(
            f"| {label} | {n} | {rate:.1f} ({rate / base:.2f}x) "
            f"| {statistics.median(ttft) * 1000:.0f} / {percentile(ttft, 0.95) * 1000:.0f} ms "
            f"| {p50:.0f} / {percentile(gaps, 0.95) * 1000:.0f} ms | {vs} | {load:.1f} |",
            flush=True,
        )


# --- the peer: transformers' continuous batching ---


def peer(
    hf_dir: Path, dtype: str, prompt: list[int], args: argparse.Namespace, bound_ms: float | None
) -> None:
    import torch
    from gpt2_core.device import pick_dtype
    from transformers import GenerationConfig, GPT2LMHeadModel
    from transformers.generation.configuration_utils import ContinuousBatchingConfig

    torch.set_num_threads(args.threads)
    model = GPT2LMHeadModel.from_pretrained(hf_dir, dtype=pick_dtype(dtype, torch.device("cpu"))).eval()
    cfg = GenerationConfig(max_new_tokens=args.tokens, do_sample=False, eos_token_id=None, pad_token_id=50256)
    # Sized for the workload (its automatic sizing reads GPU memory; on a CPU it is slow and wasteful).
    pages = (len(prompt) + args.tokens) // 256 + 1
    cb = ContinuousBatchingConfig(
        num_blocks=pages * max(args.clients) + 4,
        max_batch_tokens=256,
        page_size=256,
        use_cuda_graph=False,
        use_async_batching=False,
    )
    base = None
    for n in [1] + list(args.clients):  # the first is a warm-up
        load = os.getloadavg()[0]
        with torch.inference_mode():
            out = model.generate_batch(
                [list(prompt)] * n,
                generation_config=cfg,
                continuous_batching_config=cb,
                record_timestamps=True,
            )
        # From the requests' creation to the last token: the manager's set-up and tear-down, which a
        # server pays once, do not count.
        start = min(o.created_time for o in out.values())
        wall = max(o.timestamps[-1] for o in out.values()) - start
        done = sum(len(o.generated_tokens) for o in out.values())
        gaps, ttft = [], []
        for o in out.values():
            ts = list(o.timestamps)
            gaps += [b - a for a, b in zip(ts, ts[1:])]
            ttft.append(ts[0] - o.created_time)
        if base is None:
            base = 0.0
            continue
        rate = done / wall
        base = base or rate
        p50 = statistics.median(gaps) * 1000 if gaps else float("nan")
        vs = f"{p50 / bound_ms:.2f}x" if bound_ms and gaps else "-"
        first = (
            f"{statistics.median(ttft) * 1000:.0f} / {percentile(ttft, 0.95) * 1000:.0f} ms" if ttft else "-"
        )
        p95 = f"{percentile(gaps, 0.95) * 1000:.0f}" if gaps else "-"
        print(
            f"| transformers generate_batch | {n} | {rate:.1f} ({rate / base:.2f}x) | {first} "
            f"| {p50:.0f} / {p95} ms | {vs} | {load:.1f} |",
            flush=True,
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--preset", default="gpt2", help="the random model's preset (a smaller one for a smoke run)"
    )
    ap.add_argument("--clients", type=int, nargs="+", default=[1, 4, 8, 16])
    ap.add_argument("--tokens", type=int, default=64, help="max_tokens of each request")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2, help="torch threads of the servers and of this process")
    ap.add_argument("--dtypes", nargs="+", default=["float32", "auto"])
    ap.add_argument(
        "--quantize",
        nargs="+",
        default=["none"],
        choices=["none", "int8"],
        help="our servers' --quantize, one run per value and dtype (transformers' peer stays in the dtype)",
    )
    ap.add_argument("--old", type=Path, help="a checkout of an older commit, benched beside this one")
    ap.add_argument("--no-peer", action="store_true", help="skip transformers' continuous batching")
    ap.add_argument(
        "--long-prompt", type=int, default=1000, help="tokens of the prompt that arrives (0: skip)"
    )
    ap.add_argument("--step-tokens", type=int, default=0, help="--step-tokens of this checkout's server")
    ap.add_argument("--url", help="a running server instead (only its load rounds)")
    ap.add_argument("--model", default="", help="the model's id on --url")
    args = ap.parse_args()

    print(f"# {machine()}")
    if args.url:
        model = args.model or httpx.get(args.url + "/v1/models").json()["data"][0]["id"]
        print(
            "| server | clients | aggregate tokens/s | first token p50 / p95 | per token p50 / p95 | p50 / bound | load |"
        )
        print("|---|---|---|---|---|---|---|")
        bench_server(args.url, model, args, args.url, None)
        return

    import torch
    from gpt2_core import GPT, get_preset
    from gpt2_core.chat_template import ChatTemplate, add_chat_template
    from gpt2_core.device import pick_dtype

    lim = limits(args.threads)
    print(
        f"# limits, {args.threads} threads: GEMM 2048^2 fp32 {lim['gemm_fp32']:.0f} GFLOP/s"
        + (f", bf16 {lim['gemm_bf16']:.0f} GFLOP/s" if "gemm_bf16" in lim else ", bf16 not native")
        + f"; read bandwidth {lim['read_gbs']:.1f} GB/s; load avg {os.getloadavg()[0]:.1f}",
        flush=True,
    )
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = Path(tmp) / MODEL
        torch.manual_seed(0)
        gpt = add_chat_template(GPT(get_preset(args.preset).padded(64)))
        gpt.save_pretrained(model_dir)
        prompt = ChatTemplate.for_model(gpt).encode(
            [{"role": "user", "content": QUESTION}], add_generation_prompt=True
        )
        params = gpt.num_params()
        del gpt
        peered: set[str] = set()
        for dtype, quantize in [(d, q) for q in args.quantize for d in args.dtypes]:
            resolved = pick_dtype(dtype, torch.device("cpu"))
            size = 1 if quantize == "int8" else torch.finfo(resolved).bits // 8
            bound = params * size / (lim["read_gbs"] * 1e9) * 1000
            bare = bare_decode_ms(model_dir, dtype, quantize, prompt, args.tokens, args.threads)
            weights = "" if quantize == "none" else f", --quantize {quantize}"
            print(
                f"\n## --dtype {dtype} ({str(resolved).removeprefix('torch.')}{weights}): weight-read bound of a step "
                f"{bound:.1f} ms ({params * size / 1e6:.0f} MB at {lim['read_gbs']:.1f} GB/s); bare decode "
                f"{bare:.1f} ms a token ({bare / bound:.2f}x the bound)",
                flush=True,
            )
            print(
                f"# streamed chat, {args.tokens}-token replies, greedy, {args.rounds} rounds per N; "
                f"servers --max-batch 16 --threads {args.threads}"
            )
            print(
                "| server | clients | aggregate tokens/s | first token p50 / p95 | per token p50 / p95 | p50 / bound | load |"
            )
            print("|---|---|---|---|---|---|---|")
            chunked: dict[str, dict[str, float]] = {}
            for label, source in [("new", None), ("old", args.old)]:
                if label == "old" and source is None:
                    continue
                server, url = start_server(
                    model_dir, dtype, args.threads, source, args.step_tokens or None, quantize
                )
                try:
                    bench_server(url, MODEL, args, label, bound)
                    if args.long_prompt:
                        _base_tokens[url] = asyncio.run(_tokens(url))
                        chunked[label] = asyncio.run(
                            long_prompt_arrives(url, MODEL, args.long_prompt, args.tokens)
                        )
                finally:
                    server.terminate()
                    server.wait(30)
            if not args.no_peer and dtype not in peered:  # once per dtype: its --quantize runs compare to it
                peered.add(dtype)
                hf_dir = Path(tmp) / f"hf-{dtype}"
                export = "float32" if resolved == torch.float32 else "bfloat16"
                subprocess.run(
                    [sys.executable, "-m", "gpt2_cli", "export", "--format", "hf", "--model", str(model_dir)]
                    + ["--out", str(hf_dir), "--dtype", export],
                    check=True,
                    stdout=subprocess.DEVNULL,
                )
                peer(hf_dir, dtype, prompt, args, bound)
            if chunked:
                print(
                    f"\n# seven {args.tokens}-token streams, then a {args.long_prompt}-token prompt arrives: "
                    "the seven streams' per-token gaps"
                )
                print(
                    "| server | p50 | p95 | p95 / p50 | max | while the prompt is read: p50 / max | its first token |"
                )
                print("|---|---|---|---|---|---|---|")
                for label, c in chunked.items():
                    print(
                        f"| {label} | {c['p50'] * 1000:.0f} ms | {c['p95'] * 1000:.0f} ms | {c['p95'] / c['p50']:.2f} "
                        f"| {c['max'] * 1000:.0f} ms | {c['during_p50'] * 1000:.0f} / {c['during_max'] * 1000:.0f} ms "
                        f"| {c['long_ttft'] * 1000:.0f} ms |",
                        flush=True,
                    )


if __name__ == "__main__":
    main()
