"""The training loop, wiring small components: model, batch sources, optimizer and schedule, the step
function, the checkpointer, loggers and evaluators.

``Trainer(cfg).fit()`` is ``gpt2 train``. Other trainers (SFT) reuse it by passing their own pieces:
``Trainer(cfg, model=..., train_source=..., val_source=...)``; anything not passed is built from ``cfg``.
"""

from __future__ import annotations

import json
import math
import signal
import sys
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from gpt2_core.cpu_matmul import route_of
from gpt2_core.errors import RunStopped, UserError
from gpt2_core.model import GPT
from gpt2_core.paths import cache_dir
from gpt2_data.batch_source import BatchSource
from torch.nn.parallel import DistributedDataParallel

from gpt2_train import accel, parallel
from gpt2_train.allocator import restore_malloc_defaults, retain_freed_memory
from gpt2_train.checkpoint import (
    AUTO,
    BEST,
    LATEST,
    Checkpointer,
    LoadedCheckpoint,
    apply_checkpoint,
    capture_rng,
    restore_rng,
)
from gpt2_train.config import TrainConfig
from gpt2_train.distributed import (
    DistEnv,
    any_rank,
    barrier,
    broadcast_object,
    gather_objects,
    setup_distributed,
    teardown_distributed,
)
from gpt2_train.evals import HellaSwagEvaluator, Sampler, Validator, every
from gpt2_train.loggers import NullLogger, build_loggers
from gpt2_train.mfu import flops_per_token, peak_flops
from gpt2_train.optim import build_optimizer, lr_at, wsd_decay_start
from gpt2_train.precision import autocast_dtype
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


def build_model(cfg: TrainConfig) -> GPT:
    """A fresh model from preset ``cfg.model`` (with overrides, vocab padded), or ``cfg.init_from``'s."""
    from gpt2_core.model import GPT
    from gpt2_core.presets import get_preset

    if cfg.init_from:
        shape_changes = set(cfg.model_overrides) - {"dropout"}
        if shape_changes:
            raise UserError(
                f"--init-from: cannot change {sorted(shape_changes)} of an existing model (only dropout)"
            )
        model = GPT.from_pretrained(cfg.init_from)
        if "dropout" in cfg.model_overrides:
            model = _with_dropout(model, float(cfg.model_overrides["dropout"]))
        return model
    try:
        config = get_preset(cfg.model, **cfg.model_overrides)
    except TypeError as e:
        raise UserError(f"model_overrides: {e}") from e
    if cfg.vocab_multiple > 1:
        config = config.padded(cfg.vocab_multiple)
    return GPT(config)


def _with_dropout(model: GPT, p: float) -> GPT:
    model.config = replace(model.config, dropout=p)
    for m in model.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = p
    for block in model.transformer.h:
        block.attn.dropout = p
    return model


def prepare_data(cfg: TrainConfig, env: DistEnv) -> Path:
    """The data directory: ``cfg.data_dir``, or ``cfg.dataset`` prepared once into the cache (rank 0)."""
    if cfg.data_dir:
        return Path(cfg.data_dir)
    if not cfg.dataset:
        raise UserError("give --data-dir (a directory from `gpt2 data prepare`) or --dataset NAME")
    # The shard size and split are part of the name: prepare() refuses to redo a directory with other settings.
    val = "" if cfg.dataset_val_tokens is None else f"-val{cfg.dataset_val_tokens:g}"
    out = cache_dir() / "data" / f"{cfg.dataset}-shards{cfg.dataset_shard_tokens}{val}"
    if env.is_main:
        from gpt2_data.prepare import prepare, read_manifest

        manifest = read_manifest(out) if out.is_dir() else None
        if not (manifest and manifest.get("complete")):
            print(f"preparing dataset {cfg.dataset!r} in {out} (once)", file=sys.stderr)
        prepare(
            cfg.dataset,
            out,
            shard_tokens=cfg.dataset_shard_tokens,
            val_tokens=cfg.dataset_val_tokens,
            progress=sys.stderr.isatty(),
        )
    barrier(env)
    return out


