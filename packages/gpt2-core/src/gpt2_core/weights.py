"""Model directories on disk: ours (``model.safetensors`` + ``config.json``) and Hugging Face GPT-2's.

Our directory may hold its weights as a ``torch.distributed.checkpoint`` directory, ``sharded/``, instead of
``model.safetensors``: a checkpoint of a sharded (FSDP) training run, each rank's part in its own file, the
weights under ``model.`` (the optimizer's state beside them is not read here). ``GPT.from_pretrained`` reads
it into one model in a single process.

Nothing on the loading path unpickles freely: safetensors for weights, JSON for configs, a Hugging Face
``pytorch_model.bin`` only through ``torch.load(weights_only=True)``. DCP keeps a sharded checkpoint's index in
a pickle (``.metadata``), so that file is first read by an unpickler that admits only DCP's own metadata
classes, ``torch.Size``, dtypes and paths, and refuses the checkpoint otherwise.
"""

from __future__ import annotations

import json
import os
import pickle
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from gpt2_core.config import GPTConfig
from gpt2_core.errors import UserError
from gpt2_core.files import write_json_atomic
from gpt2_core.tokenizer import EOT_ID

if TYPE_CHECKING:
    from gpt2_core.model import GPT

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
SHARDED_DIR = "sharded"
"""A ``torch.distributed.checkpoint`` directory holding the weights under the key prefix ``model.``."""
SHARDED_PREFIX = "model."
SHARDED_METADATA = ".metadata"
"""DCP's index of a sharded checkpoint: every entry's shape, dtype and which file holds which part."""
FORMAT = "gpt2-core/1"

HEAD = "lm_head.weight"
"""The head's key: stored only when the head is untied (a tied one is ``transformer.wte.weight``)."""
EMBEDDING = "transformer.wte.weight"

# Hugging Face stores these four as Conv1D weights, shaped (in, out): ours are nn.Linear, (out, in).
CONV1D_SUFFIXES = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")


def save_state_dict(
    state: dict[str, torch.Tensor], path: Path, metadata: dict[str, str] | None = None
) -> None:
    """Write tensors to a safetensors file through a temporary name, so ``path`` is never half-written."""
    tmp = path.with_name(path.name + ".tmp")
    save_file({k: v.detach().contiguous() for k, v in state.items()}, str(tmp), metadata=metadata)
    os.replace(tmp, path)


def without_tied_head(state: dict[str, Any], config: GPTConfig) -> dict[str, Any]:
    """``state`` (a state dict, or anything keyed by its names) as it is stored: without :data:`HEAD` when the
    head is tied, since it is the token embedding, stored once; an untied head is a tensor of its own."""
    return {k: v for k, v in state.items() if k != HEAD or not config.tie_word_embeddings}


def with_tied_head(state: dict[str, Any], config: GPTConfig) -> dict[str, Any]:
    """The inverse of :func:`without_tied_head`: a tied head's :data:`HEAD` entry is the embedding's again."""
    return {**state, HEAD: state[EMBEDDING]} if config.tie_word_embeddings else state


def model_state_dict(model: GPT) -> dict[str, torch.Tensor]:
    """The model's tensors to save: a tied ``lm_head.weight`` is the embedding, stored once."""
    model = getattr(model, "_orig_mod", model)  # unwrap torch.compile
    return without_tied_head(model.state_dict(), model.config)


def save_model(model: GPT, path: str | os.PathLike[str], extra: dict[str, Any] | None = None) -> Path:
    """Save ``model`` as a directory: weights in safetensors, config (tokenizer included) in JSON.

    ``extra`` is stored in config.json under ``"info"`` (training facts for model cards and so on).
    """
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise UserError(f"{out}: exists and is not a directory")
    out.mkdir(parents=True, exist_ok=True)
    model = getattr(model, "_orig_mod", model)
    save_state_dict(model_state_dict(model), out / WEIGHTS_FILE, metadata={"format": "pt"})
    save_config(model.config, out, extra)
    return out


