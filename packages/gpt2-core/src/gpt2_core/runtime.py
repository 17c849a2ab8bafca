"""Where and how a model runs for inference: one config and one loading function behind ``gpt2 generate``,
``chat`` and ``serve`` (litgpt's ``LLM.load`` plays this part there).

Importing this module does not import torch (``gpt2 --help`` builds the commands' flags from ``RuntimeConfig``);
``load_for_inference`` does.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from gpt2_core.errors import UserError

if TYPE_CHECKING:
    from gpt2_core.cpu_matmul import Choice
    from gpt2_core.model import GPT


@dataclass
class RuntimeConfig:
    """The inference commands' ``--device``, ``--dtype``, ``--threads``, ``--cpu-matmul`` and ``--quantize``."""

    device: str = "auto"
    """cpu, cuda, mps, or auto (cuda, else mps, else cpu)."""
    dtype: str = "auto"
    """float32, bfloat16, float16, or auto: bfloat16 on a GPU or CPU that computes in it natively."""
    threads: int = 0
    """CPU threads for torch (0: its default); 1 is often fastest on a busy machine."""
    cpu_matmul: str = "auto"
    """fp32 CPU matrix products: torch (MKL), onednn, or auto: oneDNN where a short timing of this model's
    products at start-up (cached) shows it faster."""
    quantize: str = "none"
    """none, or int8: weight-only int8 with per-channel scales (half of bf16's bytes to read per token)."""

    def __post_init__(self) -> None:
        # --device, --dtype and --cpu-matmul are checked where they are resolved (they need torch).
        if self.threads < 0:
            raise UserError(f"--threads must be >= 0, got {self.threads}")


def load_for_inference(
    path: str | os.PathLike[str], runtime: RuntimeConfig, rows: int | Sequence[int] = 1
) -> tuple[GPT, Choice]:
    """Model directory ``path`` (ours, a checkpoint, or Hugging Face GPT-2) ready to generate: torch's CPU
    threads set, on ``runtime``'s device in its dtype, in eval mode, its Linear layers swapped for int8 ones
    when ``runtime.quantize`` says so (``gpt2_core.quantize``), else its fp32 CPU products routed for batches
    of ``rows`` (``gpt2_core.cpu_matmul.apply``; after the threads are set, since the timing depends on them).

    Returns the model and the route taken (printed as e.g. ``torch (asked)``). ``UserError`` naming the flag for a device,
    dtype or route this machine cannot run, or naming the path when it holds no model.
    """
    import torch

    from gpt2_core import quantize
    from gpt2_core.cpu_matmul import apply, check_mode
    from gpt2_core.device import pick_device, pick_dtype
    from gpt2_core.model import GPT

    check_mode(runtime.cpu_matmul)
    quantize.check_mode(runtime.quantize)
    if runtime.threads:
        torch.set_num_threads(runtime.threads)
    where = pick_device(runtime.device)
    model = GPT.from_pretrained(path, device=where, dtype=pick_dtype(runtime.dtype, where)).eval()
    if runtime.quantize == "int8":
        quantize.quantize_int8(model)  # no nn.Linear left: the route below is moot and says so
    return model, apply(model, runtime.cpu_matmul, rows=rows)
