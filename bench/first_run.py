"""The README's first command and the two after it, measured: `gpt2 train --preset tiny`, its samples, then
`gpt2 sft --preset tiny` and whether the fine-tuned model keeps the chat format.

    uv run python bench/first_run.py [--out runs/first-run] [--no-sft]
    ONEDNN_MAX_CPU_ISA=AVX2 uv run python bench/first_run.py      # a CPU without AVX-512 (emulated, fp32)
    OMP_NUM_THREADS=1 uv run python bench/first_run.py            # a busy machine: CPU time without spinning

Prints, for `gpt2 train --preset tiny` (run as a user runs it, its data prepared beforehand and not timed):
wall and CPU seconds (CPU time, summed over the threads, does not count waiting for a busy machine's cores,
but with 2 threads it counts each one spinning at every op while the other waits for a core: on a busy
machine OMP_NUM_THREADS=1 gives the honest figure, an upper bound of an idle machine's 2-thread wall time),
val loss at step 0 and at the end, and the share of the words in 5 samples of 60 tokens (from the README's
prompt, with `gpt2 generate`'s default sampling) that occur in the training corpus; for `gpt2 sft --preset
tiny` (its data preparation included): wall and CPU seconds, and in how many of 10 prompts the model
replies in the assistant turn and ends the turn within 64 tokens (`gpt2 chat`'s sampling).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _machine import machine  # noqa: E402

PROMPT = "Good morrow, my lord. I bring you news from the king:"
"""The README's prompt: the first line of a speech."""
WORD = re.compile(r"[A-Za-z]+(?:'[A-Za-z]+)*")
CHAT_PROMPTS = [
    "Continue this speech by HAMLET:\nTo be, or not to be: that is the question:",
    "Continue this speech by JULIET:\nO Romeo, Romeo! wherefore art thou Romeo?",
    "Continue this speech by KING HENRY V:\nOnce more unto the breach, dear friends, once more;",
    "Continue this speech by PORTIA:\nThe quality of mercy is not strain'd,",
    "Who speaks this line?\nNow is the winter of our discontent",
    "Who speaks this line?\nIs this a dagger which I see before me,",
    "Who speaks this line?\nFriends, Romans, countrymen, lend me your ears;",
    "Which play is this from?\nOur revels now are ended. These our actors,\nAs I foretold you, were all spirits and",
    "Which play is this from?\nIf music be the food of love, play on;\nGive me excess of it, that, surfeiting,",
    "Which play is this from?\nAll the world's a stage,\nAnd all the men and women merely players:",
]


def timed(cmd: list[str]) -> tuple[float, float]:
    """Run ``cmd``; its wall seconds and its CPU seconds (user + system of the child and its threads)."""
    before, start = os.times(), time.perf_counter()
    subprocess.run(cmd, check=True)
    wall, after = time.perf_counter() - start, os.times()
    return wall, (after.children_user - before.children_user) + (
        after.children_system - before.children_system
    )


def step0_val_loss(run_dir: Path, precision: str) -> float:
    """The val loss of tiny's initial model (same seed, same val batches as `gpt2 train --preset tiny`)."""
    import torch
    from gpt2_train.config_layers import build_config
    from gpt2_train.distributed import setup_distributed
    from gpt2_train.pretrain import build_model, shard_sources
    from gpt2_train.trainer import Trainer

    overrides = {"run_dir": str(run_dir), "loggers": ["jsonl"], "overwrite": True, "precision": precision}
    cfg = build_config("tiny", None, overrides)
    env = setup_distributed(cfg.device)
    torch.manual_seed(cfg.seed)  # as gpt2_train.pretrain.train does
    model = build_model(cfg)
    train_source, val_source = shard_sources(cfg, env)
    trainer = Trainer(cfg, model=model, train_source=train_source, val_source=val_source, env=env)
    try:  # through the data-vocabulary head (its shared rows tied as it is built), as the run measures
        return trainer.validator.validate(trainer.loss_model)["val/loss"]
    finally:
        trainer.close()


def last_val_loss(run_dir: Path) -> float:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r["val/loss"] for r in rows if "val/loss" in r][-1]


def samples(model_dir: Path) -> list[str]:
    """5 samples of 60 tokens from PROMPT with `gpt2 generate`'s defaults (seed 0)."""
    from gpt2_core.generation import generate
    from gpt2_core.model import GPT
    from gpt2_core.sampling import SamplingConfig
    from gpt2_core.tokenizer import Tokenizer

    model = GPT.from_pretrained(model_dir).eval()
    cfg = SamplingConfig(max_new_tokens=60, num_return_sequences=5, seed=0)
    return generate(model, Tokenizer.for_config(model.config), PROMPT, cfg)


