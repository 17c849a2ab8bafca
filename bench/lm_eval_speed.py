"""Examples per second of `gpt2 eval lm-eval`'s model (GPT2LM) beside lm-eval's own Hugging Face model (`hf`)
loading our Hugging Face export of the same weights, on the same local HellaSwag-format task (lm-eval's own
hellaswag config, 4 endings per example), at batch sizes 1 and 16, fp32 on the CPU.

Each figure is one whole ``simple_evaluate`` (task building included, the same for both); the two models run
alternately, ``--repeats`` times, and the median is printed with the ratio ours / hf.

    uv run python bench/lm_eval_speed.py [--model gpt2] [--examples 48] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

WORDS = [
    "the",
    "a",
    "man",
    "woman",
    "dog",
    "child",
    "ball",
    "car",
    "house",
    "tree",
    "river",
    "city",
    "garden",
    "kitchen",
    "table",
    "window",
    "door",
    "book",
    "phone",
    "runs",
    "walks",
    "throws",
    "picks",
    "opens",
    "closes",
    "paints",
    "cooks",
    "reads",
    "writes",
    "sings",
    "jumps",
    "sits",
    "stands",
    "looks",
    "smiles",
    "into",
    "onto",
    "over",
    "under",
    "across",
    "around",
    "with",
    "without",
    "quickly",
    "slowly",
    "carefully",
    "happily",
    "bright",
    "dark",
    "green",
    "small",
    "large",
]


def sentence(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n))


def write_task(root: Path, n: int) -> Path:
    import lm_eval

    rng = random.Random(0)
    rows = []
    for i in range(n):
        endings = [sentence(rng, rng.randint(8, 20)) + "." for _ in range(4)]
        rows.append({
            "ind": i, "activity_label": sentence(rng, 2).capitalize(), "ctx_a": sentence(rng, 25).capitalize() + ".",
            "ctx_b": sentence(rng, 2), "label": str(rng.randrange(4)), "endings": endings,
        })  # fmt: skip
    data = root / "hellaswag.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    tasks = root / "tasks"
    tasks.mkdir()
    base = Path(lm_eval.__file__).parent / "tasks" / "hellaswag" / "hellaswag.yaml"
    (tasks / "hellaswag_bench.yaml").write_text(
        f"include: {base}\ntask: hellaswag_bench\ntag: []\ndataset_path: json\ndataset_name: null\n"
        f"dataset_kwargs:\n  data_files:\n    validation: {data}\ntraining_split: null\n"
        "validation_split: validation\ntest_split: null\n"
    )
    return tasks


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="gpt2", help="preset of the random model (gpt2 = 124M)")
    ap.add_argument("--examples", type=int, default=48)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 16])
    args = ap.parse_args()

    import torch
    from _machine import machine
    from gpt2_core import GPT, get_preset
    from gpt2_core.weights import save_model
    from gpt2_eval.harness import GPT2LM
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    logging.disable(logging.WARNING)
    root = Path(tempfile.mkdtemp(prefix="lm_eval_bench_"))
    torch.manual_seed(0)
    ours_dir = save_model(GPT(get_preset(args.model)), root / "model")
    hf_dir = root / "hf"
    export = [
        sys.executable,
        "-m",
        "gpt2_cli",
        "export",
        "--format",
        "hf",
        "--model",
        str(ours_dir),
        "--out",
        str(hf_dir),
    ]
    subprocess.run(export, check=True, capture_output=True)
    manager = TaskManager(include_path=str(write_task(root, args.examples)))

    print(machine())
    print(f"model: random {args.model} (fp32), task: HellaSwag format, {args.examples} examples x 4 endings")
    for bs in args.batch_sizes:
        models = {
            "ours": GPT2LM(str(ours_dir), batch_size=bs),
            "hf": HFLM(pretrained=str(hf_dir), dtype="float32", device="cpu", batch_size=bs),
        }
        times: dict[str, list[float]] = {name: [] for name in models}
        accs = {}
        for _ in range(args.repeats):
            for name, lm in models.items():
                t = time.perf_counter()
                res = simple_evaluate(
                    model=lm, tasks=["hellaswag_bench"], task_manager=manager, log_samples=False
                )
                times[name].append(time.perf_counter() - t)
                accs[name] = res["results"]["hellaswag_bench"]["acc_norm,none"]
        rate = {name: args.examples / statistics.median(ts) for name, ts in times.items()}
        print(
            f"batch {bs:>2}: ours {rate['ours']:.2f} examples/s, hf {rate['hf']:.2f} examples/s, "
            f"ours/hf {rate['ours'] / rate['hf']:.2f}x (acc_norm ours {accs['ours']:.4f}, hf {accs['hf']:.4f})"
        )


if __name__ == "__main__":
    main()
