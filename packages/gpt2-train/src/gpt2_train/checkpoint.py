"""Checkpoints: each one a directory that is also a model directory, written atomically.

``RUN_DIR/step_00000120/`` holds, in the ``full`` layout (``--parallel ddp``, written by rank 0)

- ``model.safetensors`` + ``config.json``: written by ``gpt2_core.weights.save_model``, so
  ``gpt2 generate --model RUN_DIR/latest`` and ``GPT.from_pretrained`` read a checkpoint like any model;
- ``optimizer.pt``: the optimizer's state (``--optimizer``'s: AdamW's, or Muon's and AdamW's in a list;
  tensors, numbers, lists), read back with ``weights_only=True``;

or, in the ``dcp`` layout (``--parallel fsdp``: no rank ever holds the whole state)

- ``sharded/``: a ``torch.distributed.checkpoint`` directory of the weights (``model.``, a tied head stored
  once as the token embedding) and the optimizer's state (``optimizer.``, keyed by parameter name: AdamW's, or
  Muon's momentum and AdamW's state side by side, their groups in one list); every rank writes
  the parts it holds, one ``__R_0.distcp`` file per rank, and rank 0 DCP's index, ``.metadata``;
- ``config.json``: as above, so ``GPT.from_pretrained`` (hence generate, chat, serve, export) reads the checkpoint
  as one model, in one process (``gpt2_core.weights``);

and in both

- ``ranks.pt``: per rank, the batch source's position and the RNG states (python, numpy, torch, cuda);
- ``state.json``: the format, the layout, step, tokens seen, val loss, best val loss, val losses since the
  best (early stopping), whether it ends a WSD run's stable phase, its branch (``gpt2_train.run_dir``), the
  training config, world size, and the size of every file above; written last, so a directory without it is
  incomplete.

Links in the run directory: ``latest`` (the newest checkpoint), ``best`` (the lowest val loss) and, in a WSD
run, ``stable`` (the end of the stable phase, to train longer from); ``prune`` keeps what they point at. A run
resumed from an earlier checkpoint (``RUN_DIR/stable``) starts a branch, and ``latest``, ``best``, pruning and
``--resume auto`` follow the newest branch (``gpt2_train.run_dir``, which keeps this bookkeeping).

Everything is written into ``step_XXXXXXXX.tmp/``, fsynced, and renamed once every rank has written its
part; then the ``latest`` symlink is replaced atomically. A crash at any moment leaves ``latest`` pointing at a
complete checkpoint, and resuming falls back to the previous checkpoint (with a warning) when the newest one
does not load. In the ``dcp`` layout every rank writes into the run directory, so on several nodes it must be
a shared file system (rank 0 also reads the other ranks' file sizes).

Either layout resumes either kind of run (``apply_checkpoint``), at any world size: DCP re-shards the
weights and the optimizer's state for the ranks that read them, and a full checkpoint is cut into shards. The data
position and RNG follow one rule whatever the layout: every rank takes the saved rank of its own number (the
last one when there were fewer): the pre-training loader's position is shared by all ranks, so it then goes on
from the same point of the token stream, re-split among the new ranks (SFT's loader goes on from the same
batch number of the new split); a run resumed at another world size is therefore not bit-identical to an
uninterrupted one, and the checkpointer says so.

This module holds the layouts: writing a checkpoint's files (:func:`write_full`, :func:`write_sharded`) and
publishing them (:func:`publish`), reading one back (:func:`read_checkpoint`) and applying it to a model and
optimizer (:func:`apply_checkpoint`). When to save, what to save and which checkpoint to resume are the
``gpt2_train.checkpointer.Checkpointer``'s; the run directory's links and branches are
``gpt2_train.run_dir``'s.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from gpt2_core.config import GPTConfig
from gpt2_core.errors import UserError
from gpt2_core.files import fsync_dir, fsync_file, write_json_atomic
from gpt2_core.model import GPT
from gpt2_core.weights import (
    CONFIG_FILE,
    SHARDED_DIR,
    WEIGHTS_FILE,
    load_weights,
    read_config,
    read_sharded_metadata,
    save_config,
    save_model,
    with_tied_head,
    without_tied_head,
)
from safetensors import SafetensorError
from safetensors.torch import load_file

from gpt2_train.optim import Optimizers, torch_optimizers
from gpt2_train.parallel import is_sharded
from gpt2_train.run_dir import LATEST, PREFIX, STABLE, STATE_FILE, RunDir

FORMAT = "gpt2-train-checkpoint/1"
FULL = "full"
"""Layout: weights in safetensors and the optimizer's state in optimizer.pt, written by rank 0."""
SHARDED = "dcp"
"""Layout: weights and optimizer state in ``sharded/`` (torch.distributed.checkpoint), each rank its part."""
OPTIMIZER_FILE = "optimizer.pt"
RANKS_FILE = "ranks.pt"


class CorruptCheckpoint(Exception):
    """A checkpoint directory that cannot be read back (truncated, missing files, bad JSON)."""


class IncompatibleCheckpoint(UserError):
    """A readable checkpoint that does not fit this run (other model shape, other world size)."""


