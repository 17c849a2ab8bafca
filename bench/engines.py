"""GPT-2 124M greedy decoding on this CPU: ours against the engines a user would pick instead, side by side.

    uv run python bench/engines.py [--llama-cpp DIR] [--batch 1 8] [--prompt 128] [--new 256] [--threads 2]
                                   [--repeats 2] [--engines ours-fp32 ours-bf16 ours-int8 hf-fp32 ...]

DIR is a llama.cpp source tree with a build (``bash bench/build_llama_cpp.sh`` makes one from the
llama-cpp-python source distribution; never in CI); without it the llama.cpp rows are left out, and the
targets that need them say so. Every engine runs the same random weights (``gpt2`` preset, seed 0: speed does
not depend on what the weights say), the same random prompts (one per row), greedy, no early stop, with
``--threads`` threads, in this one run, engines alternating within each repeat so that a noisy neighbour hits
all alike; the best of ``--repeats`` is kept:

- ours fp32 / bf16 / int8: ``gpt2_core.LLM.load(dir, dtype=, quantize=)``, as ``gpt2 generate`` loads. Batch 1
  runs ``generate_ids`` (what ``gpt2 generate`` runs); batch B > 1 runs its loop over B distinct prompts
  (``generate_ids`` gives B samples of one prompt);
- transformers fp32 / bf16: ``GPT2LMHeadModel.generate`` on the same weights (``_hf_compare.hf_twin``);
- ONNX Runtime fp32 / int8: our ONNX export (``gpt2 export --format onnx``), and
  ``onnxruntime.quantization.quantize_dynamic`` of it with its defaults, each step fed the last step's
  ``present`` keys and values;
- llama.cpp Q8_0 / F16 / F32: llama.cpp's own ``convert_hf_to_gguf.py`` on our Hugging Face export, timed by
  its ``llama-batched-bench`` (B sequences, each its own prompt); ``ours-gguf-q8_0`` is our
  ``gpt2 export --format gguf --gguf-type q8_0`` file in the same llama.cpp.

Per engine and batch it prints prompt processing (prompt tokens over the time to the first new token) and
decoding (the other new tokens over their time) in tokens/s, the decode step in ms and its share of the
weight-read bound: the bytes of weights one step reads (every matrix once, in the engine's storage type;
the tied head counted once) over the read bandwidth measured here (``bench/serve.py``'s ``limits``). Then the
issue's targets, each with its ratio.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from _hf_compare import hf_twin, machine  # noqa: E402
from serve import limits  # noqa: E402

TORCH_ENGINES = ("ours-fp32", "ours-bf16", "ours-int8", "hf-fp32", "hf-bf16", "ort-fp32", "ort-int8")
LLAMA_ENGINES = ("llama.cpp-q8_0", "llama.cpp-f16", "llama.cpp-f32", "ours-gguf-q8_0")

BYTES_PER_WEIGHT = {"fp32": 4.0, "f32": 4.0, "bf16": 2.0, "f16": 2.0, "int8": 1.0, "q8_0": 34 / 32}
"""Storage of a matrix's weight, bytes per weight: Q8_0 keeps a 2-byte scale per 32 int8 weights (GGML's block)."""

Run = Callable[[torch.Tensor, int], tuple[float, float]]
"""(prompts (B, T) int64, new tokens) -> (seconds to the first new token, seconds for the rest)."""


@dataclass
class Result:
    engine: str
    batch: int
    prefill: list[float] = field(default_factory=list)
    """Prompt tokens/s of each repeat."""
    decode: list[float] = field(default_factory=list)
    """New tokens/s after the first, of each repeat."""


def storage(engine: str) -> str:
    return engine.rsplit("-", 1)[1]


def weight_bytes(model: torch.nn.Module, engine: str) -> float:
    """Bytes one decode step reads: the matrices (blocks and the tied head) in the engine's storage type, the
    vectors (LayerNorms, biases) in fp32. The embeddings' gathers read a row each: not counted."""
    cfg = model.config
    per_block = 4 * cfg.n_embd * cfg.n_embd * 3  # c_attn (3 d^2), attn c_proj (d^2), MLP (8 d^2): 12 d^2
    matrices = cfg.n_layer * per_block + cfg.vocab_size * cfg.n_embd
    vectors = sum(p.numel() for n, p in model.named_parameters() if p.dim() == 1)
    return matrices * BYTES_PER_WEIGHT[storage(engine)] + vectors * 4


