"""Shared pieces for gpt2-train's unit tests: a tiny model and an in-memory, resumable batch source."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from gpt2_core.config import GPTConfig
from gpt2_core.model import GPT
from gpt2_data.batch_source import BatchSource
from gpt2_train.config import TrainConfig

VOCAB = 64


class CountingSource(BatchSource):
    """Learnable batches (each row counts up mod VOCAB from a random start), positioned by one integer."""

    def __init__(
        self, batch_size: int = 4, seq_len: int = 16, seed: int = 0, rank: int = 0, world_size: int = 1
    ):
        self.batch_size, self.seq_len, self.seed = batch_size, seq_len, seed
        self.rank, self.world_size = rank, world_size
        self.pos = 0

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.pos * self.world_size + self.rank)
        self.pos += 1
        start = torch.randint(0, VOCAB, (self.batch_size, 1), generator=g)
        row = (start + torch.arange(self.seq_len + 1)) % VOCAB
        return row[:, :-1].clone(), row[:, 1:].clone()

    def reset(self) -> None:
        self.pos = 0

    def state_dict(self) -> dict:
        return {"pos": self.pos}

    def load_state_dict(self, state: dict) -> None:
        self.pos = int(state["pos"])


class Crash(Exception):
    """What a CrashingSource raises: the run dies mid-step."""


class CrashingSource(CountingSource):
    """CountingSource that raises ``Crash`` when asked for batch number ``crash_at`` (never when -1)."""

    def __init__(self, *a: object, crash_at: int = -1, **k: object) -> None:
        super().__init__(*a, **k)  # type: ignore[arg-type]
        self.crash_at = crash_at

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self.pos == self.crash_at:
            raise Crash
        return super().next_batch()


def small_model(seed: int = 0, **overrides: object) -> GPT:
    torch.manual_seed(seed)
    cfg = dict(block_size=16, vocab_size=VOCAB, n_layer=1, n_head=2, n_embd=16, special_tokens={})
    cfg.update(overrides)
    return GPT(GPTConfig(**cfg))  # type: ignore[arg-type]


def small_config(run_dir: Path, **overrides: object) -> TrainConfig:
    values: dict = dict(
        run_dir=str(run_dir),
        device="cpu",
        total_batch_tokens=128,
        micro_batch=4,
        seq_len=16,
        max_steps=8,
        lr=1e-2,
        warmup_steps=2,
        eval_every=0,
        checkpoint_every_seconds=0,
        loggers=["jsonl"],
        seed=0,
    )
    values.update(overrides)
    return TrainConfig(**values)


@pytest.fixture
def make_trainer(tmp_path: Path):
    """make_trainer(**config_overrides) -> Trainer on a fresh small model and CountingSource."""
    from gpt2_train.trainer import Trainer

    def make(run_dir: Path | None = None, model: GPT | None = None, **overrides: object) -> Trainer:
        cfg = small_config(run_dir or tmp_path / "run", **overrides)
        return Trainer(
            cfg,
            model=model if model is not None else small_model(),
            train_source=CountingSource(cfg.micro_batch, cfg.seq_len, seed=1),
            val_source=CountingSource(cfg.micro_batch, cfg.seq_len, seed=2),
        )

    return make