def corpus_words() -> set[str]:
    from gpt2_data.datasets import Shakespeare

    return {w.lower() for doc in Shakespeare().documents() for w in WORD.findall(doc)}


def chat_format(model_dir: Path) -> tuple[int, list[str]]:
    """How many of CHAT_PROMPTS get a non-empty reply that ends the turn within 64 tokens, and the replies."""
    from gpt2_core.chat import ChatSampling
    from gpt2_core.chat_template import ChatTemplate
    from gpt2_core.generation import generate_ids
    from gpt2_core.model import GPT

    model = GPT.from_pretrained(model_dir).eval()
    template = ChatTemplate.for_model(model)
    assert template is not None, f"{model_dir} has no chat template"
    ok, replies = 0, []
    for i, prompt in enumerate(CHAT_PROMPTS):
        ids = template.encode([{"role": "user", "content": prompt}], add_generation_prompt=True)
        out = [
            int(t[0])
            for t in generate_ids(
                model, ids, ChatSampling(max_new_tokens=64, seed=i), stop_ids=[template.end_id]
            )
        ]
        ended = bool(out) and out[-1] == template.end_id
        text = template.tokenizer.decode([t for t in out if t != template.end_id])
        ok += ended and bool(text.strip())
        replies.append(text + (" <|end|>" if ended else " [no end of turn]"))
    return ok, replies


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("runs/first-run"), help="folder for the two runs")
    ap.add_argument("--no-sft", action="store_true", help="measure pre-training only")
    args = ap.parse_args()
    gpt2 = [sys.executable, "-m", "gpt2_cli"]
    train_dir, sft_dir = args.out / "tiny", args.out / "tiny-sft"

    # Data preparation is cached after the first run, and not part of the timed run.
    from gpt2_train.config_layers import build_config
    from gpt2_train.distributed import setup_distributed
    from gpt2_train.pretrain import prepare_data

    start = time.perf_counter()
    prepare_data(build_config("tiny"), setup_distributed("cpu"))
    prep = time.perf_counter() - start
    # torch picks bf16 from the CPU's features, which ONEDNN_MAX_CPU_ISA does not hide: a CPU without AVX-512
    # gets fp32 from --precision auto, so that is what the emulation runs.
    emulated = os.environ.get("ONEDNN_MAX_CPU_ISA", "").upper().startswith(("AVX2", "AVX", "SSE"))
    precision = "fp32" if emulated else "auto"
    v0 = step0_val_loss(args.out / "step0", precision)

    train = [*gpt2, "train", "--preset", "tiny", "--run-dir", str(train_dir), "--overwrite"]
    wall, cpu = timed([*train, "--precision", precision])
    v1 = last_val_loss(train_dir)
    texts = samples(train_dir / "latest")
    known = corpus_words()
    words = [w.lower() for t in texts for w in WORD.findall(t)]
    rate = sum(w in known for w in words) / max(1, len(words))

    import torch

    print(f"\nmachine: {machine()}")
    print(
        f"ONEDNN_MAX_CPU_ISA={os.environ.get('ONEDNN_MAX_CPU_ISA', '(unset)')}; load average {os.getloadavg()}"
    )
    print(f"torch threads: {torch.get_num_threads()}; --precision {precision}")
    print(f"data preparation (cached afterwards): {prep:.1f} s")
    print(f"gpt2 train --preset tiny: {wall:.1f} s wall, {cpu:.1f} s CPU")
    print(f"val loss: step 0 {v0:.3f}, end {v1:.3f} ({100 * (1 - v1 / v0):.1f}% lower)")
    print(f"words that occur in the corpus: {rate:.1%} of {len(words)}")
    for i, t in enumerate(texts):
        print(f"--- sample {i + 1}\n{PROMPT}{t}")
    if args.no_sft:
        return
    wall, cpu = timed(
        [
            *gpt2,
            "sft",
            "--preset",
            "tiny",
            "--from",
            str(train_dir / "latest"),
            "--run-dir",
            str(sft_dir),
            "--overwrite",
            "--precision",
            precision,
        ]
    )
    ok, replies = chat_format(sft_dir / "latest")
    print(f"\ngpt2 sft --preset tiny (data preparation included): {wall:.1f} s wall, {cpu:.1f} s CPU")
    print(f"val loss: end {last_val_loss(sft_dir):.3f}")
    print(f"chat format kept (a reply, then end of turn within 64 tokens): {ok} of {len(CHAT_PROMPTS)}")
    for prompt, reply in zip(CHAT_PROMPTS, replies):
        print(f"--- user: {prompt!r}\n    assistant: {reply!r}")


if __name__ == "__main__":
    main()
