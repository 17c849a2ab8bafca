"""HellaSwag: pick the most likely of four endings, scored by the completion's loss.

As in build-nanogpt: each (context, ending) row is scored by the mean cross-entropy of the ending's
tokens only; ``acc_norm`` picks the ending with the lowest mean (length-normalised) loss, ``acc`` the
lowest summed loss. Data: the official jsonl (``ctx``, ``endings``, ``label``, ...), downloaded once to
the cache, or a local file. Examples are split across DDP ranks and the counts summed.
"""

from __future__ import annotations

import json
import math
import os
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from gpt2_core.errors import UserError
from gpt2_core.model import GPT
from gpt2_core.paths import cache_dir

from gpt2_train.distributed import DistEnv, sum_over_ranks

VAL_URL = "https://raw.githubusercontent.com/rowanz/hellaswag/master/data/hellaswag_val.jsonl"


@dataclass
class Example:
    ctx: str
    endings: list[str]
    label: int


@dataclass
class HellaSwagResult:
    acc: float
    acc_norm: float
    n: int


def default_file() -> Path:
    """The validation set in the cache, downloaded on first use."""
    path = cache_dir() / "hellaswag" / "hellaswag_val.jsonl"
    if path.is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with urllib.request.urlopen(VAL_URL, timeout=60) as r, tmp.open("wb") as f:
            f.write(r.read())
    except OSError as e:
        raise UserError(
            f"cannot download HellaSwag from {VAL_URL} ({e}); pass --hellaswag-file with a local copy"
        ) from e
    os.replace(tmp, path)
    return path


def load_examples(path: str | os.PathLike[str] | None = None, limit: int = 0) -> list[Example]:
    """Examples from a HellaSwag jsonl file (default: the downloaded validation set)."""
    p = Path(path) if path else default_file()
    if not p.is_file():
        raise UserError(f"--hellaswag-file {p}: no such file")
    out = []
    with p.open(encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row: dict[str, Any] = json.loads(line)
                ex = Example(str(row["ctx"]), [str(e) for e in row["endings"]], int(row["label"]))
            except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
                raise UserError(f"{p}:{n}: not a HellaSwag example (needs ctx, endings, label): {e}") from e
            if not 0 <= ex.label < len(ex.endings):
                raise UserError(f"{p}:{n}: label {ex.label} is outside its {len(ex.endings)} endings")
            out.append(ex)
            if limit and len(out) >= limit:
                break
    if not out:
        raise UserError(f"{p}: no HellaSwag examples")
    return out


def _rows(ex: Example, encode: Any, block_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Token rows (context + ending) and masks of the ending positions, padded to one length."""
    ctx = encode(ex.ctx)
    ends = [encode(" " + e) for e in ex.endings]  # GPT-2's tokenizer folds the leading space into the word
    rows = []
    for e in ends:
        row = (ctx + e)[-block_size:]
        rows.append((row, min(len(e), len(row))))
    width = max(len(r) for r, _ in rows)
    tokens = torch.zeros((len(rows), width), dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.bool)
    for i, (row, n_end) in enumerate(rows):
        tokens[i, : len(row)] = torch.tensor(row)
        mask[i, len(row) - n_end : len(row)] = True
    return tokens, mask


@torch.no_grad()
def score_example(model: GPT, tokens: torch.Tensor, mask: torch.Tensor) -> tuple[int, int]:
    """(prediction by summed loss, prediction by mean loss) for one example's rows."""
    logits, _ = model(tokens, all_positions=True)
    logits = logits[:, :-1, : model.config.vocab_size].float()
    targets = tokens[:, 1:]
    losses = F.cross_entropy(logits.transpose(1, 2), targets, reduction="none")
    m = mask[:, 1:].float()
    total = (losses * m).sum(dim=1)
    mean = total / m.sum(dim=1)
    return int(total.argmin()), int(mean.argmin())


def evaluate(model: GPT, examples: list[Example], env: DistEnv | None = None) -> HellaSwagResult:
    """Accuracy of ``model`` on ``examples``; with several ranks each scores every world_size-th example."""
    from gpt2_core.tokenizer import Tokenizer

    env = env or DistEnv(device=next(model.parameters()).device)
    tok = Tokenizer.for_config(model.config)
    was_training = model.training
    model.eval()
    counts = torch.zeros(3, dtype=torch.float64)
    try:
        # Every rank runs as many forward passes as the busiest one (a sharded model's forward is a collective
        # of all ranks): a rank past the end scores example 0 again and does not count it.
        for i in range(env.rank, math.ceil(len(examples) / env.world_size) * env.world_size, env.world_size):
            counted = i < len(examples)
            ex = examples[i if counted else 0]
            tokens, mask = _rows(ex, tok.encode, model.config.block_size)
            by_sum, by_mean = score_example(model, tokens.to(env.device), mask.to(env.device))
            if counted:
                counts += torch.tensor([by_sum == ex.label, by_mean == ex.label, 1.0])
    finally:
        model.train(was_training)
    counts = sum_over_ranks(env, counts.to(env.device) if env.device.type == "cuda" else counts).cpu()
    n = int(counts[2])
    return HellaSwagResult(acc=float(counts[0]) / n, acc_norm=float(counts[1]) / n, n=n)