def save_config(config: GPTConfig, path: Path, extra: dict[str, Any] | None = None) -> None:
    """Write ``config.json`` (config, tokenizer, ``extra`` under ``"info"``) into model directory ``path``."""
    write_json_atomic(path / CONFIG_FILE, {"format": FORMAT, **config.to_dict(), "info": extra or {}})


def read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError as e:
        raise UserError(f"{path}: not found; a model directory needs {CONFIG_FILE} and {WEIGHTS_FILE}") from e
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: not valid JSON ({e})") from e
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a JSON object")
    return data


def is_hf_config(cfg: dict[str, Any]) -> bool:
    return "model_type" in cfg or "n_positions" in cfg


def config_from_hf(cfg: dict[str, Any], source: str = CONFIG_FILE) -> GPTConfig:
    """Our config for a Hugging Face ``GPT2Config`` dict."""
    if cfg.get("model_type", "gpt2") != "gpt2":
        raise UserError(f"{source}: model_type is {cfg['model_type']!r}, only 'gpt2' can be imported")
    if cfg.get("activation_function", "gelu_new") not in ("gelu_new", "gelu_pytorch_tanh"):
        raise UserError(f"{source}: activation {cfg['activation_function']!r} is not GPT-2's tanh GELU")
    # Variants our model does not compute: refuse them rather than load weights that behave differently.
    unsupported = {
        "n_inner": (None, 4 * cfg.get("n_embd", 0)),
        "layer_norm_epsilon": (1e-5,),
        "scale_attn_weights": (True,),
        "scale_attn_by_inverse_layer_idx": (False,),
        "reorder_and_upcast_attn": (False,),
    }
    for key, allowed in unsupported.items():
        if key in cfg and cfg[key] not in allowed:
            raise UserError(f"{source}: {key}={cfg[key]!r} is not supported (GPT-2 uses {allowed[0]!r})")
    try:
        return GPTConfig(
            block_size=cfg["n_positions"],
            vocab_size=cfg["vocab_size"],
            n_layer=cfg["n_layer"],
            n_head=cfg["n_head"],
            n_embd=cfg["n_embd"],
            # False: lm_head.weight is in the weights file, a matrix of its own.
            tie_word_embeddings=cfg.get("tie_word_embeddings", True),
        )
    except KeyError as e:
        raise UserError(f"{source}: missing key {e.args[0]!r} of a GPT-2 config") from e


