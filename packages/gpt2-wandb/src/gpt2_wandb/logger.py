"""``--logger wandb``: the run's scalars, config and text samples in Weights & Biases.

The same scalars as TensorBoard under the same tags (``train/loss``, ``train/lr``, ``train/grad_norm``,
``train/tokens_per_sec``, ``train/mfu``, ``val/loss``, ``eval/hellaswag_acc_norm``), W&B's step being the
optimizer step; the resolved ``TrainConfig`` as the run's config; each text tag (``samples``, ``warnings``)
as a table of (step, text) rows. ``--project`` and ``--run-name`` name the project and the run (the entity
is W&B's own ``WANDB_ENTITY``), ``WANDB_MODE=offline`` keeps everything on disk under ``RUN_DIR/wandb`` for a
later ``wandb sync``.

A resumed run continues the same W&B run, rewound to the step it resumes from: its id is kept in
``RUN_DIR/wandb-run-id`` and passed back with ``resume_from="ID?_step=STEP"`` (W&B's "rewind", in beta), which
drops what the run holds past that step (what a killed run logged after its checkpoint, or the run an extension
from ``RUN_DIR/stable`` leaves) and goes on from there, so each step shows once with the resumed run's values,
online or synced from offline directories alike. Where the server refuses a rewind, the logger says so in one
line and logs to a new run whose config names the old one and the step (``wandb_resumed_from``).

What W&B had not yet written when a run was SIGKILLed is lost to it (its service buffers records; offline, a
killed process may leave an empty transaction log): the steps the resumed run logs are all there, the killed
run's last ones may not be. ``metrics.jsonl`` (the jsonl logger) is the run's complete record.
"""

from __future__ import annotations

import secrets
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from gpt2_train.config import TrainConfig

ID_FILE = "wandb-run-id"


class WandbLogger:
    """A W&B run for one ``gpt2 train`` run (started by ``rewind``, or by the first call to log)."""

    def __init__(self, run_dir: Path, config: TrainConfig) -> None:
        self.run_dir = Path(run_dir)
        self.config = config
        self.run: Any = None
        self.failed = False
        self.tables: dict[str, Any] = {}

    def rewind(self, step: int) -> None:
        """Start the W&B run: a new one when ``step`` is -1 (a fresh start), else the run directory's,
        rewound to ``step`` (or, where the server refuses that, a new one naming it)."""
        id_file = self.run_dir / ID_FILE
        old = id_file.read_text().strip() if step >= 0 and id_file.is_file() else None
        if old is None:
            self._start(secrets.token_hex(4))  # W&B's ids: 8 lowercase letters and digits
            return
        refused = self._start(old, resume_from=f"{old}?_step={step}")
        if refused is not None:
            new = secrets.token_hex(4)
            print(
                f"wandb: run {old} cannot be rewound to step {step} ({refused}); logging to a new run {new}, "
                f"its config's wandb_resumed_from naming {old} at step {step}",
                file=sys.stderr,
            )
            self._start(new, extra={"wandb_resumed_from": f"{old}?_step={step}"})

    def _start(
        self, run_id: str, resume_from: str | None = None, extra: dict[str, Any] | None = None
    ) -> str | None:
        """``wandb.init`` of run ``run_id``; None when it started, else why not (and, when that was not a
        rewind, the one-line warning that the run goes on without W&B)."""
        import wandb

        cfg = self.config
        try:
            run = wandb.init(
                project=cfg.project,
                name=cfg.run_name or self.run_dir.resolve().name,
                config={**cfg.to_dict(), **(extra or {})},
                # W&B takes one of id and resume_from (which names the run), and resume only without it.
                **({"resume_from": resume_from} if resume_from else {"id": run_id, "resume": "allow"}),
                dir=str(self.run_dir),
                # The console logger prints to the terminal; W&B wrapping stdout/stderr too would fight it.
                settings=wandb.Settings(console="off", silent=True),
            )
        except Exception as e:  # bad credentials, no server: the run must go on with the other loggers
            reason = " ".join(str(e).split()) or type(e).__name__
            if resume_from is None:
                self.failed = True
                print(f"warning: --logger wandb: {reason}; continuing without it", file=sys.stderr)
            return reason
        self.run = run
        (self.run_dir / ID_FILE).write_text(run_id + "\n")
        return None

    def _ready(self) -> bool:
        if self.run is None and not self.failed:
            self.rewind(-1)
        return self.run is not None

    def log(self, metrics: Mapping[str, float], step: int) -> None:
        if self._ready():
            self.run.log({k: float(v) for k, v in metrics.items()}, step=step)

    def log_text(self, tag: str, text: str, step: int) -> None:
        if tag == "config" or not self._ready():  # the config is the run's config already
            return
        import wandb

        table = self.tables.get(tag)
        if table is None:
            # Incremental: each log sends the new rows only, and W&B shows them all as one table.
            table = self.tables[tag] = wandb.Table(columns=["step", "text"], log_mode="INCREMENTAL")
        table.add_data(step, text)
        self.run.log({tag: table}, step=step)

    def close(self) -> None:
        if self.run is not None:
            self.run.finish()
            self.run = None