def timed(first: Callable[[], object], rest: Callable[[object], object]) -> tuple[float, float]:
    t0 = time.perf_counter()
    state = first()
    t1 = time.perf_counter()
    rest(state)
    return t1 - t0, time.perf_counter() - t1


def ours(model_dir: Path, dtype: str, quantize: str, threads: int, batches: list[int]) -> Run:
    from gpt2_core import LLM
    from gpt2_core.generation import generate_ids
    from gpt2_core.kv_cache import KVCache
    from gpt2_core.sampling import SamplingConfig

    llm = LLM.load(
        model_dir, device="cpu", dtype=dtype, quantize=quantize, threads=threads, batch_sizes=batches
    )
    model = llm.model
    print(f"  ours {dtype} {quantize}: cpu matmul {llm.choice}", flush=True)

    def run(prompts: torch.Tensor, new: int) -> tuple[float, float]:
        B, T = prompts.shape
        if B == 1:
            greedy = SamplingConfig(max_new_tokens=new, temperature=0, stop_at_eot=False)
            steps = generate_ids(model, prompts[0].tolist(), greedy)
            return timed(lambda: next(steps), lambda _: [int(t) for t in steps])
        cache = KVCache(model.config, B, "cpu", model.transformer.wte.weight.dtype, max_len=T + new)

        def first() -> torch.Tensor:
            with torch.inference_mode():
                return model(prompts, kv_cache=cache)[0][:, -1].argmax(-1)

        def rest(nxt: torch.Tensor) -> None:
            with torch.inference_mode():
                for _ in range(new - 1):
                    nxt = model(nxt[:, None], kv_cache=cache)[0][:, -1].argmax(-1)
            nxt.tolist()

        return timed(first, rest)

    return run


def transformers_generate(base: torch.nn.Module, dtype: torch.dtype) -> Run:
    hf = hf_twin(base).to(dtype).eval()
    hf.generation_config.eos_token_id = None  # no early stop, and no logits processor for it
    hf.generation_config.pad_token_id = 50256

    def run(prompts: torch.Tensor, new: int) -> tuple[float, float]:
        mask = torch.ones_like(prompts)
        with torch.inference_mode():
            first, _ = timed(
                lambda: hf.generate(prompts, attention_mask=mask, max_new_tokens=1, do_sample=False),
                lambda _: None,
            )
            total, _ = timed(
                lambda: hf.generate(prompts, attention_mask=mask, max_new_tokens=new, do_sample=False),
                lambda _: None,
            )
        return first, total - first

    return run


def onnx_runtime(onnx_file: Path, n_layer: int, n_head: int, head_dim: int, threads: int) -> Run:
    import onnxruntime as ort
    from gpt2_export.onnx_export import io_names

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    session = ort.InferenceSession(str(onnx_file), opts, providers=["CPUExecutionProvider"])
    inputs, _ = io_names(n_layer)

    def run(prompts: torch.Tensor, new: int) -> tuple[float, float]:
        B = prompts.size(0)
        empty = np.zeros((B, n_head, 0, head_dim), np.float32)
        feeds = {"input_ids": prompts.numpy(), **{name: empty for name in inputs[1:]}}

        def first() -> list[np.ndarray]:
            return session.run(None, feeds)

        def rest(out: list[np.ndarray]) -> None:
            for _ in range(new - 1):
                nxt = out[0][:, -1].argmax(-1).astype(np.int64)[:, None]
                out = session.run(None, {"input_ids": nxt, **dict(zip(inputs[1:], out[1:]))})

        return timed(first, rest)

    return run


