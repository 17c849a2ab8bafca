"""Checkpoints: each one a directory that is also a model directory, written atomically.

``RUN_DIR/step_00000120/`` holds

- ``model.safetensors`` + ``config.json``: written by ``gpt2_core.weights.save_model``, so
  ``gpt2 generate --model RUN_DIR/latest`` and ``load_model`` read a checkpoint like any model;
- ``optimizer.pt``: AdamW's state (tensors, numbers, lists), read back with ``weights_only=True``;
- ``ranks.pt``: per rank, the batch source's position and the RNG states (python, numpy, torch, cuda);
- ``state.json``: step, tokens seen, val loss, best val loss, the training config, world size, and the
  size of every file above; written last, so a directory without it is incomplete.

Everything is written into ``step_XXXXXXXX.tmp/``, fsynced, and renamed; then the ``latest`` symlink
is replaced atomically. A crash at any moment leaves ``latest`` pointing at a complete checkpoint, and
resuming falls back to the previous checkpoint (with a warning) when the newest one does not load.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from gpt2_core.errors import UserError
from gpt2_core.files import fsync_dir, fsync_file, write_json_atomic
from gpt2_core.model import GPT, GPTConfig
from gpt2_core.weights import (
    CONFIG_FILE,
    WEIGHTS_FILE,
    load_weights,
    read_config,
    save_model,
)
from safetensors import SafetensorError
from safetensors.torch import load_file

FORMAT = "gpt2-train-checkpoint/1"
STATE_FILE = "state.json"
OPTIMIZER_FILE = "optimizer.pt"
RANKS_FILE = "ranks.pt"
LATEST = "latest"
AUTO = "auto"
"""``--resume auto``: ``latest`` when the run directory holds a checkpoint, else a fresh start."""
PREFIX = "step_"


class CorruptCheckpoint(Exception):
    """A checkpoint directory that cannot be read back (truncated, missing files, bad JSON)."""


class IncompatibleCheckpoint(UserError):
    """A readable checkpoint that does not fit this run (other model shape, other world size)."""


@dataclass
class LoadedCheckpoint:
    path: Path
    state: dict[str, Any]
    """The contents of state.json."""
    model_state: dict[str, torch.Tensor]
    optimizer_state: dict[str, Any]
    rank_states: list[dict[str, Any]]


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


class Checkpointer:
    """Saves, lists, prunes and loads the checkpoints of one run directory (rank 0 writes)."""

    def __init__(
        self,
        run_dir: str | os.PathLike[str],
        keep: int = 3,
        every_steps: int = 0,
        every_seconds: float = 0.0,
    ) -> None:
        self.run_dir = Path(run_dir)
        self.keep = keep
        self.every_steps, self.every_seconds = every_steps, every_seconds
        self.last_save = time.monotonic()
        """When the last save ended (``time.monotonic()``); ranks that do not write set it themselves."""

    def due(self, step: int) -> bool:
        """Whether the clock (``every_seconds`` since the last save) or ``every_steps`` calls for a save.

        The trainer also saves, due or not, at the last step, on a signal and when val loss improves.
        """
        by_steps = bool(self.every_steps) and step % self.every_steps == 0
        by_clock = bool(self.every_seconds) and time.monotonic() - self.last_save >= self.every_seconds
        return by_steps or by_clock

    # --- listing ---

    def checkpoints(self) -> list[Path]:
        """Finished checkpoint directories, oldest first (by step)."""
        if not self.run_dir.is_dir():
            return []
        found = []
        for p in self.run_dir.iterdir():
            name = p.name
            if p.is_dir() and name.startswith(PREFIX) and name[len(PREFIX) :].isdigit():
                found.append(p)
        return sorted(found, key=lambda p: int(p.name[len(PREFIX) :]))

    def candidates(self, spec: str) -> list[Path]:
        """Checkpoints to try for ``--resume spec``, best first: ``latest`` lists every one, newest first."""
        if spec == LATEST:
            found = self.checkpoints()[::-1]
            if not found:
                raise UserError(f"--resume latest: no checkpoint in {self.run_dir}")
            return found
        path = Path(spec)
        if not path.is_dir():
            raise UserError(f"--resume {spec}: not a checkpoint directory")
        return [path.resolve()]

    # --- saving ---

    def save(
        self,
        model: GPT,
        optimizer: torch.optim.Optimizer,
        state: dict[str, Any],
        rank_states: list[dict[str, Any]],
    ) -> Path:
        """Write checkpoint ``step_<state['step']>`` atomically, point ``latest`` at it, prune old ones."""
        step = int(state["step"])
        self.run_dir.mkdir(parents=True, exist_ok=True)
        final = self.run_dir / f"{PREFIX}{step:08d}"
        tmp = self.run_dir / f"{final.name}.tmp"
        for stale in self.run_dir.glob(f"{PREFIX}*.tmp"):  # left by a crash mid-write
            shutil.rmtree(stale, ignore_errors=True)
        tmp.mkdir()
        info = {"step": step, "tokens_seen": state.get("tokens_seen"), "train": state.get("config")}
        save_model(model, tmp, extra=info)
        torch.save(optimizer.state_dict(), tmp / OPTIMIZER_FILE)
        torch.save(rank_states, tmp / RANKS_FILE)
        files = [WEIGHTS_FILE, CONFIG_FILE, OPTIMIZER_FILE, RANKS_FILE]
        state = {
            "format": FORMAT,
            **state,
            "files": {name: (tmp / name).stat().st_size for name in files},
        }
        write_json_atomic(tmp / STATE_FILE, state)
        for name in [*files, STATE_FILE]:
            fsync_file(tmp / name)
        fsync_dir(tmp)
        if final.exists():  # the same step saved twice (e.g. at the end right after a cadence save)
            self._delete(final)
        os.replace(tmp, final)
        self._point_latest(final)
        fsync_dir(self.run_dir)
        self.prune()
        self.last_save = time.monotonic()
        return final

    def _point_latest(self, target: Path) -> None:
        link = self.run_dir / LATEST
        tmp = self.run_dir / f"{LATEST}.tmp"
        if tmp.is_symlink() or tmp.exists():
            tmp.unlink()
        os.symlink(target.name, tmp, target_is_directory=True)
        os.replace(tmp, link)

    def _delete(self, path: Path) -> None:
        # Rename first: a crash mid-delete must not leave a half-deleted directory that looks finished.
        doomed = path.with_name(path.name + ".deleting")
        os.replace(path, doomed)
        shutil.rmtree(doomed, ignore_errors=True)

    def prune(self) -> None:
        """Keep the newest ``keep`` checkpoints and the one with the lowest val loss."""
        found = self.checkpoints()
        keep = set(found[-self.keep :])
        best, best_loss = None, float("inf")
        for p in found:
            try:
                val = json.loads((p / STATE_FILE).read_text()).get("val_loss")
            except (OSError, ValueError):
                continue
            if val is not None and val < best_loss:
                best, best_loss = p, val
        if best is not None:
            keep.add(best)
        for p in found:
            if p not in keep:
                self._delete(p)

    def clear(self) -> None:
        """Delete every checkpoint and the ``latest`` link (``--overwrite``)."""
        for p in self.checkpoints():
            self._delete(p)
        link = self.run_dir / LATEST
        if link.is_symlink() or link.exists():
            link.unlink()

    # --- loading ---

    def read(self, path: Path) -> LoadedCheckpoint:
        """Read everything of checkpoint ``path`` into memory; CorruptCheckpoint when any part is bad."""
        try:
            state = json.loads((path / STATE_FILE).read_text())
            if not isinstance(state, dict) or state.get("format") != FORMAT:
                raise CorruptCheckpoint(f"{path / STATE_FILE}: not a {FORMAT} state file")
            for name, size in state["files"].items():
                actual = (path / name).stat().st_size
                if actual != size:
                    raise CorruptCheckpoint(f"{path / name}: {actual} bytes, expected {size}")
            model_state = load_file(str(path / WEIGHTS_FILE))
            optimizer_state = torch.load(path / OPTIMIZER_FILE, map_location="cpu", weights_only=True)
            rank_states = torch.load(path / RANKS_FILE, map_location="cpu", weights_only=True)
        except CorruptCheckpoint:
            raise
        except (OSError, ValueError, KeyError, RuntimeError, EOFError, SafetensorError) as e:
            first = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise CorruptCheckpoint(f"{path}: {first}") from e
        return LoadedCheckpoint(path, state, model_state, optimizer_state, rank_states)

    def load_first_good(self, spec: str, model_config: GPTConfig) -> LoadedCheckpoint:
        """The newest readable checkpoint among ``candidates(spec)``, warning about each one skipped.

        A checkpoint whose model config differs from ``model_config`` is refused outright (the older
        ones would not fit either), naming the fields that differ.
        """
        errors = []
        for path in self.candidates(spec):
            try:
                ckpt = self.read(path)
            except CorruptCheckpoint as e:
                print(
                    f"warning: checkpoint {path.name} is unreadable ({e}); trying an older one",
                    file=sys.stderr,
                )
                errors.append(str(e))
                continue
            check_model_config(path, model_config)
            return ckpt
        raise UserError(f"--resume {spec}: no readable checkpoint ({'; '.join(errors)})")


def check_model_config(path: Path, wanted: GPTConfig) -> None:
    saved, _ = read_config(path)
    diff = config_difference(saved, wanted)
    if diff:
        raise IncompatibleCheckpoint(
            f"--resume {path}: the checkpoint's model config differs from this run's ({'; '.join(diff)})"
        )


def apply_checkpoint(ckpt: LoadedCheckpoint, model: GPT, optimizer: torch.optim.Optimizer | None) -> None:
    """Copy a loaded checkpoint's weights (and optimizer state) into ``model`` (and ``optimizer``)."""
    load_weights(model, ckpt.model_state, str(ckpt.path / WEIGHTS_FILE))
    if optimizer is not None:
        optimizer.load_state_dict(ckpt.optimizer_state)
