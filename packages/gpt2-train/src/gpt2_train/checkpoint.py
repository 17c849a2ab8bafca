"""Checkpoints: each one a directory that is also a model directory, written atomically.

``RUN_DIR/step_00000120/`` holds, in the ``full`` layout (``--parallel ddp``, written by rank 0)

- ``model.safetensors`` + ``config.json``: written by ``gpt2_core.weights.save_model``, so
  ``gpt2 generate --model RUN_DIR/latest`` and ``GPT.from_pretrained`` read a checkpoint like any model;
- ``optimizer.pt``: the optimizer's state (``--optimizer``'s: AdamW's, or Muon's and AdamW's in a list;
  tensors, numbers, lists), read back with ``weights_only=True``;

or, in the ``dcp`` layout (``--parallel fsdp``: no rank ever holds the whole state)

- ``sharded/``: a ``torch.distributed.checkpoint`` directory of the weights (``model.``, the tied head stored
  once as the token embedding) and AdamW's state (``optimizer.``, keyed by parameter name); every rank writes
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
weights and AdamW's state for the ranks that read them, and a full checkpoint is cut into shards. The data
position and RNG follow one rule whatever the layout: every rank takes the saved rank of its own number (the
last one when there were fewer): the pre-training loader's position is shared by all ranks, so it then goes on
from the same point of the token stream, re-split among the new ranks (SFT's loader goes on from the same
batch number of the new split); a run resumed at another world size is therefore not bit-identical to an
uninterrupted one, and the checkpointer says so.

The checkpointer owns what is saved, as torchtitan's ``CheckpointManager`` does: it is given the run's
stateful parts (:class:`CheckpointParts`: model, optimizer, training batch source, the loop's counters, the
run's config; the learning-rate schedule is a function of the step, and RNG states are captured here), and
``save`` and ``resume`` write them all and read them all back.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

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
)
from gpt2_data.batch_source import BatchSource
from safetensors import SafetensorError
from safetensors.torch import load_file

from gpt2_train.config import NOT_CARRIED
from gpt2_train.distributed import DistEnv, barrier, broadcast_object, gather_objects, on_main_rank
from gpt2_train.parallel import is_sharded
from gpt2_train.run_dir import (
    AUTO,
    LATEST,
    PREFIX,
    ROOT,
    STABLE,
    STATE_FILE,
    Lineage,
    RunDir,
    fork,
    lineage_of,
)

if TYPE_CHECKING:
    from torch.distributed.checkpoint.stateful import Stateful

FORMAT = "gpt2-train-checkpoint/1"
FULL = "full"
"""Layout: weights in safetensors and the optimizer's state in optimizer.pt, written by rank 0."""
SHARDED = "dcp"
"""Layout: weights and AdamW's state in ``sharded/`` (torch.distributed.checkpoint), each rank its part."""
OPTIMIZER_FILE = "optimizer.pt"
RANKS_FILE = "ranks.pt"


class CorruptCheckpoint(Exception):
    """A checkpoint directory that cannot be read back (truncated, missing files, bad JSON)."""


class IncompatibleCheckpoint(UserError):
    """A readable checkpoint that does not fit this run (other model shape, other world size)."""


@dataclass
class CheckpointParts:
    """The stateful parts of a run: what every checkpoint saves and :meth:`Checkpointer.resume` restores."""

    model: GPT
    """Sharded by FSDP2 (``gpt2_train.parallel.shard``) it is saved in the dcp layout, else in the full one."""
    optimizer: Any
    """A ``torch.optim.Optimizer``, or ``gpt2_train.optim.Optimizers`` around several, over ``model``."""
    source: BatchSource
    """The training batch source: every rank's position is saved."""
    progress: Stateful
    """The loop's counters (the trainer's ``state_dict()``: step, tokens seen, best val loss, ...), saved in
    state.json and given all of state.json back on resume; must hold ``step``."""
    config: dict[str, Any]
    """The run's ``TrainConfig.to_dict()``, recorded in state.json and config.json; resuming a checkpoint
    of another ``optimizer`` is refused."""


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


