"""``--logger wandb``: the run's scalars, config and text samples in Weights & Biases.

The same scalars as TensorBoard under the same tags (``train/loss``, ``train/lr``, ``train/grad_norm``,
``train/tokens_per_sec``, ``train/mfu``, ``val/loss``, ``eval/hellaswag_acc_norm``), W&B's step being the
optimizer step; the resolved ``TrainConfig`` as the run's config; each text tag (``samples``, ``warnings``)
as a table of (step, text) rows. ``--project`` and ``--run-name`` name the project and the run (the entity
is W&B's own ``WANDB_ENTITY``), ``WANDB_MODE=offline`` keeps everything on disk under ``RUN_DIR/wandb`` for a
later ``wandb sync``.

A resumed run continues the same W&B run: its id is kept in ``RUN_DIR/wandb-run-id`` and passed back with
``resume="allow"``. W&B's history accepts only increasing steps, and its way to truncate one
(``resume_from``, "rewind") is in preview; so the logger keeps the last step it sent in
``RUN_DIR/wandb-last-step``, and a resumed run sends nothing until it is past that step: the steps a killed
run logged after its checkpoint keep that run's values (equal but for timings: a resume is exact), and each
step is shown once, online or synced from offline directories alike.

A run that branches (``--resume RUN_DIR/stable --max-steps LONGER``, or a resume with changed settings:
the trainer's ``rewind(step, branched=True)``) while the W&B run holds steps past ``step`` cannot keep them:
they are the run it leaves. It goes on in a new W&B run forked from the old one at ``step`` (W&B's
``fork_from``: the new run shows the old one's history up to there, then its own), says so in one line, and
keeps the new id in ``RUN_DIR/wandb-run-id``.
"""

from __future__ import annotations

import os
import secrets
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from gpt2_train.config import TrainConfig

ID_FILE = "wandb-run-id"
LAST_STEP_FILE = "wandb-last-step"


class WandbLogger:
    """A W&B run for one ``gpt2 train`` run (started by ``rewind``, or by the first call to log)."""

    def __init__(self, run_dir: Path, config: TrainConfig) -> None:
        self.run_dir = Path(run_dir)
        self.config = config
        self.run: Any = None
        self.failed = False
        self.first_step = 0
        """Steps below this one are already in the W&B run (a resumed one) and are not sent again."""
        self.tables: dict[str, Any] = {}

    def rewind(self, step: int, branched: bool = False) -> None:
        """Start the W&B run: a new one when ``step`` is -1 (a fresh start); else the one of the run
        directory, resumed past the last step it holds, or, when ``branched`` and it holds steps past
        ``step``, a new one forked from it at ``step``."""
        id_file, last_file = self.run_dir / ID_FILE, self.run_dir / LAST_STEP_FILE
        resume_id = id_file.read_text().strip() if step >= 0 and id_file.is_file() else None
        last = int(last_file.read_text()) if resume_id and last_file.is_file() else -1
        if resume_id and branched and last > step:
            self._start(None, fork_from=(resume_id, step))
            if self.run is not None:
                print(
                    f"wandb: this run leaves the one W&B run {resume_id} logged past step {step}: logging to "
                    f"{self.run.id}, forked from it at step {step}",
                    file=sys.stderr,
                )
                self._sent(step)  # the new run holds the old one's steps up to here, none past it
            self.first_step = step + 1
            return
        self._start(resume_id)
        if resume_id:
            self.first_step = max(self.first_step, last + 1)

    def _start(self, resume_id: str | None, fork_from: tuple[str, int] | None = None) -> None:
        import wandb

        run_id = resume_id or secrets.token_hex(4)  # W&B's ids: 8 lowercase letters and digits
        (self.run_dir / ID_FILE).write_text(run_id + "\n")
        cfg = self.config
        # W&B takes one of resume and fork_from: a fork is a new run that starts with the old one's history.
        how = {"fork_from": f"{fork_from[0]}?_step={fork_from[1]}"} if fork_from else {"resume": "allow"}
        try:
            self.run = wandb.init(
                project=cfg.project,
                name=cfg.run_name or self.run_dir.resolve().name,
                config=cfg.to_dict(),
                id=run_id,
                dir=str(self.run_dir),
                # The console logger prints to the terminal; W&B wrapping stdout/stderr too would fight it.
                settings=wandb.Settings(console="off", silent=True),
                **how,
            )
        except Exception as e:  # bad credentials, no server: the run must go on with the other loggers
            self.failed = True
            reason = " ".join(str(e).split()) or type(e).__name__
            print(f"warning: --logger wandb: {reason}; continuing without it", file=sys.stderr)
            return
        self.first_step = self.run.step if resume_id else 0  # online: the server's next step

    def _ready(self, step: int) -> bool:
        if self.run is None and not self.failed:
            self._start(None)
        return self.run is not None and step >= self.first_step

    def _sent(self, step: int) -> None:
        tmp = self.run_dir / (LAST_STEP_FILE + ".tmp")
        tmp.write_text(str(step))
        os.replace(tmp, self.run_dir / LAST_STEP_FILE)  # a kill leaves the old step or the new one

    def log(self, metrics: Mapping[str, float], step: int) -> None:
        if self._ready(step):
            self.run.log({k: float(v) for k, v in metrics.items()}, step=step)
            self._sent(step)

    def log_text(self, tag: str, text: str, step: int) -> None:
        if tag == "config" or not self._ready(step):  # the config is the run's config already
            return
        import wandb

        table = self.tables.get(tag)
        if table is None:
            # Incremental: each log sends the new rows only, and W&B shows them all as one table.
            table = self.tables[tag] = wandb.Table(columns=["step", "text"], log_mode="INCREMENTAL")
        table.add_data(step, text)
        self.run.log({tag: table}, step=step)
        self._sent(step)

    def close(self) -> None:
        if self.run is not None:
            self.run.finish()
            self.run = None