def llama_batched_bench(
    llama_cpp: Path, gguf_file: Path, prompt: int, new: int, batches: list[int], threads: int
) -> dict[int, tuple[float, float]]:
    """{batch: (prompt tokens/s, decode tokens/s)} from one ``llama-batched-bench`` run."""
    binary = llama_cpp / "build" / "bin" / "llama-batched-bench"
    cmd = [str(binary), "-m", str(gguf_file), "-c", str(max(batches) * (prompt + new)), "-b", "2048"]
    cmd += ["-ub", "512", "-npp", str(prompt), "-ntg", str(new), "-npl", ",".join(map(str, batches))]
    cmd += ["-t", str(threads), "-tb", str(threads), "--output-format", "jsonl"]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True)
    rows = [json.loads(line) for line in (out.stdout + out.stderr).splitlines() if line.startswith("{")]
    return {row["pl"]: (row["speed_pp"], row["speed_tg"]) for row in rows}


def convert(llama_cpp: Path, hf_dir: Path, out: Path, outtype: str) -> Path:
    """llama.cpp's converter on our HF export (its bundled gguf-py, this environment's torch/transformers)."""
    cmd = [sys.executable, str(llama_cpp / "convert_hf_to_gguf.py"), str(hf_dir), "--outfile", str(out)]
    subprocess.run([*cmd, "--outtype", outtype], check=True, capture_output=True, text=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--llama-cpp", type=Path, help="llama.cpp source tree with a build (bench/build_llama_cpp.sh)"
    )
    ap.add_argument("--engines", nargs="+", default=[*TORCH_ENGINES, *LLAMA_ENGINES])
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--prompt", type=int, default=128, help="prompt tokens per row")
    ap.add_argument("--new", type=int, default=256, help="new tokens per row")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument(
        "--work", type=Path, help="where the model and its exports go (default: a temporary directory)"
    )
    args = ap.parse_args()
    engines = [e for e in args.engines if args.llama_cpp or e not in LLAMA_ENGINES]
    torch.set_num_threads(args.threads)

    from gpt2_core import GPT, get_preset
    from gpt2_core.weights import save_model
    from gpt2_export.exporters import run_export

    work = args.work or Path(tempfile.mkdtemp(prefix="gpt2-engines-"))
    work.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    base = GPT(get_preset("gpt2")).eval()
    cfg = base.config
    model_dir = work / "model"
    if not model_dir.exists():
        save_model(base, model_dir)
    gen = torch.Generator().manual_seed(1)
    prompts = torch.randint(0, 50256, (max(args.batch), args.prompt), generator=gen)

    print(f"machine: {machine()}")
    lim = limits(args.threads)
    read = lim["read_gbs"] * 1e9
    print("limits, {} threads: {}".format(args.threads, ", ".join(f"{k} {v:.1f}" for k, v in lim.items())))

    runs: dict[str, Run] = {}
    for engine in engines:
        if engine.startswith("ours-") and engine != "ours-gguf-q8_0":
            dtype = {"fp32": "float32", "bf16": "bfloat16", "int8": "auto"}[storage(engine)]
            quantize = "int8" if engine == "ours-int8" else "none"
            runs[engine] = ours(model_dir, dtype, quantize, args.threads, args.batch)
        elif engine.startswith("hf-"):
            runs[engine] = transformers_generate(
                base, {"fp32": torch.float32, "bf16": torch.bfloat16}[storage(engine)]
            )
        elif engine.startswith("ort-"):
            onnx_dir = work / "onnx"
            if not onnx_dir.exists():
                run_export("onnx", model_dir, onnx_dir)
            onnx_file = onnx_dir / "model.onnx"
            if engine == "ort-int8":
                from onnxruntime.quantization import quantize_dynamic

                onnx_file = work / "model-int8.onnx"
                if not onnx_file.exists():
                    quantize_dynamic(onnx_dir / "model.onnx", onnx_file)
            runs[engine] = onnx_runtime(
                onnx_file, cfg.n_layer, cfg.n_head, cfg.n_embd // cfg.n_head, args.threads
            )

    gguf_files: dict[str, Path] = {}
    if args.llama_cpp:
        hf_dir = work / "hf"
        if not hf_dir.exists():
            run_export("hf", model_dir, hf_dir)
        for engine in [e for e in engines if e in LLAMA_ENGINES]:
            path = work / f"{engine}.gguf"
            if not path.exists():
                if engine == "ours-gguf-q8_0":
                    run_export("gguf", model_dir, path, options={"gguf_type": "q8_0"})
                else:
                    convert(args.llama_cpp, hf_dir, path, storage(engine))
            gguf_files[engine] = path

    results = {(e, b): Result(e, b) for e in engines for b in args.batch}
    for r in range(args.repeats):
        order = engines if r % 2 == 0 else engines[::-1]
        for engine in order:
            if engine in gguf_files:
                speeds = llama_batched_bench(
                    args.llama_cpp, gguf_files[engine], args.prompt, args.new, args.batch, args.threads
                )
                for b, (pp, tg) in speeds.items():
                    results[engine, b].prefill.append(pp)
                    results[engine, b].decode.append(tg)
                continue
            for b in args.batch:
                first, rest = runs[engine](prompts[:b], args.new)
                results[engine, b].prefill.append(b * args.prompt / first)
                results[engine, b].decode.append(b * (args.new - 1) / rest)
            print(f"  repeat {r + 1}: {engine} done", flush=True)

    print(
        f"\n124M, {args.prompt}-token prompts, {args.new} new tokens, greedy, {args.threads} threads, "
        f"best of {args.repeats}; read bandwidth {lim['read_gbs']:.1f} GB/s"
    )
    print(
        "| engine | batch | prompt tok/s | decode tok/s | decode step ms | weight-read bound ms | x bound |"
    )
    print("|---|---|---|---|---|---|---|")
    best: dict[tuple[str, int], tuple[float, float]] = {}
    for (engine, b), res in results.items():
        pp, tg = max(res.prefill), max(res.decode)
        best[engine, b] = (pp, tg)
        step_ms = 1000 * b / tg
        bound_ms = 1000 * weight_bytes(base, engine) / read
        print(
            f"| {engine} | {b} | {pp:,.0f} | {tg:,.1f} | {step_ms:.1f} | {bound_ms:.1f} | {bound_ms / step_ms:.2f} |"
        )

    print("\ntargets (batch 1 decode unless said):")
    checks = [
        ("ours-int8", "llama.cpp-q8_0", 0.8, "decode"),
        ("ours-int8", "ort-int8", 1.0, "decode"),
        ("ours-bf16", "llama.cpp-f16", 0.8, "decode"),
        ("ours-fp32", "ort-fp32", 1.0, "decode"),
        ("ours-int8", "llama.cpp-q8_0", 1.0, "prompt"),
        ("ours-bf16", "llama.cpp-f16", 1.0, "prompt"),
        ("ours-fp32", "llama.cpp-f32", 1.0, "prompt"),
    ]
    for mine, theirs, need, what in checks:
        if (mine, 1) not in best or (theirs, 1) not in best:
            print(f"  {mine} >= {need}x {theirs} ({what}): not measured (engine left out)")
            continue
        i = 1 if what == "decode" else 0
        ratio = best[mine, 1][i] / best[theirs, 1][i]
        verdict = "met" if ratio >= need else "MISSED"
        print(f"  {mine} {what} >= {need}x {theirs}: {ratio:.2f}x  {verdict}")


if __name__ == "__main__":
    main()
