"""``TrainConfig``: everything ``gpt2 train`` can be told, one flag per field (the optimizers' own options
aside: ``gpt2_train.optimizers``), and its named presets. ``gpt2_train.config_layers`` builds one from its
layers. Torch-free, so ``gpt2 --help`` stays fast.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar

from gpt2_core.errors import UserError

PARALLEL_MODES = ("ddp", "fsdp")
LR_SCHEDULES = ("cosine", "wsd", "constant")
DECAY_SHAPES = ("linear", "1-sqrt")
CPU_MATMUL_MODES = ("auto", "onednn", "torch")
"""``gpt2_core.cpu_matmul.MODES``, spelled out here to keep this module torch-free (a test checks both)."""


@dataclass
class TrainConfig:
    """How to train: model, data, batch, optimizer, schedule, evaluation, checkpoints and logging.

    SFT and other trainers reuse it by subclassing with different defaults.
    """

    # --- model ---
    model: str = "gpt2"
    """Model preset to train from scratch (gpt2, gpt2-medium, gpt2-large, gpt2-xl, tiny, nano)."""
    init_from: str | None = None
    """Model directory to start from instead (ours, a checkpoint, or Hugging Face GPT-2); overrides --model."""
    model_overrides: dict[str, Any] = field(default_factory=dict)
    """GPTConfig fields to change in the preset, e.g. {n_layer = 6, dropout = 0.1} (TOML only)."""
    vocab_multiple: int = 64
    """Round the embedding rows up to a multiple of this (64: 50257 -> 50304, faster kernels; 1: none)."""
    train_vocab: str = "full"
    """Ids the output layer scores in training: full, or data (only those in the training data, every other
    id sharing one row: the same kind of model, with much less work in a small model's head)."""

    # --- data ---
    data_dir: str | None = None
    """Directory of prepared shards (from gpt2 data prepare)."""
    dataset: str | None = None
    """Without --data-dir: a dataset to prepare automatically into the cache (the tiny preset: shakespeare)."""
    dataset_shard_tokens: int = 100_000_000
    """Shard size when --dataset is prepared automatically; small shards mix a small corpus better, since
    the loader shuffles the order of shards."""
    dataset_val_tokens: float | None = None
    """Validation split when --dataset is prepared automatically: as gpt2 data prepare --val-tokens (N >= 1 the
    first N tokens, 0 < N < 1 every (1/N)-th document); default: the first shard."""
    shuffle_windows: bool = False
    """Also read each training shard in a shuffled order of document-aligned windows (runs of whole documents
    of at least 1024 tokens), reshuffled every epoch; resuming needs the same setting."""
    align_documents: bool = False
    """Start every training sequence at a document start (<|endoftext|>), as modded-nanogpt's batches do: the
    document a sequence's end cuts is not continued, its rest skipped. Needs --max-steps; val batches stay as they
    are; resuming needs the same setting."""

    # --- batch and length ---
    total_batch_tokens: int = 524288
    """Tokens per optimizer step over all ranks; gradient accumulation makes up the difference."""
    micro_batch: int = 64
    """Sequences per forward/backward pass on each rank."""
    seq_len: int = 1024
    """Tokens per training sequence (at most the model's context window)."""
    max_steps: int = 0
    """Optimizer steps to train (0: derive from --epochs)."""
    epochs: float = 1.0
    """Passes over the training tokens, used when --max-steps is 0."""
    batch_warmup_steps: int = 0
    """Grow each micro-batch from --batch-warmup-start of its sequences to all of them, linearly over this many
    steps (GPT-3's batch-size warm-up; 0: off)."""
    batch_warmup_start: float = 0.25
    """The share of --micro-batch's sequences the batch-size warm-up starts from (rounded up)."""
    seq_len_warmup_steps: int = 0
    """Start sequences at --seq-len-start tokens, doubling at equal intervals to --seq-len over this many steps,
    with as many more per micro-batch as they are shorter (Li et al. 2022's sequence-length warm-up; 0: off)."""
    seq_len_start: int = 128
    """The sequence length the sequence-length warm-up starts from (--seq-len divided by 2, 4, 8, ...)."""

    # --- optimizer and schedule ---
    optimizer: str = "adamw"
    """adamw, muon (Muon on the blocks' matrices, AdamW on the rest), or one from a plugin (gpt2 plugins)."""
    lr: float = 6e-4
    """Peak learning rate (under --optimizer muon: of the parameters AdamW updates)."""
    lr_schedule: str = "cosine"
    """cosine (warm-up, cosine decay), wsd (warm-up, stable, decay over the last --decay-fraction; resume
    RUN_DIR/stable with a larger --max-steps to train longer), or constant (warm-up, then --lr)."""
    decay_fraction: float = 0.2
    """wsd: the share of the steps that decay (Hägele et al. 2024 find 0.2 enough)."""
    decay_shape: str = "linear"
    """wsd: shape of the decay, linear or 1-sqrt (Hägele et al. 2024's better one)."""
    min_lr_ratio: float = 0.1
    """The decay (cosine, wsd) ends at lr * min_lr_ratio."""
    warmup_steps: int = 715
    """Steps of linear warm-up from 0 to lr."""
    decay_steps: int = 0
    """Steps over which the cosine decays, warm-up included (0: all steps of the run)."""
    grad_clip: float = 1.0
    """Clip the global gradient norm to this (0: no clipping)."""
    optimizer_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Each optimizer's own options by its name, e.g. {muon = {muon_lr = 0.01}} (TOML: a [muon] table; flags:
    the optimizer's own, listed under "Optimizer NAME"). The run's optimizer's table is filled in from its
    defaults when the config is built (gpt2_train.optimizers)."""

    # --- runtime ---
    device: str = "auto"
    """cpu, cuda, mps or auto (under torchrun each rank takes cuda:LOCAL_RANK)."""
    precision: str = "auto"
    """auto (bf16 autocast where the GPU or CPU computes in bf16 natively, fp32 elsewhere), bf16 or fp32."""
    compile: bool | None = None
    """torch.compile the model (inductor). Default: on CUDA, off elsewhere (on a CPU, compiling costs
    minutes and gains little); --compile compiles on a CPU too, --no-compile nowhere."""
    fp8: bool = False
    """Float8 matmuls in the transformer blocks through torchao (Hopper/Ada GPUs only; pip install torchao)."""
    cpu_matmul: str = "auto"
    """fp32 CPU matrix products: torch (MKL), onednn, or auto: oneDNN where a short timing of this model's
    products at this micro-batch, taken at start-up and cached, shows it faster (it is with AVX-512)."""
    activation_checkpointing: bool = False
    """Recompute each block's activations in the backward pass: less memory (gpt2-xl on one GPU), ~30% slower."""
    parallel: str = "ddp"
    """How torchrun's ranks share the model: ddp (each holds all of it) or fsdp (each holds 1/N of the parameters,
    gradients and optimizer state, FSDP2; checkpoints sharded too; bf16 parameters, fp32 gradient reduction on GPUs)."""
    fsdp_cpu_offload: bool = False
    """With --parallel fsdp: keep the parameter shards, gradients and optimizer state in CPU memory, the optimizer
    step on the CPU (the largest models on the fewest GPUs, at a cost in speed)."""
    seed: int = 1337
    """Seed for initialisation and data order."""
    run_dir: str = "runs/gpt2"
    """Directory for checkpoints and logs; RUN_DIR/latest is the newest checkpoint."""
    resume: str | None = None
    """Continue a run: latest (the newest good checkpoint in --run-dir), auto (latest if there is a checkpoint,
    else start fresh: the same command line for the first start and every requeue), or a checkpoint directory."""
    overwrite: bool = False
    """Start afresh in a --run-dir that already holds checkpoints, deleting them."""

    # --- logging and evaluation ---
    loggers: list[str] = field(default_factory=lambda: ["console", "jsonl", "tensorboard"])
    """Loggers to use (repeatable): console, jsonl, tensorboard, or one from a plugin (wandb: gpt2-wandb);
    jsonl (metrics.jsonl, the run's own record) is always kept."""
    project: str = "gpt2"
    """Project the run belongs to, in loggers that group runs by project (wandb; its entity: WANDB_ENTITY)."""
    run_name: str | None = None
    """The run's display name in loggers that show one (wandb); default: the --run-dir folder's name."""
    log_every: int = 1
    """Read loss and grad norm back and log them every this many steps."""
    eval_every: int = 250
    """Val loss every this many steps, and at the end (0: never)."""
    eval_batches: int = 20
    """Micro-batches of val data per val loss (the same ones every time)."""
    hellaswag_every: int = 0
    """HellaSwag accuracy every this many steps, and at the end (0: never)."""
    hellaswag_file: str | None = None
    """HellaSwag jsonl (official format); default: the validation set, downloaded once to the cache."""
    hellaswag_limit: int = 0
    """Evaluate only the first N HellaSwag examples (0: all)."""
    sample_every: int = 0
    """Log a text sample every this many steps, and at the end (0: never)."""
    sample_prompt: str = "Hello, I'm a language model,"
    """Prompt of the logged text samples."""
    sample_tokens: int = 48
    """Length of each logged text sample in tokens."""

    # --- checkpoints and failures ---
    checkpoint_every_seconds: float = 60.0
    """Save a checkpoint when this many seconds passed since the last one (0: off)."""
    checkpoint_every_steps: int = 0
    """Also save one every this many steps (0: off)."""
    keep: int = 3
    """Keep the newest K checkpoints, plus the one with the best val loss."""
    max_nonfinite: int = 5
    """Stop the run after this many non-finite (NaN/inf) steps in a row; such steps are skipped."""
    early_stop_patience: int = 0
    """Stop after this many val losses in a row without a new best (by --early-stop-min-delta); 0: never.
    The best checkpoint is kept (RUN_DIR/best)."""
    early_stop_min_delta: float = 0.0
    """A val loss counts as a new best for early stopping when it is this much below the best so far."""

    POSITIVE: ClassVar[tuple[str, ...]] = (
        "total_batch_tokens",
        "micro_batch",
        "seq_len",
        "log_every",
        "keep",
        "max_nonfinite",
        "dataset_shard_tokens",
    )
    """Fields that must be > 0 (a subclass may allow 0 with a meaning of its own)."""

    def __post_init__(self) -> None:
        for name in self.POSITIVE:
            if getattr(self, name) <= 0:
                raise UserError(f"--{_flag(name)} must be positive, got {getattr(self, name)}")
        non_negative = (
            "max_steps",
            "epochs",
            "warmup_steps",
            "decay_steps",
            "batch_warmup_steps",
            "seq_len_warmup_steps",
            "grad_clip",
            "eval_every",
            "hellaswag_every",
            "hellaswag_limit",
            "sample_every",
            "checkpoint_every_seconds",
            "checkpoint_every_steps",
            "early_stop_patience",
            "early_stop_min_delta",
        )
        for name in non_negative:
            if getattr(self, name) < 0:
                raise UserError(f"--{_flag(name)} must be >= 0, got {getattr(self, name)}")
        if self.lr <= 0:
            raise UserError(f"--lr must be positive, got {self.lr}")
        if not 0 <= self.min_lr_ratio <= 1:
            raise UserError(f"--min-lr-ratio must be in [0, 1], got {self.min_lr_ratio}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise UserError(
                f"--lr-schedule must be one of {', '.join(LR_SCHEDULES)}, got {self.lr_schedule!r}"
            )
        if not 0 < self.decay_fraction <= 1:
            raise UserError(f"--decay-fraction must be in (0, 1], got {self.decay_fraction}")
        if self.decay_shape not in DECAY_SHAPES:
            raise UserError(f"--decay-shape must be {' or '.join(DECAY_SHAPES)}, got {self.decay_shape!r}")
        if self.early_stop_patience and not self.eval_every:
            raise UserError(
                "--early-stop-patience watches the val loss, which --eval-every 0 turns off; give --eval-every N"
            )
        if self.max_steps == 0 and self.epochs == 0:
            raise UserError("give --max-steps or --epochs (both are 0)")
        if not 0 < self.batch_warmup_start <= 1:
            raise UserError(f"--batch-warmup-start must be in (0, 1], got {self.batch_warmup_start}")
        if self.batch_warmup_steps and self.micro_batch < 2:
            raise UserError(
                "--batch-warmup-steps grows each micro-batch's sequences: it needs --micro-batch >= 2"
            )
        ratio = self.seq_len // self.seq_len_start if 0 < self.seq_len_start < self.seq_len else 0
        if self.seq_len_warmup_steps and (ratio * self.seq_len_start != self.seq_len or ratio & (ratio - 1)):
            raise UserError(
                f"--seq-len-start must be --seq-len ({self.seq_len}) divided by a power of two (2, 4, 8, ...), "
                f"got {self.seq_len_start}"
            )
        if self.align_documents and self.max_steps == 0:
            raise UserError(
                "--align-documents skips the rest of each document a sequence cuts, so an epoch's steps are only "
                "known by reading it: give --max-steps"
            )
        if self.precision not in ("auto", "bf16", "fp32"):
            raise UserError(f"--precision must be auto, bf16 or fp32, got {self.precision!r}")
        if self.train_vocab not in ("full", "data"):
            raise UserError(f"--train-vocab must be full or data, got {self.train_vocab!r}")
        if self.parallel not in PARALLEL_MODES:
            raise UserError(f"--parallel must be {' or '.join(PARALLEL_MODES)}, got {self.parallel!r}")
        if self.fsdp_cpu_offload and self.parallel != "fsdp":
            raise UserError("--fsdp-cpu-offload needs --parallel fsdp")
        if self.parallel == "fsdp" and self.train_vocab == "data":
            # Its head ties every unseen id's embedding row to one, a copy across rows of a sharded matrix.
            raise UserError("--train-vocab data works with --parallel ddp only; add --train-vocab full")
        if self.cpu_matmul not in CPU_MATMUL_MODES:
            raise UserError(
                f"--cpu-matmul must be one of {', '.join(CPU_MATMUL_MODES)}, got {self.cpu_matmul!r}"
            )
        if self.vocab_multiple < 1:
            raise UserError(f"--vocab-multiple must be >= 1, got {self.vocab_multiple}")
        if not self.loggers:
            raise UserError("--logger: give at least one logger (console, jsonl, tensorboard, ...)")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _flag(name: str) -> str:
    return name.replace("_", "-")


# Named run recipes: the fields each sets over the defaults (a test keeps it so); gpt2-124m-fineweb spells out
# its whole recipe, defaults included, so it reads as build-nanogpt's.
PRESETS: dict[str, dict[str, Any]] = {
    # build-nanogpt's GPT-2 124M on FineWeb-Edu 10B: 524,288 tokens per step, 19,073 steps per epoch.
    "gpt2-124m-fineweb": dict(
        model="gpt2",
        data_dir="data/fineweb-edu-10b",
        total_batch_tokens=524288,
        micro_batch=64,
        seq_len=1024,
        epochs=1.0,
        lr=6e-4,
        warmup_steps=715,
        log_every=10,
        eval_every=250,
        hellaswag_every=250,
        sample_every=250,
        run_dir="runs/gpt2-124m-fineweb",
    ),
    # GPT-2 124M on FineWeb-Edu with what bench/token_efficiency.py measured (BENCHMARKS.md, "On paper: 8 x H100",
    # gives each value's source): Muon + WSD planned for 0.40 of build-nanogpt's 19,073 steps (runs planned that short
    # ended below AdamW + cosine's final val loss at widths 128 and 384), decaying over the last 40% to 10% of the
    # peak, and an untied head: both measured gains on the 6 x 384 model. Muon's lr and momentum warm-up are
    # peers' 124M settings (nanochat's 0.02, modded-nanogpt's 0.85 -> 0.95 over 300 steps), which runs of
    # 512-token steps cannot measure; the rest keeps build-nanogpt's values (the defaults).
    "gpt2-124m-speedrun": dict(
        model_overrides={"tie_word_embeddings": False},
        data_dir="data/fineweb-edu-10b",
        max_steps=7_629,
        optimizer="muon",
        muon=dict(muon_momentum_warmup_steps=300),
        lr_schedule="wsd",
        decay_fraction=0.4,
        log_every=10,
        hellaswag_every=250,
        sample_every=250,
        run_dir="runs/gpt2-124m-speedrun",
    ),
    # A few minutes on 2 CPU cores, on the built-in Shakespeare corpus (gpt2-data's shakespeare dataset,
    # 1.47M training tokens); bench/first_run.py measures it. Tuned there for the lowest val loss in a fixed
    # number of tokens: small steps (more updates per token), a lower peak lr, decay to zero, beta2 0.99.
    # Muon (at the best --muon-lr of bench/token_efficiency.py's sweep) with a WSD schedule decaying over the
    # last 40%: lower val loss than AdamW + cosine in the same 800 steps (BENCHMARKS.md).
    "tiny": dict(
        model="tiny",
        dataset="shakespeare",
        # ~180 shards of a few scenes each: the shuffled shard order spreads the 800 steps (28% of an epoch)
        # over the plays, where 65,536-token shards gave a handful of long stretches (BENCHMARKS.md).
        dataset_shard_tokens=8192,
        # Every 20th scene: held-out text from all 38 plays (the first shard would be half of one play).
        dataset_val_tokens=0.05,
        train_vocab="data",
        total_batch_tokens=512,
        micro_batch=4,
        seq_len=128,
        max_steps=800,
        optimizer="muon",
        # momentum 0.8, BENCHMARKS.md: better than 0.95 on tiny's 800 steps, and planned for 60% of them.
        muon=dict(muon_lr=0.01, muon_momentum=0.8, beta2=0.99),
        adamw=dict(beta2=0.99),
        lr=2e-3,
        lr_schedule="wsd",
        decay_fraction=0.4,
        min_lr_ratio=0.0,
        warmup_steps=30,
        eval_every=400,
        eval_batches=32,
        sample_prompt="Good morrow, my lord. I bring you news from the king:",
        sample_tokens=60,
        run_dir="runs/tiny",
    ),
}


NOT_CARRIED = ("resume", "overwrite", "run_dir")
"""Fields that say where and how this process starts, not what the run is: never taken from a checkpoint."""


def known_fields(cls: type[TrainConfig], saved: dict[str, Any]) -> dict[str, Any]:
    """The values of a saved config (a checkpoint's) that are fields of ``cls``: one written by another
    version may hold fields this one lacks."""
    fields = {f.name for f in dataclasses.fields(cls)}
    return {k: v for k, v in saved.items() if k in fields}
