"""A run directory's checkpoints as a history with branches: which ones the run follows, its links
(``latest``, ``best``, ``stable``) and pruning. Torch-free: it reads each checkpoint's ``state.json`` only.

A run branches when it resumes from a checkpoint that is not its newest (``--resume RUN_DIR/stable
--max-steps LONGER``, or a fallback past a damaged newest checkpoint): the checkpoints after that point
belong to the run it leaves. Each checkpoint records its lineage in ``state.json`` as ``"branch"``: the
segments of branches it descends from, ``[[id, last_step], ..., [own_id, null]]``, where ``last_step`` is
the step at which the next branch left that one. Branch ids grow with each new branch, so the newest branch
is the one with the largest id, and the run's head, what ``latest`` and ``--resume auto`` follow, is the
newest checkpoint of that branch. A checkpoint is in the head's lineage when it lies on one of those
segments at or before the step where the lineage leaves it; pruning keeps the newest ``keep`` of them
(plus ``best`` and ``stable``) and leaves every other checkpoint (an abandoned branch's) where it is.
A checkpoint written before branches were recorded is on branch 0.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

PREFIX = "step_"
STATE_FILE = "state.json"
LATEST = "latest"
"""Link to the run's head: the newest checkpoint of its newest branch."""
BEST = "best"
"""Link to the checkpoint with the lowest val loss in the head's lineage (kept by ``prune``)."""
STABLE = "stable"
"""Link to the checkpoint that ends a WSD run's stable phase (kept by ``prune``): ``--resume RUN_DIR/stable
--max-steps LONGER`` trains longer."""
AUTO = "auto"
"""``--resume auto``: ``latest`` when the run directory holds a checkpoint, else a fresh start."""

Lineage = list[list[Any]]
"""``[[branch_id, last_step | None], ...]``, oldest branch first; the last segment is the checkpoint's own."""
ROOT: Lineage = [[0, None]]


def read_state(path: Path) -> dict[str, Any] | None:
    """A checkpoint's ``state.json``, or None when it cannot be read."""
    try:
        state = json.loads((path / STATE_FILE).read_text())
    except (OSError, ValueError):
        return None
    return state if isinstance(state, dict) else None


def lineage_of(state: dict[str, Any]) -> Lineage:
    """The lineage a checkpoint's state records (branch 0 for one written before branches were recorded)."""
    return state.get("branch") or ROOT


def branch_of(state: dict[str, Any]) -> int:
    return int(lineage_of(state)[-1][0])


def descends(lineage: Lineage, step: int, branch: int, at: int) -> bool:
    """Whether the checkpoint of ``branch`` at step ``at`` is in ``lineage`` (a checkpoint at ``step``'s)."""
    for seg_branch, last in lineage:
        if seg_branch == branch:
            return at <= (step if last is None else last)
    return False


def fork(lineage: Lineage, step: int, new_branch: int) -> Lineage:
    """The lineage of a new branch that leaves ``lineage`` at ``step``."""
    return [*lineage[:-1], [lineage[-1][0], step], [new_branch, None]]


class RunDir:
    """The checkpoints of one run directory (``step_XXXXXXXX/``), read from disk on every call."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    def checkpoints(self) -> list[Path]:
        """Finished checkpoint directories, oldest first (by step), every branch's."""
        if not self.path.is_dir():
            return []
        found = [
            p
            for p in self.path.iterdir()
            if p.is_dir() and p.name.startswith(PREFIX) and p.name[len(PREFIX) :].isdigit()
        ]
        return sorted(found, key=step_of)

    def states(self) -> dict[Path, dict[str, Any] | None]:
        """Each checkpoint's state (None where unreadable), oldest first."""
        return {p: read_state(p) for p in self.checkpoints()}

    def head(self, states: dict[Path, dict[str, Any] | None] | None = None) -> Path | None:
        """The newest checkpoint of the newest branch (None without a readable checkpoint)."""
        states = self.states() if states is None else states
        readable = [(branch_of(s), int(s.get("step", step_of(p))), p) for p, s in states.items() if s]
        return max(readable, key=lambda t: t[:2])[2] if readable else None

    def next_branch(self, *lineages: Lineage) -> int:
        """A branch id larger than any in this directory or in ``lineages``."""
        ids = [seg[0] for s in self.states().values() if s for seg in lineage_of(s)]
        ids += [seg[0] for lineage in lineages for seg in lineage]
        return max(ids, default=-1) + 1

    def followed(self) -> list[Path]:
        """The head's lineage, newest first, with every checkpoint whose state cannot be read (by step):
        what ``--resume latest`` tries, in order."""
        states = self.states()
        head = self.head(states)
        if head is None:
            return list(states)[::-1]
        line = lineage_of(states[head])  # type: ignore[arg-type]
        step = step_of(head)
        return [
            p
            for p, s in reversed(states.items())
            if s is None or descends(line, step, branch_of(s), int(s.get("step", step_of(p))))
        ]

    # --- links and deletion ---

    def point(self, name: str, target: Path) -> None:
        """Point the link ``RUN_DIR/name`` at checkpoint ``target`` atomically."""
        link = self.path / name
        tmp = self.path / f"{name}.tmp"
        if tmp.is_symlink() or tmp.exists():
            tmp.unlink()
        os.symlink(target.name, tmp, target_is_directory=True)
        os.replace(tmp, link)

    def delete(self, path: Path) -> None:
        # Rename first: a crash mid-delete must not leave a half-deleted directory that looks finished.
        doomed = path.with_name(path.name + ".deleting")
        os.replace(path, doomed)
        shutil.rmtree(doomed, ignore_errors=True)

    def prune(self, keep: int) -> None:
        """Keep the newest ``keep`` checkpoints of the head's lineage, its lowest val loss (linked as ``best``)
        and the end of a WSD run's stable phase (``stable``); an abandoned branch's checkpoints stay."""
        line = self.followed()
        keep_set = set(sorted(line, key=step_of)[-keep:])
        stable = self.path / STABLE
        if stable.is_symlink():
            keep_set.add(self.path / os.readlink(stable))
        best, best_loss = None, float("inf")
        for p in line:
            val = (read_state(p) or {}).get("val_loss")
            if val is not None and val < best_loss:
                best, best_loss = p, val
        if best is not None:
            keep_set.add(best)
            self.point(BEST, best)
        for p in line:
            if p not in keep_set:
                self.delete(p)

    def clear(self) -> None:
        """Delete every checkpoint and the links to them (``--overwrite``)."""
        for p in self.checkpoints():
            self.delete(p)
        for name in (LATEST, BEST, STABLE):
            link = self.path / name
            if link.is_symlink() or link.exists():
                link.unlink()

    def resolve(self, spec: str) -> Path | None:
        """The checkpoint ``--resume spec`` starts from, without reading its weights: the head's lineage's
        newest with a readable state for ``latest``/``auto`` (None when there is none), else ``spec`` itself
        (None when it is not a directory with a readable state)."""
        if spec in (LATEST, AUTO):
            return next((p for p in self.followed() if read_state(p)), None)
        path = Path(spec)
        return path if read_state(path) else None


def step_of(path: Path) -> int:
    """The step in a checkpoint directory's name."""
    return int(path.name[len(PREFIX) :])
