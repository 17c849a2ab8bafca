"""Where and how a model runs for inference: the config behind every inference command's flags, read by
``gpt2_core.llm.LLM.from_runtime``.

Importing this module does not import torch: ``gpt2 --help`` builds the commands' flags from ``RuntimeConfig``.
"""

from __future__ import annotations

from dataclasses import dataclass

from gpt2_core.errors import UserError


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