def state_dict_from_hf(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Hugging Face GPT-2 tensors renamed/transposed into ours (drops the cached attention masks)."""
    out = {}
    for key, value in sd.items():
        if key.endswith((".attn.bias", ".attn.masked_bias")):
            continue
        if not key.startswith(("transformer.", "lm_head.")):
            key = "transformer." + key  # OpenAI's original checkpoints have no prefix
        out[key] = value.t() if key.endswith(CONV1D_SUFFIXES) else value
    return out


def config_to_hf(config: GPTConfig, dtype: str = "float32") -> dict[str, Any]:
    """A Hugging Face ``GPT2Config`` dict (config.json of a ``GPT2LMHeadModel``) for our config.

    The inverse of :func:`config_from_hf`. Vocabulary padding is not part of it (the exported embedding
    has ``vocab_size`` rows); dropout is recorded as configured; special tokens live in the tokenizer files.
    """
    return {
        "architectures": ["GPT2LMHeadModel"],
        "model_type": "gpt2",
        "vocab_size": config.vocab_size,
        "n_positions": config.block_size,
        # GPT2Config's older name of the same length; llama.cpp's convert_hf_to_gguf.py reads only this one.
        "n_ctx": config.block_size,
        "n_embd": config.n_embd,
        "n_layer": config.n_layer,
        "n_head": config.n_head,
        "n_inner": None,
        "activation_function": "gelu_new",
        "resid_pdrop": config.dropout,
        "embd_pdrop": config.dropout,
        "attn_pdrop": config.dropout,
        "layer_norm_epsilon": 1e-5,
        "initializer_range": 0.02,
        "scale_attn_weights": True,
        "scale_attn_by_inverse_layer_idx": False,
        "reorder_and_upcast_attn": False,
        "use_cache": True,
        "bos_token_id": EOT_ID,
        "eos_token_id": EOT_ID,
        "tie_word_embeddings": config.tie_word_embeddings,
        "torch_dtype": dtype,
    }


def state_dict_to_hf(sd: dict[str, torch.Tensor], config: GPTConfig) -> dict[str, torch.Tensor]:
    """Our tensors as a Hugging Face ``GPT2LMHeadModel``'s: the inverse of :func:`state_dict_from_hf`.

    The four Conv1D weights are transposed, the embedding's and an untied head's padding rows (ids >=
    ``vocab_size``) are cut, a tied ``lm_head.weight`` is left out (transformers ties it to ``wte``), and a
    model without biases gets zero biases, which compute exactly the same function in GPT-2's biased layers.
    """
    out = {}
    for key, value in without_tied_head(sd, config).items():
        if key in (EMBEDDING, HEAD):
            value = value[: config.vocab_size]
        out[key] = value.t().contiguous() if key.endswith(CONV1D_SUFFIXES) else value
    if not config.bias:
        for key in [
            k for k in out if k.endswith(".weight") and not k.endswith((".wte.weight", ".wpe.weight"))
        ]:
            bias = key[: -len("weight")] + "bias"
            if bias not in out:
                # Conv1D weights are (in, out) after the transpose; LayerNorm weights are (n_embd,).
                out[bias] = torch.zeros(out[key].shape[-1], dtype=out[key].dtype)
    return out


def _read_weights(path: Path) -> dict[str, torch.Tensor]:
    try:
        if path.suffix == ".safetensors":
            return load_file(str(path))
        return torch.load(path, map_location="cpu", weights_only=True)
    except (SafetensorError, OSError, RuntimeError, EOFError, ValueError) as e:
        raise UserError(
            f"{path}: cannot read weights ({str(e).splitlines()[0]}); the file may be truncated"
        ) from e


def find_weights(path: str | os.PathLike[str]) -> tuple[GPTConfig, Path, bool]:
    """The config of model directory ``path`` (ours, a checkpoint, or Hugging Face GPT-2), the weights to read
    (a safetensors or ``pytorch_model.bin`` file, or a :data:`SHARDED_DIR` directory), and whether the directory
    is Hugging Face's. ``UserError`` naming the path when it is no model directory or its weights are missing."""
    root = Path(path)
    if not root.exists():
        raise UserError(f"{root}: no such model directory")
    if not root.is_dir():
        raise UserError(
            f"{root}: not a directory; a model is a directory holding {CONFIG_FILE} and {WEIGHTS_FILE}"
        )
    config, hf = read_config(root)
    weights = root / WEIGHTS_FILE
    if not weights.exists() and not hf and (root / SHARDED_DIR).is_dir():
        return config, root / SHARDED_DIR, hf
    if not weights.exists() and hf and (root / "pytorch_model.bin").exists():
        weights = root / "pytorch_model.bin"
    if not weights.exists():
        raise UserError(f"{weights}: not found")
    return config, weights, hf


def read_weights_into(model: GPT, weights: Path, hf: bool) -> None:
    """Read what :func:`find_weights` found into ``model`` (built from the config it returned)."""
    if weights.is_dir():
        load_sharded_weights(model, weights)
        return
    sd = _read_weights(weights)
    load_weights(model, state_dict_from_hf(sd) if hf else sd, str(weights))


def load_weights(model: GPT, sd: dict[str, torch.Tensor], source: str) -> None:
    """Copy ``sd`` into ``model``, refusing missing, unexpected or wrongly shaped tensors by name."""
    # A tied head's lm_head.weight (Hugging Face files may hold one) is the embedding: not read.
    own = without_tied_head(model.state_dict(), model.config)
    sd = without_tied_head(sd, model.config)
    missing = sorted(set(own) - set(sd))
    unexpected = sorted(set(sd) - set(own))
    if missing or unexpected:
        raise UserError(
            f"{source}: does not match the config (missing {missing[:3]}, unexpected {unexpected[:3]})"
        )
    for k, v in sd.items():
        if v.shape != own[k].shape:
            raise UserError(
                f"{source}: {k} has shape {tuple(v.shape)}, the config needs {tuple(own[k].shape)}"
            )
    model.load_state_dict(sd, strict=False)


class _MetadataUnpickler(pickle.Unpickler):
    """Unpickles DCP's ``.metadata`` and nothing else: any other global is refused before it is imported."""

    ALLOWED = {
        ("pathlib", "PosixPath"),
        ("pathlib", "PurePosixPath"),
        ("pathlib", "WindowsPath"),
        ("pathlib", "PureWindowsPath"),
        ("torch", "Size"),
        ("torch.serialization", "_get_layout"),
        ("torch.distributed.checkpoint.filesystem", "_StorageInfo"),
    }

    def find_class(self, module: str, name: str) -> Any:
        if (
            (module, name) in self.ALLOWED
            or module == "torch.distributed.checkpoint.metadata"
            or (module == "torch" and isinstance(getattr(torch, name, None), torch.dtype))
        ):
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"{module}.{name} has no place in a checkpoint's metadata")


