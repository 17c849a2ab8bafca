"""The training loop, wiring small components: model, batch sources, optimizer and schedule, the step
function, the checkpointer, loggers and evaluators.

The caller builds the model and the batch sources and hands them over: ``gpt2_train.run.run_training`` does,
for ``gpt2 train`` (token shards) and ``gpt2 sft`` (instruction examples), each with its own data pipeline; ``Trainer(cfg, model=..., train_source=..., val_source=...)`` builds the rest from ``cfg`` in one
pass (see :class:`Trainer`).
"""

from __future__ import annotations

import json
import math
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from gpt2_core.cpu_matmul import route_of
from gpt2_core.dataclass_utils import from_dict
from gpt2_core.device import pick_device
from gpt2_core.errors import RunStopped, UserError
from gpt2_core.model import GPT
from gpt2_data.batch_source import BatchSource

from gpt2_train import accel
from gpt2_train.allocator import restore_malloc_defaults, retain_freed_memory
from gpt2_train.batch_schedule import BatchShape, shape_at, warms_up
from gpt2_train.checkpointer import Checkpointer, CheckpointParts, ResumeInfo
from gpt2_train.config import TrainConfig, known_fields
from gpt2_train.distributed import DistEnv, any_rank, barrier
from gpt2_train.evals import HellaSwagEvaluator, Sampler, Validator, every
from gpt2_train.loggers import NullLogger, build_loggers
from gpt2_train.mfu import flops_per_token, peak_flops
from gpt2_train.optim import lr_at, schedule_summary, schedule_warning, wsd_decay_start
from gpt2_train.optimizers import optimizer_plugin
from gpt2_train.parallel import parallelize
from gpt2_train.precision import autocast_dtype
from gpt2_train.run_dir import BEST, STABLE, RunDir
from gpt2_train.step import StepResult, TrainStep


class NonFiniteLoss(RunStopped):
    """Too many NaN/inf steps in a row: the run stopped, its last checkpoint untouched (exit status 3)."""


@dataclass
class TrainResult:
    step: int
    """Optimizer steps done (including those of resumed-from checkpoints)."""
    tokens_seen: int
    last_loss: float | None
    best_val_loss: float | None
    checkpoint: Path | None
    """The checkpoint written last (None when none was written)."""
    stopped_by: int | None = None
    """The signal number that stopped the run early, if any."""
    stopped_early: bool = False
    """True when ``--early-stop-patience`` ended the run."""


# --- building the parts -----------------------------------------------------------------------------


def setup_device(device: torch.device) -> bool:
    """Process-wide settings for training on ``device``: TF32 matmuls on CUDA; on CPU, keep freed memory
    (True when that was set, for ``restore_malloc_defaults`` to undo)."""
    if device.type == "cuda":
        torch.set_float32_matmul_precision("high")
    return device.type == "cpu" and retain_freed_memory()


def preflight(cfg: TrainConfig, block_size: int, world_size: int) -> int:
    """The checks that need neither data nor weights, run before any work starts; returns the gradient
    accumulation (micro-batches per rank per step).

    Raises ``UserError`` when the batch does not split into micro-batches, ``--seq-len`` exceeds the
    context window ``block_size``, the optimizer cannot run as configured (an option, a ``--parallel``
    mode: ``gpt2_train.optimizers.optimizer_plugin``), or ``--run-dir`` holds checkpoints this run would
    neither resume nor overwrite.
    """
    if cfg.seq_len > block_size:
        raise UserError(f"--seq-len {cfg.seq_len} exceeds the model's context window ({block_size})")
    per_micro = cfg.micro_batch * cfg.seq_len * world_size
    if cfg.total_batch_tokens % per_micro:
        raise UserError(
            f"--total-batch-tokens {cfg.total_batch_tokens} is not a multiple of --micro-batch x --seq-len x "
            f"ranks = {cfg.micro_batch} x {cfg.seq_len} x {world_size} = {per_micro}"
        )
    optimizer_plugin(cfg)
    if not cfg.resume and not cfg.overwrite and RunDir(cfg.run_dir).checkpoints():
        raise UserError(
            f"--run-dir {cfg.run_dir} already holds checkpoints: pass --resume auto to continue, "
            "--overwrite to start afresh, or another --run-dir"
        )
    return cfg.total_batch_tokens // per_micro