@dataclass
class LoadedCheckpoint:
    path: Path
    state: dict[str, Any]
    """The contents of state.json."""
    model_state: dict[str, torch.Tensor] | None
    """The weights (full layout); None in the dcp layout, which ``apply_checkpoint`` reads in place."""
    optimizer_state: dict[str, Any] | None
    rank_states: list[dict[str, Any]]

    @property
    def layout(self) -> str:
        return self.state.get("layout", FULL)


def capture_rng() -> dict[str, Any]:
    """This process's RNG states, as tensors and plain values (safe for ``weights_only`` loading)."""
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].copy()), *np_state[2:]],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    random.setstate(_to_tuple(state["python"]))
    kind, keys, *rest = state["numpy"]
    np.random.set_state((kind, keys.numpy(), *rest))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def _to_tuple(x: Any) -> Any:
    # random.setstate insists on tuples; a round trip may have produced lists.
    return tuple(_to_tuple(v) for v in x) if isinstance(x, (list, tuple)) else x


def config_difference(saved: GPTConfig, wanted: GPTConfig) -> list[str]:
    """Fields where two model configs differ, as 'name: saved -> wanted'."""
    a, b = saved.to_dict(), wanted.to_dict()
    return [f"{k}: checkpoint {a[k]!r}, this run {b[k]!r}" for k in a if a[k] != b.get(k)]


def tmp_dir(run_dir: Path, step: int) -> Path:
    """Where checkpoint ``step`` is written before it is published."""
    return run_dir / f"{PREFIX}{step:08d}.tmp"


def begin(run_dir: Path, step: int) -> Path:
    """An empty ``step_N.tmp/`` to write checkpoint ``step`` into (leftovers of crashed writes removed)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    for stale in run_dir.glob(f"{PREFIX}*.tmp"):  # left by a crash mid-write
        shutil.rmtree(stale, ignore_errors=True)
    tmp = tmp_dir(run_dir, step)
    tmp.mkdir()
    return tmp


def write_full(
    tmp: Path, model: GPT, optimizer: Any, state: dict[str, Any], rank_states: list[dict[str, Any]]
) -> list[str]:
    """Write the full layout into ``tmp`` (rank 0 alone); the files written, for :func:`publish`."""
    save_model(model, tmp, extra=_model_info(state))
    torch.save(optimizer.state_dict(), tmp / OPTIMIZER_FILE)
    torch.save(rank_states, tmp / RANKS_FILE)
    return [WEIGHTS_FILE, CONFIG_FILE, OPTIMIZER_FILE, RANKS_FILE]


def write_sharded(
    tmp: Path,
    model: GPT,
    optimizer: torch.optim.Optimizer | Optimizers,
    state: dict[str, Any],
    rank_states: list[dict[str, Any]],
    is_main: bool,
) -> list[str] | None:
    """Write the dcp layout into ``tmp``, which exists (collective: every rank writes the shards it holds);
    rank 0 then writes the rest and returns the files written, for :func:`publish` (None on the others)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict

    model_state, optimizer_state = get_state_dict(model, torch_optimizers(optimizer))
    model_state = without_tied_head(model_state, model.config)  # tied: the token embedding, stored once
    # Collective: returns once every rank's files are written and fsynced and rank 0 wrote the index.
    dcp.save({"model": model_state, "optimizer": optimizer_state}, checkpoint_id=tmp / SHARDED_DIR)
    if not is_main:
        return None
    save_config(model.config, tmp, extra=_model_info(state))
    torch.save(rank_states, tmp / RANKS_FILE)
    fsync_dir(tmp / SHARDED_DIR)
    return [
        CONFIG_FILE,
        RANKS_FILE,
        *(f"{SHARDED_DIR}/{p.name}" for p in sorted((tmp / SHARDED_DIR).iterdir())),
    ]


def publish(run: RunDir, tmp: Path, state: dict[str, Any], files: list[str]) -> Path:
    """Write state.json (last: it marks the checkpoint complete), fsync, rename ``tmp`` to its final name and
    point ``latest`` (and, for a stable checkpoint, ``stable``) at it; its final path."""
    final = tmp.with_name(tmp.name.removesuffix(".tmp"))
    state = {"format": FORMAT, **state, "files": {name: (tmp / name).stat().st_size for name in files}}
    write_json_atomic(tmp / STATE_FILE, state)
    for name in [*files, STATE_FILE]:
        fsync_file(tmp / name)
    fsync_dir(tmp)
    if final.exists():  # the same step saved twice, or an abandoned branch's checkpoint of this step
        run.delete(final)
    os.replace(tmp, final)
    run.point(LATEST, final)
    if state.get("stable"):
        run.point(STABLE, final)
    fsync_dir(run.path)
    return final