def read_sharded_metadata(path: str | os.PathLike[str]) -> Any:
    """DCP's ``Metadata`` of sharded checkpoint directory ``path``, read by the restricted unpickler.

    Raises ``UserError`` naming the directory when the file is missing, truncated or holds anything else.
    """
    file = Path(path) / SHARDED_METADATA
    try:
        with file.open("rb") as f:
            metadata = _MetadataUnpickler(f).load()
    except (OSError, EOFError, pickle.UnpicklingError, AttributeError, ImportError, ValueError) as e:
        raise UserError(f"{path}: not a readable sharded checkpoint ({str(e).splitlines()[0]})") from e
    if not hasattr(metadata, "state_dict_metadata"):
        raise UserError(f"{path}: not a readable sharded checkpoint ({SHARDED_METADATA} is no DCP index)")
    return metadata


def load_sharded_weights(model: GPT, path: Path) -> None:
    """Read the weights of sharded checkpoint directory ``path`` (:data:`SHARDED_DIR`) into ``model``.

    DCP joins the ranks' parts of each tensor as it reads them, in this process alone (also under torchrun:
    no other rank takes part). Only the ``model.`` entries are read.
    """
    import torch.distributed.checkpoint as dcp

    stored = read_sharded_metadata(path).state_dict_metadata  # checked before DCP unpickles it
    own = without_tied_head(model.state_dict(), model.config)
    missing = sorted(k for k in own if SHARDED_PREFIX + k not in stored)
    if missing:
        raise UserError(f"{path}: does not match the config (missing {missing[:3]})")
    for k, v in own.items():
        shape = tuple(getattr(stored[SHARDED_PREFIX + k], "size", ()))
        if shape != tuple(v.shape):
            raise UserError(f"{path}: {k} has shape {shape}, the config needs {tuple(v.shape)}")
    try:
        with warnings.catch_warnings():
            # DCP warns that it reads in a single process even when told to: that is the intent here.
            warnings.filterwarnings("ignore", message="torch.distributed is disabled")
            # In place: the state dict's tensors are the parameters' own storage.
            dcp.load({SHARDED_PREFIX.rstrip("."): own}, checkpoint_id=str(path), no_dist=True)
    except (OSError, ValueError, RuntimeError, EOFError) as e:
        raise UserError(
            f"{path}: cannot read weights ({str(e).splitlines()[0]}); a file may be truncated"
        ) from e


def load_config(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The raw config.json of a model directory (ours: includes ``info``)."""
    return read_json(Path(path) / CONFIG_FILE)


def read_config(path: str | os.PathLike[str]) -> tuple[GPTConfig, bool]:
    """The ``GPTConfig`` of model directory ``path`` (ours, a checkpoint, or Hugging Face GPT-2) without
    reading its weights, and whether it is a Hugging Face one. Raises ``UserError`` naming the file."""
    source = str(Path(path) / CONFIG_FILE)
    raw = load_config(path)
    if is_hf_config(raw):
        return config_from_hf(raw, source), True
    try:
        return GPTConfig.from_dict(
            {k: v for k, v in raw.items() if k not in ("format", "info")}, source
        ), False
    except TypeError as e:
        raise UserError(f"{source}: {e}") from e