class _Signals:
    """Turns SIGINT/SIGTERM into a flag the loop checks between steps; a second Ctrl-C interrupts hard.

    A second SIGTERM does not: wrappers send it twice (``timeout N uv run gpt2 ...``: timeout signals its
    process group, uv forwards its own), which dropped the checkpoint the first one promised. What must stop
    at once can send SIGKILL."""

    def __init__(self) -> None:
        self.received: int | None = None
        self._old: dict[int, Any] = {}

    def __enter__(self) -> _Signals:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.received is not None:
            if signum == signal.SIGINT:
                print("\nSIGINT again: stopping now, without the checkpoint", file=sys.stderr)
                raise KeyboardInterrupt
            return
        self.received = signum
        again = " (Ctrl-C again: stop now, without it)" if signum == signal.SIGINT else ""
        name = signal.Signals(signum).name
        print(f"\n{name}: stopping after this step with a checkpoint{again}", file=sys.stderr)

    def __exit__(self, *exc: object) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)


# --- the trainer ------------------------------------------------------------------------------------


class Trainer:
    """The training loop over small components, built in one pass from ``cfg`` and the given parts.

    ``Trainer(cfg, model=, train_source=, val_source=)`` checks the run (``preflight``, unless the caller ran
    it and passes its ``grad_accum``, as ``gpt2_train.run.run_training`` does), puts the model on its device, wraps it once (``gpt2_train.parallel.parallelize``: speed-ups, then DDP or FSDP), builds the
    optimizer over the wrapped model's parameters (FSDP's shards), the step function, the checkpointer
    (which owns every stateful part), the evaluators and the loggers. ``start()`` resumes ``cfg.resume`` into
    those parts (or clears the run with ``--overwrite``); ``fit()`` starts if needed and trains, asking each
    component whether it is due; ``close()`` ends what the trainer started (``fit`` calls it on the way out).

    ``model``: built with ``torch.manual_seed(cfg.seed)`` on every rank (the same initial weights).
    ``val_source``: None turns val loss off. ``env``: the process group the caller set up and will leave
    (``setup_distributed``); None: a single process on ``cfg.device`` (``UserError`` under torchrun or
    ``--parallel fsdp``, which need the group).
    """

    def __init__(
        self,
        cfg: TrainConfig,
        *,
        model: GPT,
        train_source: BatchSource,
        val_source: BatchSource | None = None,
        env: DistEnv | None = None,
        grad_accum: int | None = None,
        logger: Any = None,
        logger_registry: dict[str, Any] | None = None,
    ) -> None:
        self.cfg = cfg
        self.sharded = cfg.parallel == "fsdp"
        if grad_accum is None:  # built directly, not by run_training: the checks are its own
            grad_accum = preflight(cfg, model.config.block_size, env.world_size if env else 1)
        self.grad_accum = grad_accum
        """Micro-batches per rank per optimizer step."""
        if env is None and (self.sharded or int(os.environ.get("WORLD_SIZE", "1")) > 1):
            raise UserError(
                "Trainer: under torchrun or with --parallel fsdp, give it the env of "
                "setup_distributed(group_of_one=...) (gpt2_train.run.run_training does)"
            )
        self.env = env if env is not None else DistEnv(device=pick_device(cfg.device))
        self._build(model, train_source, val_source, logger, logger_registry)

    def _build(
        self,
        model: GPT,
        train_source: BatchSource,
        val_source: BatchSource | None,
        logger: Any,
        logger_registry: dict[str, Any] | None,
    ) -> None:
        """Every part, in one pass, in the order the class docstring gives."""
        cfg = self.cfg
        dev = self.env.device
        accel.check(cfg, dev)
        if self.sharded and not torch.distributed.is_initialized():
            raise UserError("--parallel fsdp: give Trainer an env from setup_distributed(group_of_one=True)")
        self.model = model
        if not self.sharded:  # FSDP moves each rank's shards there as it shards the model
            model.to(dev)
        self._retains_memory = setup_device(dev)
        self.autocast_dtype = autocast_dtype(cfg.precision, dev)
        self.train_source = train_source
        self.shape = BatchShape(cfg.micro_batch, cfg.seq_len)
        """The micro-batch shape the train source yields now (the warm-ups change it: gpt2_train.batch_schedule)."""
        if warms_up(cfg):
            train_source.set_shape(cfg.micro_batch, cfg.seq_len)  # UserError from a source that cannot
        self.total_steps = cfg.max_steps or self._steps_for_epochs()

        head = None
        if cfg.train_vocab == "data":
            from gpt2_train.vocab import DataVocabHead, source_token_ids

            head = DataVocabHead(model, source_token_ids(train_source))
        self.loss_model: torch.nn.Module = head if head is not None else model
        """What computes the loss: the model, or the data-vocabulary head around it. Val loss goes through the
        same head: the same value as the full model's, for a fraction of the work."""
        self._head_rows = len(head.rows) if head is not None else None
        self.flops_per_token = flops_per_token(model, cfg.seq_len, head_rows=self._head_rows)
        """Training FLOPs per token for MFU, of the head the run trains through, at the current length."""
        self.wrapped = parallelize(model, cfg, self.env, loss_head=head, autocast=self.autocast_dtype)
        """What the step function calls: the loss model with its speed-ups, in DDP or sharded by FSDP."""
        self.optimizer_plugin = optimizer_plugin(cfg)
        """The run's optimizer plugin: it builds the optimizer and sets its hyperparameters before each step."""
        # The optimizer runs where the parameters are: in CPU memory when FSDP offloads them there.
        self.optimizer = self.optimizer_plugin.build(
            model, cfg, torch.device("cpu") if cfg.fsdp_cpu_offload else dev
        )
        if head is not None:
            self.optimizer.register_step_post_hook(lambda *_: head.tie_others())
        self._head = head
        self.train_step = TrainStep(
            self.wrapped,
            self.optimizer,
            grad_accum=self.grad_accum,
            grad_clip=cfg.grad_clip,
            device=dev,
            autocast_dtype=self.autocast_dtype,
            count_group=self.env.control_group,
        )

        self.step = 0
        self.tokens_seen = 0
        self.best_val_loss: float | None = None
        self.early_stop_best: float | None = None
        """The val loss early stopping compares with: the last one that beat the one before it by
        ``early_stop_min_delta`` (Keras's and Lightning's rule; ``best_val_loss`` also follows smaller gains)."""
        self.evals_since_best = 0
        """Val losses in a row without a new best by ``early_stop_min_delta`` (for ``--early-stop-patience``)."""
        self.stopped_early = False
        self.tokens_per_step = cfg.total_batch_tokens
        self.checkpointer = Checkpointer(
            cfg.run_dir,
            keep=cfg.keep,
            every_steps=cfg.checkpoint_every_steps,
            every_seconds=cfg.checkpoint_every_seconds,
            parts=CheckpointParts(
                model=model,
                optimizer=self.optimizer,
                source=train_source,
                progress=self,  # step, tokens seen, best val loss: state_dict() below
                config=cfg.to_dict(),
            ),
            env=self.env,
        )
        if cfg.early_stop_patience and val_source is None:
            raise UserError("--early-stop-patience watches the val loss, and this run has no val data")
        self.validator = Validator(
            val_source, cfg.eval_batches, cfg.eval_every, self.env, self.autocast_dtype
        )
        self.hellaswag = HellaSwagEvaluator(
            cfg.hellaswag_file, cfg.hellaswag_limit, cfg.hellaswag_every, self.env, self.autocast_dtype
        )
        self.sampler = Sampler(
            cfg.sample_prompt, cfg.sample_tokens, cfg.sample_every, self.env, sharded=self.sharded
        )
        self.peak, self.device_desc = peak_flops(dev, self.autocast_dtype)
        resolved = replace(cfg, max_steps=self.total_steps)
        if logger is not None:
            self.logger = logger
        elif self.env.is_main:
            self.logger = build_loggers(cfg.loggers, Path(cfg.run_dir), resolved, logger_registry)
        else:
            self.logger = NullLogger()
        self._started = False
        self._closed = False

    # --- set-up ---

    def _steps_for_epochs(self) -> int:
        n = self.train_source.batches_per_epoch()
        if n is None:
            raise UserError("--epochs needs a batch source that knows its length; give --max-steps instead")
        steps = math.floor(self.cfg.epochs * n / self.grad_accum)
        if steps < 1:
            raise UserError(
                f"--epochs {self.cfg.epochs}: one epoch is only {n} micro-batches, less than one step of "
                f"{self.grad_accum}; lower --total-batch-tokens or give --max-steps"
            )
        return steps

    def state_dict(self) -> dict[str, Any]:
        """The loop's counters, as every checkpoint's state.json records them."""
        return {
            "step": self.step,
            "tokens_seen": self.tokens_seen,
            "best_val_loss": self.best_val_loss,
            "early_stop_best": self.early_stop_best,
            "evals_since_best": self.evals_since_best,
            "stopped_early": self.stopped_early,
            "total_steps": self.total_steps,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Take the counters back from a checkpoint's state.json."""
        self.step = int(state["step"])
        self.tokens_seen = int(state["tokens_seen"])
        self.best_val_loss = state.get("best_val_loss")
        self.early_stop_best = state.get("early_stop_best", self.best_val_loss)
        self.evals_since_best = int(state.get("evals_since_best", 0))
        self.stopped_early = bool(state.get("stopped_early", False))

    def start(self) -> TrainStep:
        """Resume (``--resume``) or clear (``--overwrite``) the run, once; returns the step function."""
        if self._started:
            return self.train_step
        self._started = True
        cfg = self.cfg
        resumed = bool(cfg.resume) and self.checkpointer.resume(cfg.resume) is not None
        if resumed and self._head is not None:
            self._head.tie_others()  # a checkpoint of a full-vocabulary run has its other rows apart
        if not resumed and cfg.overwrite and self.checkpointer.checkpoints():
            if self.env.is_main:
                self.checkpointer.clear()
            barrier(self.env)
        info = self.checkpointer.resumed
        if info is not None and self.env.is_main:
            self._warn_lr_jump(info)
        # Each step logged once: forget what was logged past the checkpoint (all of it when fresh).
        if hasattr(self.logger, "rewind"):  # a logger given by the caller may not have it
            self.logger.rewind(self.step if resumed else -1)
        return self.train_step

    def _warn_lr_jump(self, info: ResumeInfo) -> None:
        """Say so when the learning rate jumps at the resumed step (a finished run resumed with a larger
        ``--max-steps``, a changed ``--lr``): peers allow it, but it is rarely what a user meant."""
        try:
            config = known_fields(type(self.cfg), info.state.get("config") or {})
            saved = from_dict(type(self.cfg), config, "checkpoint")
        except UserError:
            return
        saved_total = int(info.state.get("total_steps") or saved.max_steps or self.total_steps)
        step = info.step
        if step == 0 or step >= self.total_steps:
            return
        before, after = lr_at(step - 1, saved, saved_total), lr_at(step, self.cfg, self.total_steps)
        if abs(after - before) <= 0.25 * max(before, after):
            return
        hint = ""
        if self.cfg.lr_schedule == "wsd" and saved_total > step - 1 >= wsd_decay_start(saved, saved_total):
            hint = f"; to train longer as if planned, resume {Path(self.cfg.run_dir) / STABLE} instead"
        elif step == saved_total and self.cfg.lr_schedule == "cosine":
            hint = "; a cosine run cannot be extended as if planned (a --lr-schedule wsd run can, from RUN/stable)"
        self._warn(
            f"the learning rate jumps from {before:.3g} at step {step} to {after:.3g} at step {step + 1}{hint}"
        )

    def close(self) -> None:
        """End what the trainer started: its loggers and the CPU allocator setting. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self.logger.close()
        if self._retains_memory:
            restore_malloc_defaults()

    # --- the loop ---

    def fit(self) -> TrainResult:
        """Train to ``total_steps`` (or until SIGINT/SIGTERM), then close the trainer."""
        try:
            return self._fit()
        finally:
            self.close()

    def _fit(self) -> TrainResult:
        cfg, env = self.cfg, self.env
        train_step = self.start()
        self._flops = 0.0
        """Training FLOPs since this process started (MFU over a logging interval, whatever its lengths)."""
        self._log_clock = (time.perf_counter(), self.tokens_seen, self._flops)
        last_loss: float | None = None
        written: Path | None = None
        streak = torch.zeros((), dtype=torch.int64, device=env.device)
        worst = torch.zeros((), dtype=torch.int64, device=env.device)
        if env.is_main and self.step == 0:
            self.logger.log_text("config", json.dumps(cfg.to_dict(), indent=2), 0)
        early = self._still_stopped()
        if not early:
            self._print_start()
        with _Signals() as signals:
            while self.step < self.total_steps and not early:
                self.optimizer_plugin.before_step(self.optimizer, self.step)
                tokens = self._set_shape(shape_at(self.step, cfg))
                result = train_step(self.train_source, lr_at(self.step, cfg, self.total_steps))
                self.step += 1
                self.tokens_seen += tokens
                self._flops += tokens * self.flops_per_token
                last = self.step == self.total_steps
                if result.targets == 0:
                    self._warn(f"step {self.step}: no counted target in any micro-batch, step skipped")
                streak = torch.where(result.finite, 0, streak + 1)
                worst = torch.maximum(worst, streak)
                # On CUDA the step never syncs: read results back only on logged steps.
                if not train_step.device_skip or every(cfg.log_every, self.step, last):
                    self._check_finite(result, int(worst))
                if every(cfg.log_every, self.step, last) and result.targets:
                    last_loss = self._log_step(result)

                val = self._evaluate(last)
                improved = val is not None and (self.best_val_loss is None or val < self.best_val_loss)
                if val is not None:
                    ref = self.early_stop_best
                    better = ref is None or val < ref - cfg.early_stop_min_delta
                    self.evals_since_best = 0 if better else self.evals_since_best + 1
                    if better:
                        self.early_stop_best = val
                if improved:
                    self.best_val_loss = val
                # Every rank must agree, or they would stop (or gather states) at different steps.
                stop = any_rank(env, signals.received is not None)
                early = any_rank(env, 0 < cfg.early_stop_patience <= self.evals_since_best) and not last
                self.stopped_early = early
                due = any_rank(env, self.checkpointer.due(self.step))
                stable = self._stable_end()
                if due or improved or last or stop or early or stable:
                    written = self.checkpointer.save(val_loss=val, stable=stable)
                if val is not None or due or improved:
                    self._log_clock = (time.perf_counter(), self.tokens_seen, self._flops)  # training only
                if early:
                    self._say_early_stop()
                if stop:
                    break
        return TrainResult(
            step=self.step,
            tokens_seen=self.tokens_seen,
            last_loss=last_loss,
            best_val_loss=self.best_val_loss,
            checkpoint=written,
            stopped_by=signals.received,
            stopped_early=early,
        )

    def _set_shape(self, shape: BatchShape) -> int:
        """Have the train source yield ``shape`` from now on; the tokens of a step of that shape (all ranks)."""
        if shape != self.shape:
            self.train_source.set_shape(shape.micro_batch, shape.seq_len)
            if shape.seq_len != self.shape.seq_len:
                self.flops_per_token = flops_per_token(self.model, shape.seq_len, head_rows=self._head_rows)
            self.shape = shape
        return shape.micro_batch * shape.seq_len * self.grad_accum * self.env.world_size

    def _stable_end(self) -> bool:
        """Whether this step ends a WSD run's stable phase (its checkpoint is the one to train longer from)."""
        if self.cfg.lr_schedule != "wsd":
            return False
        start = wsd_decay_start(self.cfg, self.total_steps)
        return self.step == start and 0 < start < self.total_steps

    def _still_stopped(self) -> bool:
        """Whether the resumed run had stopped early and still would (the same or a smaller patience): it
        stays stopped, saying so, rather than train one more step and stop again."""
        cfg = self.cfg
        if not (self.stopped_early and 0 < cfg.early_stop_patience <= self.evals_since_best):
            return False
        if self.env.is_main:
            print(
                f"the run stopped early at step {self.step} ({self.evals_since_best} val losses without one "
                f"below {self.early_stop_best:.4f} - {cfg.early_stop_min_delta:g}); nothing to do. To train "
                f"on, resume with a larger --early-stop-patience (or 0); best checkpoint: "
                f"{Path(cfg.run_dir) / BEST}",
                file=sys.stderr,
            )
        return True

    def _say_early_stop(self) -> None:
        if self.env.is_main:
            print(
                f"early stop at step {self.step}: {self.evals_since_best} val losses without one below "
                f"{self.early_stop_best:.4f} - {self.cfg.early_stop_min_delta:g}; best checkpoint: "
                f"{Path(self.cfg.run_dir) / BEST}",
                file=sys.stderr,
            )

    def _evaluate(self, last: bool) -> float | None:
        """Run every evaluator that is due now and log what it measures; the val loss, if measured."""
        val = None
        if self.validator.should_validate(self.step, last):
            metrics = self.validator.validate(self.loss_model)
            val = metrics["val/loss"]
            self.logger.log(metrics, self.step)
        if self.hellaswag.should_evaluate(self.step, last):
            self.logger.log(self.hellaswag.evaluate(self.model), self.step)
        if self.sampler.should_sample(self.step, last):
            text = self.sampler.sample(self.model)
            if text is not None:
                self.logger.log_text("samples", text, self.step)
        return val

    def _check_finite(self, result: StepResult, worst: int) -> None:
        if not bool(result.finite):
            self.logger.log({"train/nonfinite": 1.0}, self.step)
            self._warn(
                f"step {self.step}: non-finite loss/gradient (loss {float(result.loss)}), update skipped"
            )
        if worst >= self.cfg.max_nonfinite:
            raise NonFiniteLoss(
                f"{worst} non-finite steps in a row by step {self.step}: stopped; the last good "
                f"checkpoint is {self.cfg.run_dir}/latest; try a lower --lr or --grad-clip"
            )

    def _print_start(self) -> None:
        if not self.env.is_main:
            return
        n = self.model.num_params()
        matmul = f" (cpu matmul: {route_of(self.model)})" if self.env.device.type == "cpu" else ""
        sharded = " sharded (fsdp)" if self.sharded else ""
        cfg, warmups = self.cfg, ""
        if cfg.batch_warmup_steps:
            warmups += f", batch warm-up from {cfg.batch_warmup_start:g} over {cfg.batch_warmup_steps} steps"
        if cfg.seq_len_warmup_steps:
            warmups += f", length warm-up from {cfg.seq_len_start} over {cfg.seq_len_warmup_steps} steps"
        print(
            f"training {n / 1e6:.1f}M parameters on {self.device_desc}{matmul}, {self.env.world_size} rank(s)"
            f"{sharded}: "
            f"steps {self.step}..{self.total_steps}, {self.tokens_per_step:,} tokens/step "
            f"(micro-batch {self.cfg.micro_batch} x {self.cfg.seq_len}, accumulation {self.grad_accum}{warmups}); "
            f"{schedule_summary(self.cfg, self.total_steps)}",
            file=sys.stderr,
        )
        warning = schedule_warning(self.cfg, self.total_steps)
        if warning:
            self._warn(warning)

    def _log_step(self, result: StepResult) -> float:
        since, since_tokens, since_flops = self._log_clock
        now = time.perf_counter()
        self._log_clock = (now, self.tokens_seen, self._flops)
        loss = float(result.loss)
        elapsed = max(now - since, 1e-9)
        tps = (self.tokens_seen - since_tokens) / elapsed
        metrics = {
            "train/loss": loss,
            **self._learning_rates(),
            "train/grad_norm": float(result.grad_norm),
            "train/tokens_per_sec": tps,
            "train/tokens": self.tokens_seen,
        }
        if self.peak:
            metrics["train/mfu"] = (self._flops - since_flops) / elapsed / (self.peak * self.env.world_size)
        self.logger.log(metrics, self.step)
        return loss

    def _learning_rates(self) -> dict[str, float]:
        """The step's learning rates: ``train/lr`` the schedule's (``--lr``'s scale), and
        ``train/lr_<optimizer>`` for each optimizer whose groups have a peak of their own (an ``lr_scale``:
        Muon's at ``--muon-lr``)."""
        rates = {"train/lr": lr_at(self.step - 1, self.cfg, self.total_steps)}
        for opt in getattr(self.optimizer, "optimizers", [self.optimizer]):
            if opt.param_groups and "lr_scale" in opt.param_groups[0]:
                rates[f"train/lr_{type(opt).__name__.lower()}"] = opt.param_groups[0]["lr"]
        return rates

    def _warn(self, msg: str) -> None:
        """One warning line: to the loggers, and to stderr unless the console logger prints it."""
        self.logger.log_text("warnings", msg, self.step)
        if self.env.is_main and "console" not in self.cfg.loggers:
            print(f"warning: {msg}", file=sys.stderr)


__all__ = ["NonFiniteLoss", "TrainResult", "Trainer", "preflight", "setup_device"]
