"""ONNX format: ``model.onnx`` with a key/value cache, for onnxruntime and other ONNX runtimes.

Inputs: ``input_ids`` (batch, seq) int64 and, per layer i, ``past.i.key``/``past.i.value`` (batch, n_head,
past, head_dim). Outputs: ``logits`` (batch, seq, vocab_size) for every new position and
``present.i.key``/``present.i.value`` (batch, n_head, past + seq, head_dim), the next call's past. Start a
sequence with past length 0. Exported with ``torch.onnx.export(dynamo=True)``, the exporter PyTorch
maintains; it needs the ``onnx`` and ``onnxscript`` packages (``pip install 'gpt2-export[onnx]'``).
"""

from __future__ import annotations

import logging
import warnings

import torch
import torch.nn as nn
import torch.nn.functional as F
from gpt2_core.errors import UserError
from gpt2_core.model import GPT, GPTConfig

from gpt2_export.exporters import ExportJob
from gpt2_export.tokenizer_files import write_tokenizer_files

ONNX_FILE = "model.onnx"
# Above this the weights go to a side file: a single protobuf cannot exceed 2 GB.
EXTERNAL_DATA_BYTES = 1 << 30


class CachedGPT(nn.Module):
    """A GPT's forward pass as a pure function of (input_ids, past keys/values): what ONNX can trace.

    ``GPT.forward`` fills a preallocated cache in place and branches on its length; here the cache is an
    input and an output, attention always takes an explicit mask, and logits cover every new position.
    The weights are the GPT's own modules, so the computation is the same.
    """

    def __init__(self, gpt: GPT) -> None:
        super().__init__()
        self.gpt = gpt

    def forward(self, input_ids: torch.Tensor, *past: torch.Tensor) -> tuple[torch.Tensor, ...]:
        cfg = self.gpt.config
        tr = self.gpt.transformer
        B, T = input_ids.shape
        C, H = cfg.n_embd, cfg.n_head
        P = past[0].shape[2]
        pos = torch.arange(P, P + T, device=input_ids.device)
        x = tr.wte(input_ids) + tr.wpe(pos)
        # Query t (at position P + t) sees keys 0 .. P + t.
        mask = torch.ones(T, P + T, dtype=torch.bool, device=input_ids.device).tril(diagonal=P)
        presents: list[torch.Tensor] = []
        for i, block in enumerate(tr.h):
            q, k, v = block.attn.c_attn(block.ln_1(x)).split(C, dim=2)
            q, k, v = (t.view(B, T, H, C // H).transpose(1, 2) for t in (q, k, v))
            k = torch.cat([past[2 * i], k], dim=2)
            v = torch.cat([past[2 * i + 1], v], dim=2)
            presents += [k, v]
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
            x = x + block.attn.c_proj(y.transpose(1, 2).reshape(B, T, C))
            x = x + block.mlp(block.ln_2(x))
        logits = self.gpt.lm_head(tr.ln_f(x))[..., : cfg.vocab_size]
        return (logits, *presents)


def io_names(n_layer: int) -> tuple[list[str], list[str]]:
    """(input names, output names) of the exported graph."""
    kv = [f"{{}}.{i}.{part}" for i in range(n_layer) for part in ("key", "value")]
    return ["input_ids"] + [n.format("past") for n in kv], ["logits"] + [n.format("present") for n in kv]


def _require_onnx() -> None:
    missing = []
    for module in ("onnx", "onnxscript"):
        try:
            __import__(module)
        except ImportError:
            missing.append(module)
    if missing:
        raise UserError(f"--format onnx needs {' and '.join(missing)}: pip install 'gpt2-export[onnx]'")


class OnnxExporter:
    """ONNX graph with KV-cache inputs/outputs, for onnxruntime."""

    description = "ONNX: model.onnx with key/value cache inputs and outputs (onnxruntime, ...)"
    dtypes = ("float32", "float16")

    def export(self, job: ExportJob) -> None:
        _require_onnx()
        model = job.model
        cfg = model.config
        wrapper = CachedGPT(model.to(job.torch_dtype)).eval()
        inputs, outputs = io_names(cfg.n_layer)
        # Distinct example sizes (none 0 or 1, which torch.export would fix) keep every axis dynamic.
        B, T, P = 2, 3, 4
        head_dim = cfg.n_embd // cfg.n_head
        ids = torch.zeros(B, T, dtype=torch.long)
        past = tuple(torch.zeros(B, cfg.n_head, P, head_dim, dtype=job.torch_dtype) for _ in inputs[1:])
        batch, seq, past_len = (torch.export.Dim(n) for n in ("batch", "seq", "past"))
        shapes = ({0: batch, 1: seq}, tuple({0: batch, 2: past_len} for _ in past))

        # The exporter warns about optional torchvision ops at every call; they do not concern us.
        registration = logging.getLogger("torch.onnx._internal.exporter._registration")
        level = registration.level
        registration.setLevel(logging.ERROR)
        try:
            with torch.no_grad(), warnings.catch_warnings():
                # Naming one axis in several inputs is the point; torch warns about each repeat.
                warnings.filterwarnings("ignore", message=".*axis name: .* will not be used")
                program = torch.onnx.export(
                    wrapper,
                    (ids, *past),
                    dynamic_shapes=shapes,
                    input_names=inputs,
                    output_names=outputs,
                    dynamo=True,
                    verbose=False,
                )
            # Saved while the model still has the exported dtype: the program reads the live parameters.
            size = sum(p.numel() * p.element_size() for p in model.parameters())
            program.save(str(job.out / ONNX_FILE), external_data=size > EXTERNAL_DATA_BYTES)
        finally:
            registration.setLevel(level)
            model.float()

        from gpt2_core.files import write_json_atomic
        from gpt2_core.weights import config_to_hf

        write_json_atomic(job.out / "config.json", config_to_hf(cfg, job.dtype))
        write_tokenizer_files(cfg, job.out)
        (job.out / "README.md").write_text(onnx_readme(cfg, job.dtype), encoding="utf-8")


def onnx_readme(cfg: GPTConfig, dtype: str) -> str:
    """What the exported graph takes and returns."""
    head_dim = cfg.n_embd // cfg.n_head
    return f"""# GPT-2 (ONNX)

`{ONNX_FILE}`: a GPT-2 with {cfg.n_layer} layers, {cfg.n_head} heads of {head_dim}, context {cfg.block_size}
tokens, vocabulary {cfg.vocab_size}, in {dtype}, exported by the `gpt2` toolkit. The tokenizer files are
GPT-2's byte-level BPE (`tokenizer.json` loads with the `tokenizers` library).

Inputs:
- `input_ids`: int64 (batch, seq), the new tokens
- `past.{{i}}.key`, `past.{{i}}.value` for i in 0..{cfg.n_layer - 1}: (batch, {cfg.n_head}, past, {head_dim}),
  the previous call's `present.*`; arrays with past = 0 to start a sequence

Outputs:
- `logits`: (batch, seq, {cfg.vocab_size}), the next-token logits at every new position
- `present.{{i}}.key`, `present.{{i}}.value`: (batch, {cfg.n_head}, past + seq, {head_dim})

past + seq must not exceed {cfg.block_size}.
"""
