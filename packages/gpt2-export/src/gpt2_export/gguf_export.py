"""GGUF: one file that llama.cpp (and so ollama, LM Studio, ...) runs, written by llama.cpp's own writer library.

The file is what llama.cpp's ``convert_hf_to_gguf.py`` makes of our Hugging Face export (its ``GPT2Model``):
the ``gpt2`` architecture's metadata keys (``gpt2.context_length``, ``gpt2.embedding_length``, ...), its tensor
names as ``gguf.get_tensor_name_map`` gives them for our module names (which are Hugging Face's), the weights
in ``nn.Linear`` layout (the converter transposes the Conv1D ones back to this), ``output.weight`` only for an
untied head (llama.cpp's ``gpt2`` loader reads ``output`` when the file has it and otherwise duplicates
``token_embd``, GPT-2's tied head), and the tokenizer as
``tokenizer.ggml.*``: GPT-2's byte-level BPE vocabulary and merges (the ``gpt2`` model, pre-tokenizer ``gpt-2``),
special tokens as control tokens, the chat template of an SFT model.

``--gguf-type`` picks the weights' type as the converter's ``--outtype`` does: ``f32``, ``f16`` (its default)
or ``q8_0`` (blocks of 32 int8 values with an f16 scale); vectors (biases, norms) and the position embedding
stay f32 in every type, and a matrix whose rows do not split into blocks of 32 stays f16 in ``q8_0``.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from gpt2_core.errors import UserError
from gpt2_core.tokenizer import EOT_ID

from gpt2_export.exporters import ExportJob
from gpt2_export.tokenizer_files import chat_template_jinja, stop_token_ids

if TYPE_CHECKING:
    import numpy as np
    from gpt2_core.config import GPTConfig

GGUF_TYPES = ("f32", "f16", "q8_0")
"""The ``--gguf-type`` values."""
DEFAULT_GGUF_TYPE = "f16"
"""llama.cpp's converter's default ``--outtype``: half the size of f32, and what its F16 figures are of."""
FILE_NAME = "model.gguf"
ARCH = "gpt2"


class GGUFExporter:
    """GGUF for llama.cpp and ollama (gpt2 architecture; --gguf-type f32, f16 or q8_0)."""

    description = "GGUF for llama.cpp and ollama: one file, --gguf-type f32, f16 (default) or q8_0"
    dtypes = ("float32",)  # the weights' type is --gguf-type's
    file_name = FILE_NAME

    def export(self, job: ExportJob) -> None:
        write_gguf(job.model, job.out / FILE_NAME, job.options.get("gguf_type", DEFAULT_GGUF_TYPE), job)


def write_gguf(
    model: Any, path: Any, gguf_type: str = DEFAULT_GGUF_TYPE, job: ExportJob | None = None
) -> None:
    """Write ``model`` (our ``GPT``, any dtype) to the GGUF file ``path`` with weights of ``gguf_type``.

    ``UserError`` for a type outside :data:`GGUF_TYPES` or when the ``gguf`` package is missing (it is
    gpt2-export's ``gguf`` extra).
    """
    if gguf_type not in GGUF_TYPES:
        raise UserError(f"--gguf-type {gguf_type!r}: choose one of {', '.join(GGUF_TYPES)}")
    try:
        import gguf
    except ImportError as e:
        raise UserError("--format gguf needs the gguf package: pip install 'gpt2-export[gguf]'") from e

    config = model.config
    file_type = {
        "f32": gguf.LlamaFileType.ALL_F32,
        "f16": gguf.LlamaFileType.MOSTLY_F16,
        "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0,
    }[gguf_type]
    writer = gguf.GGUFWriter(path, ARCH)
    name = job.source.name if job is not None and job.source is not None else "gpt2"
    writer.add_name(name)
    writer.add_block_count(config.n_layer)
    writer.add_context_length(config.block_size)
    writer.add_embedding_length(config.n_embd)
    writer.add_feed_forward_length(4 * config.n_embd)
    writer.add_head_count(config.n_head)
    writer.add_layer_norm_eps(1e-5)  # our LayerNorms' epsilon, GPT-2's
    writer.add_file_type(file_type)
    if gguf_type == "q8_0":
        writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    _add_tokenizer(writer, config, gguf)
    for tensor_name, array, qtype in _tensors(model, gguf_type, gguf):
        writer.add_tensor(tensor_name, array, raw_dtype=qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def _tensors(model: Any, gguf_type: str, gguf: Any) -> list[tuple[str, np.ndarray, Any]]:
    """(GGUF name, data, quantization type or None) of every tensor, as llama.cpp's converter writes them."""
    import numpy as np
    import torch
    from gpt2_core.weights import CONV1D_SUFFIXES, model_state_dict, state_dict_to_hf

    config = model.config
    # Through the Hugging Face tensors, as the converter reads them: padding rows cut, zero biases for a
    # bias-free model (llama.cpp's gpt2 loader requires biases), a tied head left out (an untied one is
    # lm_head, which the gpt2 architecture's name map calls output).
    hf = state_dict_to_hf({k: v.float() for k, v in model_state_dict(model).items()}, config)
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.GPT2, config.n_layer)
    out = []
    for key, value in hf.items():
        module, suffix = key.rsplit(".", 1)
        gguf_name = names.get_name(module)
        if gguf_name is None:
            raise UserError(f"model tensor {key}: no GGUF name for it in the gpt2 architecture")
        if key.endswith(CONV1D_SUFFIXES):
            value = value.t()  # back to (out, in), the converter's transpose of the Conv1D weights
        data = value.detach().to(torch.float32).contiguous().numpy()
        full_name = f"{gguf_name}.{suffix}"
        # As the converter decides: vectors and the position embedding stay f32 in every file type.
        if data.ndim == 1 or gguf_name == "position_embd" or gguf_type == "f32":
            out.append((full_name, data, None))
        elif (
            gguf_type == "q8_0"
            and data.shape[-1] % gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType.Q8_0][0] == 0
        ):
            qtype = gguf.GGMLQuantizationType.Q8_0
            out.append((full_name, gguf.quants.quantize(data, qtype), qtype))
        else:
            out.append((full_name, data.astype(np.float16), None))
    return out


