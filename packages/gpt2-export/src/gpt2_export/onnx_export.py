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
from gpt2_core.config import GPTConfig
from gpt2_core.errors import UserError
from gpt2_core.model import GPT

from gpt2_export.exporters import ExportJob
from gpt2_export.tokenizer_files import write_tokenizer_files

ONNX_FILE = "model.onnx"
# Above this the weights go to a side file: a single protobuf cannot exceed 2 GB.
EXTERNAL_DATA_BYTES = 1 << 30


class PastCache:
    """The cache protocol (``gpt2_core.kv_cache.Cache``) as a pure function: the past keys and values are
    inputs, each block's past + new are collected as outputs (``presents``), and every attention takes an
    explicit mask, so the pass traces into a graph with no state and no branch on the past length."""

    def __init__(self, past: tuple[torch.Tensor, ...]) -> None:
        self.past = past
        self.presents: list[torch.Tensor] = []

    def begin(self, T: int, device: torch.device) -> torch.Tensor:
        P = self.past[0].shape[2]
        # Query t (at position P + t) sees keys 0 .. P + t.
        self.mask = torch.ones(T, P + T, dtype=torch.bool, device=device).tril(diagonal=P)
        return torch.arange(P, P + T, device=device)

    def attend(self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        k = torch.cat([self.past[2 * layer], k], dim=2)
        v = torch.cat([self.past[2 * layer + 1], v], dim=2)
        self.presents += [k, v]
        return F.scaled_dot_product_attention(q, k, v, attn_mask=self.mask)

    def end(self) -> None:
        pass


class CachedGPT(nn.Module):
    """A GPT's forward pass as a pure function of (input_ids, past keys/values): what ONNX can trace.

    The model's own forward, with :class:`PastCache` for its cache; logits cover every new position. The head
    is ``head``, a copy of the head's real rows transposed, (n_embd, vocab_size): the graph ends in a plain
    MatMul against an initializer of its own, which onnxruntime's ``quantize_dynamic`` quantizes, where the
    tied table reached through a Transpose was left in float (only its Gather was quantized). A tied model's
    file holds the table twice for it; an untied head is its own table anyway.
    """

    def __init__(self, gpt: GPT) -> None:
        super().__init__()
        self.gpt = gpt
        weight = gpt.lm_head.weight[: gpt.config.vocab_size].detach()
        self.head = nn.Parameter(weight.T.contiguous(), requires_grad=False)

    def forward(self, input_ids: torch.Tensor, *past: torch.Tensor) -> tuple[torch.Tensor, ...]:
        cache = PastCache(past)
        logits = self.gpt.hidden(input_ids, cache) @ self.head
        return (logits, *cache.presents)


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
            size = sum(p.numel() * p.element_size() for p in wrapper.parameters())
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
