"""Hugging Face format: a directory ``transformers.AutoModelForCausalLM`` and ``AutoTokenizer`` load as is.

Weights go through gpt2-core's :func:`~gpt2_core.weights.state_dict_to_hf` (Conv1D transposes, padding rows
cut); the tokenizer files come from ``gpt2_export.tokenizer_files`` and the README from
``gpt2_export.model_card``. Importing goes the other way through gpt2-core's loader, which reads Hugging Face
GPT-2 directories already.
"""

from __future__ import annotations

from pathlib import Path

import torch
from gpt2_core.config import GPTConfig
from gpt2_core.errors import UserError
from gpt2_core.model import GPT
from gpt2_core.tokenizer import EOT_ID

from gpt2_export.exporters import DTYPES, ExportJob
from gpt2_export.model_card import model_card
from gpt2_export.tokenizer_files import special_tokens_from_hf, stop_token_ids, write_tokenizer_files

ROUND_TRIP_KEY = "gpt2_export"
"""Key of the exported config.json holding our config's fields that GPT2Config lacks."""


class HFExporter:
    """Hugging Face transformers (GPT2LMHeadModel safetensors, tokenizer, model card)."""

    description = "Hugging Face transformers: GPT2LMHeadModel safetensors, tokenizer files, model card"
    dtypes = DTYPES

    def export(self, job: ExportJob) -> None:
        from gpt2_core.files import write_json_atomic
        from gpt2_core.weights import (
            WEIGHTS_FILE,
            config_to_hf,
            model_state_dict,
            save_state_dict,
            state_dict_to_hf,
        )

        config = job.model.config
        dtype = job.torch_dtype
        sd = state_dict_to_hf({k: v.to(dtype) for k, v in model_state_dict(job.model).items()}, config)
        save_state_dict(sd, job.out / WEIGHTS_FILE, metadata={"format": "pt"})
        hf_config = config_to_hf(config, job.dtype)
        stops = stop_token_ids(config)
        hf_config["eos_token_id"] = stops[0] if len(stops) == 1 else stops
        # What the Hugging Face config cannot say, kept for `gpt2 import` (transformers keeps unknown keys).
        hf_config[ROUND_TRIP_KEY] = {
            "padded_vocab_size": config.padded_vocab_size,
            "chat_template": config.chat_template,
        }
        write_json_atomic(job.out / "config.json", hf_config)
        write_json_atomic(
            job.out / "generation_config.json",
            {
                "bos_token_id": EOT_ID,
                "eos_token_id": hf_config["eos_token_id"],
                "pad_token_id": EOT_ID,
            },
        )
        write_tokenizer_files(config, job.out)
        card = model_card(config, job.model.num_params(), job.info, job.dtype)
        (job.out / "README.md").write_text(card, encoding="utf-8")


def import_from_hf(hf_dir: Path) -> GPT:
    """A Hugging Face GPT-2 directory as our model.

    Special tokens come from its tokenizer_config.json. A directory we exported also gets back its chat
    template and its vocabulary padding (as zero rows: padding rows are never read); a foreign Jinja chat
    template is not imported, since ``gpt2 chat`` needs its own kind of template.
    """
    from gpt2_core.model import GPT
    from gpt2_core.weights import (
        CONFIG_FILE,
        EMBEDDING,
        HEAD,
        is_hf_config,
        load_config,
        model_state_dict,
    )

    if not hf_dir.is_dir():
        raise UserError(f"--from-hf {hf_dir}: no such directory")
    raw = load_config(hf_dir)
    if not is_hf_config(raw):
        raise UserError(
            f"--from-hf {hf_dir}: {CONFIG_FILE} is not a Hugging Face GPT-2 config (no model_type); "
            "it already is a gpt2 model directory"
        )
    model = GPT.from_pretrained(hf_dir)
    ours = raw.get(ROUND_TRIP_KEY) if isinstance(raw.get(ROUND_TRIP_KEY), dict) else {}
    special = {k: v for k, v in special_tokens_from_hf(hf_dir).items() if v < model.config.vocab_size}
    fields = {
        **model.config.to_dict(),
        "special_tokens": special,
        "chat_template": ours.get("chat_template"),
        "padded_vocab_size": max(int(ours.get("padded_vocab_size") or 0), model.config.vocab_size),
    }
    if fields == model.config.to_dict():
        return model
    padded = GPT(GPTConfig.from_dict(fields, str(hf_dir / CONFIG_FILE)))
    with torch.no_grad():
        sd = model_state_dict(model)  # an untied head's rows are padded as the embedding's are
        for key in (EMBEDDING, HEAD):
            if key in sd:
                rows = sd[key]
                sd[key] = torch.cat(
                    [rows, rows.new_zeros(padded.config.padded_vocab_size - rows.size(0), rows.size(1))]
                )
        padded.load_state_dict(sd, strict=False)
    return padded.eval()
