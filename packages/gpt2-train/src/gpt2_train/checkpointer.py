"""The checkpointer of a run: when to save, what to save, and which checkpoint a run resumes.

It owns what is saved, as torchtitan's ``CheckpointManager`` does: it is given the run's stateful parts
(:class:`CheckpointParts`: model, optimizer, training batch source, the loop's counters, the run's config; the
learning-rate schedule is a function of the step, and RNG states are captured here), and ``save`` and
``resume`` write them all and read them all back, in the layouts of ``gpt2_train.checkpoint``, in the run
directory of ``gpt2_train.run_dir`` (its links, branches and pruning). A resume continues the run it
resumes: the checkpoint's optimizer, this run's hyperparameters, and one line naming what changed.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gpt2_core.config import GPTConfig
from gpt2_core.errors import UserError
from gpt2_core.model import GPT
from gpt2_data.batch_source import BatchSource

from gpt2_train.checkpoint import (
    FULL,
    SHARDED,
    CorruptCheckpoint,
    IncompatibleCheckpoint,
    LoadedCheckpoint,
    apply_checkpoint,
    begin,
    capture_rng,
    check_model_config,
    publish,
    read_checkpoint,
    restore_rng,
    tmp_dir,
    write_full,
    write_sharded,
)
from gpt2_train.config import NOT_CARRIED
from gpt2_train.distributed import DistEnv, barrier, broadcast_object, gather_objects, on_main_rank
from gpt2_train.parallel import is_sharded
from gpt2_train.run_dir import AUTO, LATEST, ROOT, STABLE, Lineage, RunDir, fork, lineage_of

if TYPE_CHECKING:
    from torch.distributed.checkpoint.stateful import Stateful


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
        step, env = int(state["step"]), self.env
        files, layout = None, FULL
        if is_sharded(parts.model):
            if env.is_main:
                begin(self.run_dir, step)
            barrier(env)  # the directory exists, emptied of any earlier attempt, before a rank writes into it
            layout = SHARDED
            files = write_sharded(
                tmp_dir(self.run_dir, step), parts.model, parts.optimizer, state, ranks, env.is_main
            )
        elif env.is_main:
            files = write_full(begin(self.run_dir, step), parts.model, parts.optimizer, state, ranks)
        path = None
        if files is not None:  # rank 0
            path = publish(self.dir, tmp_dir(self.run_dir, step), {**state, "layout": layout}, files)
            self.prune()
        barrier(env)  # nobody races ahead (or exits) while rank 0 writes
        self.last_save = time.monotonic()
        return path

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
            ckpt = read_checkpoint(Path(chosen))
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

    def load_first_good(self, spec: str, model_config: GPTConfig) -> LoadedCheckpoint:
        """The newest readable checkpoint among ``candidates(spec)``, warning about each one skipped.

        A checkpoint whose model config differs from ``model_config`` is refused outright (the older
        ones would not fit either), naming the fields that differ.
        """
        errors = []
        for path in self.candidates(spec):
            try:
                ckpt = read_checkpoint(path)
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