def _add_tokenizer(writer: Any, config: GPTConfig, gguf: Any) -> None:
    """``tokenizer.ggml.*``: GPT-2's vocabulary (byte-level spellings, as in ``vocab.json``) and merges, token
    types, the special token ids, and the chat template of an SFT model."""
    from gpt2_core.tokenizer import EOT_TOKEN, bpe_files

    vocab_bpe, encoder_json = bpe_files()
    encoder: dict[str, int] = json.loads(encoder_json.read_text(encoding="utf-8"))
    special = {EOT_TOKEN: EOT_ID, **config.special_tokens}
    by_id = {idx: token for token, idx in encoder.items()}
    for token, idx in special.items():
        if by_id.get(idx, token) != token:
            raise UserError(f"model config: special token {token!r} reuses id {idx} of {by_id[idx]!r}")
    special_ids = set(special.values())
    by_id.update({idx: token for token, idx in special.items()})
    tokens, types = [], []
    for idx in range(config.vocab_size):
        if idx in by_id:
            tokens.append(by_id[idx])
            types.append(gguf.TokenType.CONTROL if idx in special_ids else gguf.TokenType.NORMAL)
        else:  # an id the model has but the tokenizer never makes: named as the converter names it
            tokens.append(f"[PAD{idx}]")
            types.append(gguf.TokenType.UNUSED)
    merges = [line for line in vocab_bpe.read_text(encoding="utf-8").splitlines()[1:] if line.strip()]

    writer.add_tokenizer_model("gpt2")
    # llama.cpp's name for GPT-2's pre-tokenizer regex (llama-vocab.cpp; its converter writes it): it refuses to
    # load a file naming an unknown one, such as "gpt2".
    writer.add_tokenizer_pre("gpt-2")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    writer.add_bos_token_id(EOT_ID)
    writer.add_eos_token_id(EOT_ID)
    writer.add_unk_token_id(EOT_ID)
    writer.add_add_bos_token(False)  # GPT-2 starts a text with no marker
    stops = stop_token_ids(config)
    if len(stops) > 1:  # an SFT model's end-of-turn marker: llama.cpp stops a reply there
        writer.add_eot_token_id(stops[1])
    template = chat_template_jinja(config)
    if template is not None:
        writer.add_chat_template(template)
