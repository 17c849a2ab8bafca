"""Speed-ups applied to the model before DDP or FSDP wraps it: float8 matmuls, activation checkpointing, the
CPU matmul route (``gpt2_core.cpu_matmul``) and ``torch.compile`` (inductor, on GPUs by default and on a CPU
when asked). Each is a flag of ``TrainConfig``; ``check`` refuses impossible combinations before any work
is done, ``apply`` does the wrapping.

Under ``--parallel fsdp`` compile takes each block in place instead of the whole model, before the blocks are
sharded (``gpt2_train.parallel``): FSDP's hooks then stay outside the compiled code, as in torchtitan.
"""

from __future__ import annotations

import importlib.util

import torch
from gpt2_core import cpu_matmul
from gpt2_core.errors import UserError
from gpt2_core.model import GPT

from gpt2_train.config import TrainConfig

FP8_MIN_CAPABILITY = (8, 9)
"""Float8 tensor cores: Ada (8.9) and Hopper (9.0) and newer."""


def check(cfg: TrainConfig, device: torch.device) -> None:
    """Refuse ``--fp8`` where it cannot run, with what to do instead."""
    if not cfg.fp8:
        return
    if device.type != "cuda":
        raise UserError(
            f"--fp8 needs an NVIDIA GPU with float8 tensor cores (H100, L4, 4090); this run is on {device.type}"
        )
    capability = torch.cuda.get_device_capability(device)
    if capability < FP8_MIN_CAPABILITY:
        raise UserError(
            f"--fp8 needs compute capability >= 8.9 (Ada/Hopper); {torch.cuda.get_device_name(device)} "
            f"has {capability[0]}.{capability[1]}: train without --fp8"
        )
    if importlib.util.find_spec("torchao") is None:
        raise UserError("--fp8 uses torchao's float8 training: pip install 'gpt2-train[fp8]' (or torchao)")


def _fp8_filter(module: torch.nn.Module, fqn: str) -> bool:
    # Only the blocks' matmuls: a tied LM head shares its weight with the embedding (and torchtitan keeps
    # even an untied output layer out of float8), and float8 GEMMs need both dimensions divisible by 16.
    return (
        fqn.startswith("transformer.h.")
        and isinstance(module, torch.nn.Linear)
        and module.in_features % 16 == 0
        and module.out_features % 16 == 0
    )


def apply(
    model: GPT,
    cfg: TrainConfig,
    device: torch.device,
    *,
    loss_head: torch.nn.Module | None = None,
    autocast: torch.dtype | None = None,
) -> torch.nn.Module:
    """``model`` with the configured speed-ups; the result is what the step function calls.

    ``loss_head``, a module around ``model`` that computes the loss (the data-vocabulary head), is what gets
    compiled and returned.
    ``autocast``: the dtype the run computes in under autocast, None for fp32 (the CPU matmul route
    matters for fp32 only, and compiled graphs choose their own kernels).
    """
    model.activation_checkpointing = cfg.activation_checkpointing
    if cfg.fp8:
        from torchao.float8 import convert_to_float8_training

        convert_to_float8_training(model, module_filter_fn=_fp8_filter)
    if device.type == "cpu" and not compiles(cfg, device):
        rows = cfg.micro_batch * cfg.seq_len
        cpu_matmul.apply(model, cfg.cpu_matmul, rows=rows, backward=True, autocast=autocast)
    top = loss_head if loss_head is not None else model
    if compiles(cfg, device):
        if cfg.parallel == "fsdp":
            for block in model.transformer.h:
                block.compile()  # in place: parameter names (and so checkpoints) unchanged
            return top
        return torch.compile(top)
    return top


def compiles(cfg: TrainConfig, device: torch.device) -> bool:
    """Whether the run compiles: as ``--compile``/``--no-compile`` say, and by default on CUDA only."""
    return cfg.compile if cfg.compile is not None else device.type == "cuda"