def config_changes(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """The fields of a run's config that ``current`` changes from the ``saved`` one, as ``--flag old -> new``
    (fields the saved config lacks are not changes: it predates them). The run's optimizer's options count
    as fields (``--muon-lr``), the other optimizers' tables not at all."""
    saved, current = flat_options(saved), flat_options(current)
    changes = []
    for name, new in current.items():
        if name in NOT_CARRIED or name not in saved or saved[name] == new:
            continue
        flag = {"loggers": "logger", "init_from": "from"}.get(name, name).replace("_", "-")
        changes.append(f"--{flag} {_show(saved[name])} -> {_show(new)}")
    return changes


def flat_options(config: dict[str, Any]) -> dict[str, Any]:
    """``config`` (a ``TrainConfig`` as a dict) with its optimizer's options as top-level fields, as their
    flags name them; an older checkpoint's config has them there already."""
    tables = config.get("optimizer_options") or {}
    flat = {k: v for k, v in config.items() if k != "optimizer_options"}
    return {**flat, **tables.get(config.get("optimizer"), {})}


def _show(value: Any) -> str:
    return ",".join(map(str, value)) if isinstance(value, list) else str(value)


@dataclass
class ResumeInfo:
    """What :meth:`Checkpointer.resume` resumed."""

    path: Path
    state: dict[str, Any]
    """The checkpoint's state.json (its ``config`` the config it was trained with)."""
    changes: list[str]
    """This run's config against the checkpoint's, as ``--flag old -> new`` (empty: the same run)."""
    branched: bool
    """It was not the run's newest checkpoint: this run starts a branch and leaves the ones after it."""

    @property
    def step(self) -> int:
        return int(self.state["step"])

    def describe(self, spec: Path) -> str:
        """The one line a resumed run starts with."""
        where = str(spec) if spec.name == self.path.name else f"{spec} ({self.path.name})"
        line = f"resumed from {where} at step {self.step}"
        if self.branched:
            line += " as a new branch (checkpoints after it are kept but no longer followed)"
        return line + (": " + ", ".join(self.changes) if self.changes else "")


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
    """The checkpoints of one run directory: listing and pruning them, and, given the run's ``parts``, saving
    and resuming them.

    Every rank builds one with the same ``run_dir`` and its own ``parts``; :meth:`save` and :meth:`resume`
    are collective (every rank calls them at the same step, over ``env``'s process group).
    """

    def __init__(
        self,
        run_dir: str | os.PathLike[str],
        keep: int = 3,
        every_steps: int = 0,
        every_seconds: float = 0.0,
        *,
        parts: CheckpointParts | None = None,
        env: DistEnv | None = None,
    ) -> None:
        self.run_dir = Path(run_dir)
        self.dir = RunDir(self.run_dir)
        self.keep = keep
        self.every_steps, self.every_seconds = every_steps, every_seconds
        self.parts = parts
        self.env = env or DistEnv()
        self.last_save = time.monotonic()
        """When the last save ended on this rank (``time.monotonic()``)."""
        self.lineage: Lineage | None = None
        """The branches the next checkpoint descends from (``gpt2_train.run_dir``): set by ``resume``, else
        a new branch (branch 0 in an empty directory) at the first save."""
        self.resumed: ResumeInfo | None = None
        """What ``resume`` resumed (None before it, or when it started fresh)."""

    def due(self, step: int) -> bool:
        """Whether the clock (``every_seconds`` since the last save) or ``every_steps`` calls for a save.

        The trainer also saves, due or not, at the last step, on a signal and when val loss improves.
        """
        by_steps = bool(self.every_steps) and step % self.every_steps == 0
        by_clock = bool(self.every_seconds) and time.monotonic() - self.last_save >= self.every_seconds
        return by_steps or by_clock

    # --- listing ---

    def checkpoints(self) -> list[Path]:
        """Finished checkpoint directories, oldest first (by step), every branch's."""
        return self.dir.checkpoints()

    def candidates(self, spec: str) -> list[Path]:
        """Checkpoints to try for ``--resume spec``, best first: ``latest`` lists the head's lineage, newest
        first (``gpt2_train.run_dir``)."""
        if spec == LATEST:
            found = self.dir.followed()
            if not found:
                raise UserError(f"--resume latest: no checkpoint in {self.run_dir}")
            return found
        path = Path(spec)
        if not path.is_dir() and path.name == STABLE:
            raise UserError(
                f"--resume {spec}: no stable checkpoint: only a --lr-schedule wsd run whose warm-up ends before "
                "its last step writes one (its start line warns when it cannot)"
            )
        if not path.is_dir():
            raise UserError(f"--resume {spec}: not a checkpoint directory")
        return [path.resolve()]

    # --- saving ---

    def _parts(self) -> CheckpointParts:
        if self.parts is None:
            raise TypeError(
                "Checkpointer: saving and resuming need the run's parts (Checkpointer(..., parts=))"
            )
        return self.parts

    def save(self, *, val_loss: float | None = None, stable: bool = False) -> Path | None:
        """Write a checkpoint of every part at its current step (collective): rank 0 writes the full layout,
        or, with a sharded model, every rank writes its shards (the dcp layout).

        Each rank's batch-source position and RNG states are gathered into it. ``val_loss``: this step's
        (``best`` links the lowest); ``stable``: the checkpoint ends a WSD run's stable phase (kept, and
        linked as ``stable``). Returns its path on rank 0, None on the others; returns once it is published.
        """
        parts = self._parts()
        rank_state = {"source": parts.source.state_dict(), "rng": capture_rng()}
        ranks = gather_objects(self.env, rank_state)
        if self.lineage is None:
            self.lineage = ROOT if not self.checkpoints() else [[self.dir.next_branch(), None]]
        state = {
            **parts.progress.state_dict(),
            "val_loss": val_loss,
            "stable": stable,
            "branch": self.lineage,
            "world_size": self.env.world_size,
            "config": parts.config,
        }
        path = None
        if is_sharded(parts.model):
            path = self._save_sharded(parts.model, parts.optimizer, state, ranks)
        elif self.env.is_main:
            path = self._save_full(parts.model, parts.optimizer, state, ranks)
        barrier(self.env)  # nobody races ahead (or exits) while rank 0 writes
        self.last_save = time.monotonic()
        return path

    def _save_full(
        self,
        model: GPT,
        optimizer: Any,
        state: dict[str, Any],
        rank_states: list[dict[str, Any]],
    ) -> Path:
        """Write checkpoint ``step_<state['step']>`` in the full layout atomically, point ``latest`` at it,
        prune old ones (rank 0 alone)."""
        tmp = self._begin(int(state["step"]))
        save_model(model, tmp, extra=_model_info(state))
        torch.save(optimizer.state_dict(), tmp / OPTIMIZER_FILE)
        torch.save(rank_states, tmp / RANKS_FILE)
        return self._finish(
            tmp, {**state, "layout": FULL}, [WEIGHTS_FILE, CONFIG_FILE, OPTIMIZER_FILE, RANKS_FILE]
        )

    def _save_sharded(
        self,
        model: GPT,
        optimizer: torch.optim.Optimizer,
        state: dict[str, Any],
        rank_states: list[dict[str, Any]],
    ) -> Path | None:
        """Write checkpoint ``step_<state['step']>`` in the dcp layout: called by every rank, each writing the
        shards it holds; rank 0 then writes the rest and publishes it as ``save`` does (its path; None on the
        others, which must wait at a barrier for it before going on)."""
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint.state_dict import get_state_dict

        env = self.env
        step = int(state["step"])
        if env.is_main:
            self._begin(step)
        barrier(env)  # the directory exists, emptied of any earlier attempt, before a rank writes into it
        tmp = self._tmp_dir(step)
        model_state, optimizer_state = get_state_dict(model, optimizer)
        del model_state["lm_head.weight"]  # tied: the token embedding, stored once
        # Collective: returns once every rank's files are written and fsynced and rank 0 wrote the index.
        dcp.save({"model": model_state, "optimizer": optimizer_state}, checkpoint_id=tmp / SHARDED_DIR)
        if not env.is_main:
            return None
        save_config(model.config, tmp, extra=_model_info(state))
        torch.save(rank_states, tmp / RANKS_FILE)
        shards = [f"{SHARDED_DIR}/{p.name}" for p in sorted((tmp / SHARDED_DIR).iterdir())]
        fsync_dir(tmp / SHARDED_DIR)
        return self._finish(tmp, {**state, "layout": SHARDED}, [CONFIG_FILE, RANKS_FILE, *shards])

    def _tmp_dir(self, step: int) -> Path:
        return self.run_dir / f"{PREFIX}{step:08d}.tmp"

    def _begin(self, step: int) -> Path:
        """An empty ``step_N.tmp/`` to write checkpoint ``step`` into (leftovers of crashed writes removed)."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        for stale in self.run_dir.glob(f"{PREFIX}*.tmp"):  # left by a crash mid-write
            shutil.rmtree(stale, ignore_errors=True)
        tmp = self._tmp_dir(step)
        tmp.mkdir()
        return tmp

    def _finish(self, tmp: Path, state: dict[str, Any], files: list[str]) -> Path:
        """Write state.json (last: it marks the checkpoint complete), fsync, rename ``tmp`` to its final name,
        point ``latest`` at it and prune."""
        final = tmp.with_name(tmp.name.removesuffix(".tmp"))
        state = {"format": FORMAT, **state, "files": {name: (tmp / name).stat().st_size for name in files}}
        write_json_atomic(tmp / STATE_FILE, state)
        for name in [*files, STATE_FILE]:
            fsync_file(tmp / name)
        fsync_dir(tmp)
        if final.exists():  # the same step saved twice, or an abandoned branch's checkpoint of this step
            self.dir.delete(final)
        os.replace(tmp, final)
        self.dir.point(LATEST, final)
        if state.get("stable"):
            self.dir.point(STABLE, final)
        fsync_dir(self.run_dir)
        self.prune()
        return final

    def prune(self) -> None:
        """Keep the newest ``keep`` checkpoints of the run's lineage, its best and its stable one
        (``RunDir.prune``)."""
        self.dir.prune(self.keep)

    def clear(self) -> None:
        """Delete every checkpoint and the links to them (``--overwrite``)."""
        self.dir.clear()

    # --- loading ---

    def resume(self, spec: str) -> Path | None:
        """Restore every part from checkpoint ``spec`` (collective); its path, or None when ``spec`` is
        ``auto`` and the run directory holds no checkpoint yet (nothing changes then).

        ``spec``: ``latest`` (the newest readable checkpoint, falling back past damaged ones with a warning),
        ``auto``, or a checkpoint directory. Rank 0 picks the checkpoint and every rank reads that one; each
        rank takes the saved batch-source position and RNG states of its own rank number (the last one when
        the checkpoint has fewer ranks, with a warning that the run is no longer bit-identical).

        Raises ``UserError`` when no candidate is readable, or the checkpoint's model config or
        ``--optimizer`` differs from this run's.
        """
        parts, env = self._parts(), self.env
        if spec == AUTO:
            # Rank 0 looks, so that every rank takes the same branch even on node-local disks.
            found = broadcast_object(env, LATEST if self.checkpoints() else None)
            if found is None:
                if env.is_main:
                    print(
                        f"--resume auto: no checkpoint in {self.run_dir} yet, starting fresh", file=sys.stderr
                    )
                return None
            spec = found
        spec_path = self.run_dir / LATEST if spec == LATEST else Path(spec)
        ckpt: LoadedCheckpoint | None = None  # rank 0 reads it while choosing; the others read its choice

        def choose() -> tuple[str, Lineage, bool]:
            nonlocal ckpt
            ckpt = self.load_first_good(spec, parts.model.config)
            # Resuming anything but the run's head starts a branch: the checkpoints after it are left behind.
            head = self.dir.head()
            line = lineage_of(ckpt.state)
            if head is not None and head.resolve() == ckpt.path.resolve():
                return str(ckpt.path), line, False
            return str(ckpt.path), fork(line, int(ckpt.state["step"]), self.dir.next_branch(line)), True

        chosen, self.lineage, branched = on_main_rank(env, choose)
        if ckpt is None:
            ckpt = self.read(Path(chosen))
        saved_config = ckpt.state.get("config") or {}
        saved = saved_config.get("optimizer", "adamw")
        wanted = parts.config.get("optimizer", "adamw")
        if saved != wanted:
            raise IncompatibleCheckpoint(
                f"--resume {ckpt.path}: the checkpoint was trained with --optimizer {saved}, this run has "
                f"--optimizer {wanted}; resume with --optimizer {saved}"
            )
        # Hyperparameters come from this run's config: the saved param groups would bring back the old ones.
        hyper = [{k: v for k, v in g.items() if k != "params"} for g in parts.optimizer.param_groups]
        apply_checkpoint(ckpt, parts.model, parts.optimizer)
        for group, values in zip(parts.optimizer.param_groups, hyper, strict=True):
            group.update(values)
        parts.progress.load_state_dict(ckpt.state)
        ranks = ckpt.rank_states
        if len(ranks) != env.world_size and env.is_main:
            print(
                f"warning: resuming {env.world_size} rank(s) from a checkpoint of {len(ranks)}: the data "
                "stream is re-split from the same position, and the result is no longer bit-identical",
                file=sys.stderr,
            )
        mine = ranks[min(env.rank, len(ranks) - 1)]
        parts.source.load_state_dict(mine["source"])
        restore_rng(mine["rng"])
        self.resumed = ResumeInfo(ckpt.path, ckpt.state, config_changes(saved_config, parts.config), branched)
        if env.is_main:
            print(self.resumed.describe(spec_path), file=sys.stderr)
        return ckpt.path

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


def _model_info(state: dict[str, Any]) -> dict[str, Any]:
    """What config.json's ``info`` records of the training run."""
    return {"step": int(state["step"]), "tokens_seen": state.get("tokens_seen"), "train": state.get("config")}


def apply_checkpoint(ckpt: LoadedCheckpoint, model: GPT, optimizer: torch.optim.Optimizer) -> None:
    """Copy a checkpoint's weights and optimizer state into ``model`` and ``optimizer``, of either layout into
    a sharded model or a whole one.

    A dcp-layout checkpoint is read by every rank together (a collective): each rank reads its parts of each
    tensor, whatever the world size that wrote them, or every tensor whole into a model that is not sharded.
    A full-layout one goes into a whole model through the optimizer's own ``load_state_dict`` (any optimizer
    a plugin registers), into a sharded one through ``set_state_dict`` (FSDP takes torch optimizers only).
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


def _load_sharded(path: Path, model: GPT, optimizer: torch.optim.Optimizer) -> None:
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    # The state dicts this model and optimizer would save, as the frame DCP reads into: a sharded model's
    # holds this rank's shards, a whole model's whole tensors.
    model_state, optimizer_state = get_state_dict(model, optimizer)
    del model_state["lm_head.weight"]  # stored once, as the token embedding
    with warnings.catch_warnings():
        # Without a process group (one process, not sharded) DCP warns that it reads alone: it is meant to.
        warnings.filterwarnings("ignore", message="torch.distributed is disabled")
        dcp.load({"model": model_state, "optimizer": optimizer_state}, checkpoint_id=path)
    model_state["lm_head.weight"] = model_state["transformer.wte.weight"]
    set_state_dict(model, optimizer, model_state_dict=model_state, optim_state_dict=optimizer_state)


def _load_full_into_sharded(
    model_state: dict[str, torch.Tensor],
    optimizer_state: dict[str, Any],
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
) -> None:
    """A full-layout checkpoint (every rank read all of it) into a sharded model: each rank keeps its part."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_state_dict

    # optimizer.pt numbers parameters in the order of the optimizer's groups; the sharded form names them.
    names = {id(p): name for name, p in model.named_parameters()}
    order = [names[id(p)] for group in optimizer.param_groups for p in group["params"]]
    by_name = {
        "state": {order[i]: s for i, s in optimizer_state["state"].items()},
        "param_groups": [
            {**g, "params": [order[i] for i in g["params"]]} for g in optimizer_state["param_groups"]
        ],
    }
    weights = {**model_state, "lm_head.weight": model_state["transformer.wte.weight"]}
    set_state_dict(
        model,
        optimizer,
        model_state_dict=weights,
        optim_state_dict=by_name,
        options=StateDictOptions(full_state_dict=True),
    )
