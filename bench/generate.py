"""Greedy decoding speed: gpt2_core.generation vs transformers GPT2LMHeadModel.generate, same weights.

    uv run python bench/generate.py [--preset gpt2] [--prompt 128] [--new 256] [--repeats 5] [--threads N]
                                    [--dtype float32 auto ...] [--cpu-matmul auto onednn torch]
                                    [--onednn-isa both|native|AVX2]

Batch 1, random weights (seeded), a random 128-token prompt, 256 new tokens, no early stop. Both run in
this process with the same threads and the same dtype, alternating, and we print the best and the median
tokens/s of each, for each dtype asked for: by default float32 (transformers' default) and ``auto`` (what
``gpt2 generate`` picks here: bf16 on a GPU or a CPU with AVX512-BF16/AMX, else float32).

Our model's fp32 CPU products take the route ``gpt2 generate --cpu-matmul`` would (``auto`` by default:
the one a timing of its products at 1 row shows faster, measured afresh; ``--cpu-matmul auto onednn
torch`` times each). By default everything runs twice: on this CPU, then in a child process with
``ONEDNN_MAX_CPU_ISA=AVX2`` (oneDNN limited as on a CPU without AVX-512).
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _hf_compare import (  # noqa: E402
    add_route_arguments,
    enter_isa,
    hf_twin,
    interleaved,
    machine,
    report,
    rerun_under_avx2,
    route,
)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="gpt2")
    ap.add_argument("--prompt", type=int, default=128, help="prompt length in tokens")
    ap.add_argument("--new", type=int, default=256, help="new tokens")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument(
        "--dtype",
        nargs="+",
        default=["float32", "auto"],
        help="auto, float32, bfloat16 (both models), one run each",
    )
    add_route_arguments(ap)
    args = ap.parse_args()
    enter_isa(args)
    if args.threads:
        torch.set_num_threads(args.threads)

    from gpt2_core import GPT, get_preset
    from gpt2_core.device import pick_dtype
    from gpt2_core.generation import generate_ids
    from gpt2_core.sampling import SamplingConfig

    torch.manual_seed(0)
    base = GPT(get_preset(args.preset)).eval()
    prompt = torch.randint(0, 50256, (args.prompt,), generator=torch.Generator().manual_seed(1)).tolist()
    greedy = SamplingConfig(max_new_tokens=args.new, temperature=0, stop_at_eot=False)
    hf_input = torch.tensor([prompt], device=args.device)
    print(f"machine: {machine()}")
    dtypes = dict.fromkeys(pick_dtype(d, torch.device(args.device)) for d in args.dtype)
    for name, mode in [(d, m) for d in dtypes for m in args.cpu_matmul]:
        theirs = hf_twin(base).to(args.device, name).eval()
        ours = copy.deepcopy(base).to(args.device, name)
        print(route(ours, mode, rows=1), flush=True)
        out: dict[str, list[int]] = {}

        def run_ours(ours: GPT = ours, out: dict = out) -> None:
            out["ours"] = [int(t) for t in torch.stack(list(generate_ids(ours, prompt, greedy)))[:, 0]]

        def run_theirs(theirs: torch.nn.Module = theirs, out: dict = out) -> None:
            with torch.inference_mode():
                ids = theirs.generate(
                    hf_input,
                    attention_mask=torch.ones_like(hf_input),
                    max_new_tokens=args.new,
                    min_new_tokens=args.new,
                    do_sample=False,
                    pad_token_id=50256,
                )
            out["transformers"] = ids[0, args.prompt :].tolist()

        run_ours(), run_theirs()  # warm-up (allocator, thread pools, kernels)
        wall, cpu = interleaved({"ours": run_ours, "transformers": run_theirs}, args.repeats)
        same = sum(a == b for a, b in zip(out["ours"], out["transformers"]))
        print(
            f"greedy decode, {args.preset}, {str(name).removeprefix('torch.')}, batch 1, prompt {args.prompt}, "
            f"{args.new} new tokens, cpu matmul {mode}, {args.repeats} interleaved runs:"
        )
        report(wall, cpu, args.new, "new tokens/s")
        print(f"  identical greedy tokens: {same}/{args.new}")
        del ours, theirs
    rerun_under_avx2(args)


if __name__ == "__main__":
    main()