def read_checkpoint(path: Path) -> LoadedCheckpoint:
    """Read everything of checkpoint ``path`` into memory; CorruptCheckpoint when any part is bad."""
    try:
        state = json.loads((path / STATE_FILE).read_text())
        if not isinstance(state, dict) or state.get("format") != FORMAT:
            raise CorruptCheckpoint(f"{path / STATE_FILE}: not a {FORMAT} state file")
        for name, size in state["files"].items():
            actual = (path / name).stat().st_size
            if actual != size:
                raise CorruptCheckpoint(f"{path / name}: {actual} bytes, expected {size}")
        model_state = optimizer_state = None
        if state.get("layout", FULL) == SHARDED:
            read_sharded_metadata(path / SHARDED_DIR)  # the tensors are read in place, by every rank
        else:
            model_state = load_file(str(path / WEIGHTS_FILE))
            optimizer_state = torch.load(path / OPTIMIZER_FILE, map_location="cpu", weights_only=True)
        rank_states = torch.load(path / RANKS_FILE, map_location="cpu", weights_only=True)
    except CorruptCheckpoint:
        raise
    except UserError as e:
        raise CorruptCheckpoint(str(e)) from e
    except (OSError, ValueError, KeyError, RuntimeError, EOFError, SafetensorError) as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise CorruptCheckpoint(f"{path}: {first}") from e
    return LoadedCheckpoint(path, state, model_state, optimizer_state, rank_states)


def check_model_config(path: Path, wanted: GPTConfig) -> None:
    saved, _ = read_config(path)
    diff = config_difference(saved, wanted)
    if diff:
        raise IncompatibleCheckpoint(
            f"--resume {path}: the checkpoint's model config differs from this run's ({'; '.join(diff)})"
        )


def _model_info(state: dict[str, Any]) -> dict[str, Any]:
    """What config.json's ``info`` records of the training run."""
    return {"step": int(state["step"]), "tokens_seen": state.get("tokens_seen"), "train": state.get("config")}


def apply_checkpoint(
    ckpt: LoadedCheckpoint, model: GPT, optimizer: torch.optim.Optimizer | Optimizers
) -> None:
    """Copy a checkpoint's weights and optimizer state into ``model`` and ``optimizer``, of either layout into
    a sharded model or a whole one.

    A dcp-layout checkpoint is read by every rank together (a collective): each rank reads its parts of each
    tensor, whatever the world size that wrote them, or every tensor whole into a model that is not sharded.
    A full-layout one goes into a whole model through the optimizer's own ``load_state_dict`` (any optimizer
    a plugin registers), into a sharded one through ``set_state_dict`` (FSDP takes torch optimizers only, or
    an ``Optimizers`` of them: ``gpt2_train.optim.torch_optimizers``).
    """
    if ckpt.layout == SHARDED:
        _load_sharded(ckpt.path / SHARDED_DIR, model, optimizer)
        return
    assert ckpt.model_state is not None and ckpt.optimizer_state is not None
    if is_sharded(model):
        _load_full_into_sharded(ckpt.model_state, ckpt.optimizer_state, model, optimizer)
        return
    load_weights(model, ckpt.model_state, str(ckpt.path / WEIGHTS_FILE))
    optimizer.load_state_dict(ckpt.optimizer_state)


def _load_sharded(path: Path, model: GPT, optimizer: torch.optim.Optimizer | Optimizers) -> None:
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    # The state dicts this model and optimizer would save, as the frame DCP reads into: a sharded model's
    # holds this rank's shards, a whole model's whole tensors.
    optimizers = torch_optimizers(optimizer)
    model_state, optimizer_state = get_state_dict(model, optimizers)
    model_state = without_tied_head(model_state, model.config)  # tied: stored once, as the token embedding
    with warnings.catch_warnings():
        # Without a process group (one process, not sharded) DCP warns that it reads alone: it is meant to.
        warnings.filterwarnings("ignore", message="torch.distributed is disabled")
        dcp.load({"model": model_state, "optimizer": optimizer_state}, checkpoint_id=path)
    model_state = with_tied_head(model_state, model.config)
    set_state_dict(model, optimizers, model_state_dict=model_state, optim_state_dict=optimizer_state)


def _load_full_into_sharded(
    model_state: dict[str, torch.Tensor],
    optimizer_state: dict[str, Any],
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | Optimizers,
) -> None:
    """A full-layout checkpoint (every rank read all of it) into a sharded model: each rank keeps its part."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_state_dict

    # optimizer.pt numbers parameters in the order of each optimizer's groups (an Optimizers' in a list, one
    # state dict each); the sharded form names them, in one state dict.
    names = {id(p): name for name, p in model.named_parameters()}
    optimizers = torch_optimizers(optimizer)
    saved = optimizer_state["optimizers"] if isinstance(optimizer, Optimizers) else [optimizer_state]
    by_name: dict[str, Any] = {"state": {}, "param_groups": []}
    for opt, state in zip(optimizers, saved, strict=True):
        order = [names[id(p)] for group in opt.param_groups for p in group["params"]]
        by_name["state"].update({order[i]: s for i, s in state["state"].items()})
        by_name["param_groups"] += [
            {**g, "params": [order[i] for i in g["params"]]} for g in state["param_groups"]
        ]
    weights = with_tied_head(model_state, model.config)
    set_state_dict(
        model,
        optimizers,
        model_state_dict=weights,
        optim_state_dict=by_name,
        options=StateDictOptions(full_state_dict=True),
    )