def preflight(cfg: TrainConfig, block_size: int, world_size: int) -> int:
    """The checks that need neither data nor weights, run before any work starts; returns the gradient
    accumulation (micro-batches per rank per step).

    Raises ``UserError`` when the batch does not split into micro-batches, ``--seq-len`` exceeds the
    context window ``block_size``, or ``--run-dir`` holds checkpoints this run would neither resume nor
    overwrite.
    """
    if cfg.seq_len > block_size:
        raise UserError(f"--seq-len {cfg.seq_len} exceeds the model's context window ({block_size})")
    per_micro = cfg.micro_batch * cfg.seq_len * world_size
    if cfg.total_batch_tokens % per_micro:
        raise UserError(
            f"--total-batch-tokens {cfg.total_batch_tokens} is not a multiple of --micro-batch x --seq-len x "
            f"ranks = {cfg.micro_batch} x {cfg.seq_len} x {world_size} = {per_micro}"
        )
    if not cfg.resume and not cfg.overwrite and Checkpointer(cfg.run_dir).checkpoints():
        raise UserError(
            f"--run-dir {cfg.run_dir} already holds checkpoints: pass --resume auto to continue, "
            "--overwrite to start afresh, or another --run-dir"
        )
    return cfg.total_batch_tokens // per_micro


class _Signals:
    """Turns SIGINT/SIGTERM into a flag the loop checks between steps (a second one interrupts hard)."""

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
            raise KeyboardInterrupt
        self.received = signum
        print(f"\n{signal.Signals(signum).name}: stopping after this step with a checkpoint", file=sys.stderr)

    def __exit__(self, *exc: object) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)


# --- the trainer ------------------------------------------------------------------------------------


class Trainer:
    """The training loop over small components, each built from ``cfg`` unless given.

    ``Trainer(cfg)`` builds the model, batch sources, optimizer, checkpointer, loggers and evaluators;
    ``start()`` restores ``cfg.resume`` (or clears the run with ``--overwrite``) and wraps the model for the
    run (speed-ups, DDP; under ``--parallel fsdp`` the model is wrapped and sharded as it is built, since the
    optimizer must hold the shards); ``fit()`` starts if needed and trains, asking each component whether it
    is due; ``close()`` ends what the trainer started (``fit`` calls it on the way out).
    """

    def __init__(
        self,
        cfg: TrainConfig,
        *,
        model: GPT | None = None,
        train_source: BatchSource | None = None,
        val_source: BatchSource | None = None,
        env: DistEnv | None = None,
        logger: Any = None,
        logger_registry: dict[str, Any] | None = None,
    ) -> None:
        self.cfg = cfg
        self._own_env = env is None
        self.sharded = cfg.parallel == "fsdp"
        self.env = env or setup_distributed(cfg.device, group_of_one=self.sharded)
        dev = self.env.device
        world = self.env.world_size
        accel.check(cfg, dev)
        if self.sharded and not torch.distributed.is_initialized():
            raise UserError("--parallel fsdp: give Trainer an env from setup_distributed(group_of_one=True)")
        torch.manual_seed(cfg.seed)  # the same initial weights on every rank
        self.model = model if model is not None else build_model(cfg)
        self.grad_accum = preflight(cfg, self.model.config.block_size, world)
        if not self.sharded:  # FSDP moves each rank's shards there as it shards the model
            self.model.to(dev)
        self._retains_memory = setup_device(dev)
        self.autocast_dtype = autocast_dtype(cfg.precision, dev)

        if train_source is None:
            # Given sources are used as they are (no val source: no val loss); otherwise shards.
            from gpt2_data.loader import ShardLoader

            data_dir = prepare_data(cfg, self.env)
            common = dict(
                batch_size=cfg.micro_batch, seq_len=cfg.seq_len, rank=self.env.rank, world_size=world
            )
            train_source = ShardLoader(
                data_dir,
                split="train",
                seed=cfg.seed,
                shuffle=True,
                shuffle_windows=cfg.shuffle_windows,
                **common,
            )
            if cfg.eval_every:
                val_source = ShardLoader(data_dir, split="val", shuffle=False, **common)
        self.train_source: BatchSource = train_source

        self.total_steps = cfg.max_steps or self._steps_for_epochs()
        self.loss_model: torch.nn.Module = self.model
        """What computes the loss: the model, or the data-vocabulary head around it (``_wrap()``)."""
        self.wrapped: torch.nn.Module | None = None
        """What the step function calls: the model with its speed-ups and DDP or FSDP (``_wrap()``)."""
        self.flops_per_token = 0.0
        """Training FLOPs per token for MFU, of the head ``_wrap()`` chooses."""
        if self.sharded:
            # FSDP replaces the parameters by their shards, which the optimizer must hold: shard now, and let
            # start() read a checkpoint into the shards.
            self.wrapped = self._wrap()
        # AdamW runs where the parameters are: in CPU memory when FSDP offloads them there.
        self.optimizer = build_optimizer(
            self.model, cfg, torch.device("cpu") if cfg.fsdp_cpu_offload else dev
        )
        if self.sharded and (
            not isinstance(self.optimizer, torch.optim.Optimizer)
            or isinstance(self.optimizer, torch.optim.Muon)
        ):
            # Muon orthogonalises whole matrices; FSDP leaves each rank a shard of each (and DCP saves only a
            # torch optimizer).
            if self._own_env:
                teardown_distributed(self.env)
            raise UserError(
                f"--optimizer {cfg.optimizer} does not work with --parallel fsdp; use --parallel ddp"
            )
        self.checkpointer = Checkpointer(
            cfg.run_dir,
            keep=cfg.keep,
            every_steps=cfg.checkpoint_every_steps,
            every_seconds=cfg.checkpoint_every_seconds,
        )
        self.validator = Validator(
            val_source, cfg.eval_batches, cfg.eval_every, self.env, self.autocast_dtype
        )
        self.hellaswag = HellaSwagEvaluator(
            cfg.hellaswag_file, cfg.hellaswag_limit, cfg.hellaswag_every, self.env, self.autocast_dtype
        )
        self.sampler = Sampler(
            cfg.sample_prompt, cfg.sample_tokens, cfg.sample_every, self.env, sharded=self.sharded
        )
        self.step = 0
        self.tokens_seen = 0
        self.best_val_loss: float | None = None
        self.evals_since_best = 0
        """Val losses in a row without a new best by ``early_stop_min_delta`` (for ``--early-stop-patience``)."""
        self.tokens_per_step = cfg.total_batch_tokens
        self.train_step: TrainStep | None = None
        """Built by ``start()``: the step function over the wrapped model."""

        self.peak, self.device_desc = peak_flops(dev, self.autocast_dtype)
        resolved = replace(cfg, max_steps=self.total_steps)
        if logger is not None:
            self.logger = logger
        elif self.env.is_main:
            self.logger = build_loggers(cfg.loggers, Path(cfg.run_dir), resolved, logger_registry)
        else:
            self.logger = NullLogger()
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

    def start(self) -> TrainStep:
        """Resume (``--resume``) or clear (``--overwrite``) the run, then wrap the model (unless sharded already)
        and build the step function; once (later calls return the step function)."""
        if self.train_step is not None:
            return self.train_step
        cfg, dev = self.cfg, self.env.device
        resume = cfg.resume
        if resume == AUTO:
            # Rank 0 looks, so that every rank takes the same branch even on node-local disks.
            resume = broadcast_object(self.env, LATEST if self.checkpointer.checkpoints() else None)
            if resume is None and self.env.is_main:
                print(f"--resume auto: no checkpoint in {cfg.run_dir} yet, starting fresh", file=sys.stderr)
        if resume:
            self._resume(resume)
        elif self.checkpointer.checkpoints() and cfg.overwrite:
            if self.env.is_main:
                self.checkpointer.clear()
            barrier(self.env)
        # Each step logged once: forget what a killed run logged past the checkpoint (all of it when fresh).
        if hasattr(self.logger, "rewind"):  # a logger given by the caller may not have it
            self.logger.rewind(self.step if resume else -1)
        if self.wrapped is None:
            # Wrap after loading: DDP broadcasts rank 0's weights, compile traces the final module.
            self.wrapped = self._wrap()
        self.train_step = TrainStep(
            self.wrapped,
            self.optimizer,
            grad_accum=self.grad_accum,
            grad_clip=cfg.grad_clip,
            device=dev,
            autocast_dtype=self.autocast_dtype,
            count_group=self.env.control_group,
        )
        return self.train_step

    def _wrap(self) -> torch.nn.Module:
        """The model as the step function calls it: the data-vocabulary head, the speed-ups, then DDP or FSDP."""
        cfg, dev = self.cfg, self.env.device
        head = None
        if cfg.train_vocab == "data":
            from gpt2_train.vocab import DataVocabHead, source_token_ids

            head = DataVocabHead(self.model, source_token_ids(self.train_source), self.optimizer)
        head_rows = len(head.rows) if head is not None else None
        self.flops_per_token = flops_per_token(self.model, cfg.seq_len, head_rows=head_rows)
        # Val loss through the same head: the same value as the full model's, for a fraction of the work.
        self.loss_model = head if head is not None else self.model
        wrapped = accel.apply(self.model, cfg, dev, outer=head, autocast=self.autocast_dtype)
        if self.sharded:
            compute_dtype = parallel.param_dtype(self.autocast_dtype, dev)
            return parallel.shard(
                self.model, self.env, compute_dtype=compute_dtype, cpu_offload=cfg.fsdp_cpu_offload
            )
        if self.env.enabled:
            ids = [dev.index] if dev.type == "cuda" else None
            wrapped = DistributedDataParallel(wrapped, device_ids=ids)
        return wrapped

    def _resume(self, spec: str) -> None:
        # Rank 0 picks the checkpoint (falling back past unreadable ones); the others read the same one.
        chosen: Any
        ckpt: LoadedCheckpoint | None = None
        if self.env.is_main:
            try:
                ckpt = self.checkpointer.load_first_good(spec, self.model.config)
                chosen = str(ckpt.path)
            except UserError as e:
                chosen = e
        else:
            chosen = None
        chosen = broadcast_object(self.env, chosen)
        if isinstance(chosen, UserError):
            raise chosen
        if ckpt is None:
            ckpt = self.checkpointer.read(Path(chosen))
        saved = (ckpt.state.get("config") or {}).get("optimizer", "adamw")
        if saved != self.cfg.optimizer:
            raise UserError(
                f"--resume {ckpt.path}: the checkpoint was trained with --optimizer {saved}, this run has "
                f"--optimizer {self.cfg.optimizer}; resume with --optimizer {saved}"
            )
        apply_checkpoint(ckpt, self.model, self.optimizer)
        state = ckpt.state
        self.step = int(state["step"])
        self.tokens_seen = int(state["tokens_seen"])
        self.best_val_loss = state.get("best_val_loss")
        self.evals_since_best = int(state.get("evals_since_best", 0))
        ranks = ckpt.rank_states
        if len(ranks) != self.env.world_size and self.env.is_main:
            print(
                f"warning: resuming {self.env.world_size} rank(s) from a checkpoint of {len(ranks)}: the data "
                "stream is re-split from the same position, and the result is no longer bit-identical",
                file=sys.stderr,
            )
        mine = ranks[min(self.env.rank, len(ranks) - 1)]
        self.train_source.load_state_dict(mine["source"])
        restore_rng(mine["rng"])
        if self.env.is_main:
            print(f"resumed from {ckpt.path} at step {self.step}", file=sys.stderr)

    def close(self) -> None:
        """End what the trainer started: its loggers, the CPU allocator setting, and the process group when
        it joined one itself. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self.logger.close()
        if self._retains_memory:
            restore_malloc_defaults()
        if self._own_env:
            teardown_distributed(self.env)

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
        self._log_clock = (time.perf_counter(), self.step)
        last_loss: float | None = None
        written: Path | None = None
        streak = torch.zeros((), dtype=torch.int64, device=env.device)
        worst = torch.zeros((), dtype=torch.int64, device=env.device)
        if env.is_main and self.step == 0:
            self.logger.log_text("config", json.dumps(cfg.to_dict(), indent=2), 0)
        self._print_start()
        early = False
        with _Signals() as signals:
            while self.step < self.total_steps:
                result = train_step(self.train_source, lr_at(self.step, cfg, self.total_steps))
                self.step += 1
                self.tokens_seen += self.tokens_per_step
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
                    better = self.best_val_loss is None or val < self.best_val_loss - cfg.early_stop_min_delta
                    self.evals_since_best = 0 if better else self.evals_since_best + 1
                if improved:
                    self.best_val_loss = val
                # Every rank must agree, or they would stop (or gather states) at different steps.
                stop = any_rank(env, signals.received is not None)
                early = any_rank(env, 0 < cfg.early_stop_patience <= self.evals_since_best) and not last
                due = any_rank(env, self.checkpointer.due(self.step))
                stable = self._stable_end()
                if due or improved or last or stop or early or stable:
                    written = self.save_checkpoint(val_loss=val, stable=stable)
                if val is not None or due or improved:
                    self._log_clock = (time.perf_counter(), self.step)  # tokens/s: training only
                if early:
                    self._say_early_stop()
                if stop or early:
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

    def _stable_end(self) -> bool:
        """Whether this step ends a WSD run's stable phase (its checkpoint is the one to train longer from)."""
        if self.cfg.lr_schedule != "wsd":
            return False
        start = wsd_decay_start(self.cfg, self.total_steps)
        return self.step == start and 0 < start < self.total_steps

    def _say_early_stop(self) -> None:
        if self.env.is_main:
            print(
                f"early stop at step {self.step}: {self.evals_since_best} val losses without one below "
                f"{self.best_val_loss:.4f} - {self.cfg.early_stop_min_delta:g}; best checkpoint: "
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
        print(
            f"training {n / 1e6:.1f}M parameters on {self.device_desc}{matmul}, {self.env.world_size} rank(s)"
            f"{sharded}: "
            f"steps {self.step}..{self.total_steps}, {self.tokens_per_step:,} tokens/step "
            f"(micro-batch {self.cfg.micro_batch} x {self.cfg.seq_len}, accumulation {self.grad_accum})",
            file=sys.stderr,
        )

    def _log_step(self, result: StepResult) -> float:
        since, since_step = self._log_clock
        now = time.perf_counter()
        self._log_clock = (now, self.step)
        loss = float(result.loss)
        tps = (self.step - since_step) * self.tokens_per_step / max(now - since, 1e-9)
        metrics = {
            "train/loss": loss,
            "train/lr": lr_at(self.step - 1, self.cfg, self.total_steps),
            "train/grad_norm": float(result.grad_norm),
            "train/tokens_per_sec": tps,
        }
        if self.peak:
            metrics["train/mfu"] = tps * self.flops_per_token / (self.peak * self.env.world_size)
        self.logger.log(metrics, self.step)
        return loss

    def _warn(self, msg: str) -> None:
        """One warning line: to the loggers, and to stderr unless the console logger prints it."""
        self.logger.log_text("warnings", msg, self.step)
        if self.env.is_main and "console" not in self.cfg.loggers:
            print(f"warning: {msg}", file=sys.stderr)

    def save_checkpoint(self, val_loss: float | None = None, stable: bool = False) -> Path | None:
        """Gather every rank's position and RNG, and write a checkpoint: on rank 0, or with a sharded model
        on every rank, each writing its shards (its path on rank 0, None on the others). ``stable``: it ends
        a WSD run's stable phase (kept, and linked as ``RUN_DIR/stable``)."""
        rank_state = {"source": self.train_source.state_dict(), "rng": capture_rng()}
        ranks = gather_objects(self.env, rank_state)
        state = {
            "step": self.step,
            "tokens_seen": self.tokens_seen,
            "val_loss": val_loss,
            "best_val_loss": self.best_val_loss,
            "evals_since_best": self.evals_since_best,
            "stable": stable,
            "world_size": self.env.world_size,
            "config": self.cfg.to_dict(),
        }
        path = None
        if self.sharded:
            path = self.checkpointer.save_sharded(self.model, self.optimizer, state, ranks, self.env)
        elif self.env.is_main:
            path = self.checkpointer.save(self.model, self.optimizer, state, ranks)
        barrier(self.env)  # nobody races ahead (or exits) while rank 0 writes
        self.checkpointer.last_save = time.monotonic()
        return path


def train(cfg: TrainConfig) -> TrainResult:
    """Run ``gpt2 train`` with ``cfg`` (under torchrun: this rank's share), tearing DDP/FSDP down after."""
    env = setup_distributed(cfg.device, group_of_one=cfg.parallel == "fsdp")
    try:
        return Trainer(cfg, env=env).fit()
    finally:
        teardown_distributed(env)


__all__ = ["NonFiniteLoss", "TrainResult", "Trainer", "build_model", "train"]
