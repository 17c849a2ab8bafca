"""``--train-vocab data``: training on the data's ids only is training the full model whose other ids share a row."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from gpt2_core.config import GPTConfig
from gpt2_core.errors import UserError
from gpt2_core.model import GPT
from gpt2_train.trainer import Trainer
from gpt2_train.vocab import DataVocabHead, source_token_ids

from .conftest import VOCAB, CountingSource, Crash, CrashingSource, small_config
from .conftest import small_model as trainer_model


def small_model(tied: bool = True) -> GPT:
    torch.manual_seed(0)
    config = GPTConfig(n_layer=1, n_head=2, n_embd=16, block_size=16, tie_word_embeddings=tied)
    return GPT(config.padded(64))


@pytest.mark.parametrize("tied", [True, False])
def test_loss_and_training_equal_the_full_models(tied: bool) -> None:
    """The head's rows are cut and shared, the tied embedding's or an untied head's own."""
    model = small_model(tied)
    embedding = model.transformer.wte.weight.detach().clone()
    ids = np.unique(np.random.default_rng(0).integers(0, 50257, 300))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    head = DataVocabHead(model, ids)
    optimizer.register_step_post_hook(lambda *_: head.tie_others())  # as the trainer does
    rng = np.random.default_rng(1)
    for _ in range(3):
        x = torch.as_tensor(rng.choice(ids, (2, 8)))
        y = torch.as_tensor(rng.choice(ids, (2, 8)))
        y[0, :3] = -100  # ignored targets stay ignored
        y[1, :2] = torch.as_tensor(np.setdiff1d(np.arange(50257), ids)[:2])  # held-out ids count exactly too
        logits, loss = head(x, y)
        assert logits.shape == (2, 8, len(ids) + 1)
        with torch.no_grad():
            _, full = model(x, y)
        torch.testing.assert_close(loss, full, rtol=1e-5, atol=1e-5)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    weight = model.lm_head.weight
    others = np.setdiff1d(np.arange(weight.size(0)), ids)
    assert torch.equal(weight[others], weight[others[:1]].expand(len(others), -1))
    if not tied:  # the input rows of ids never read are the full run's: never looked up, only decayed
        decay = (1 - 1e-2 * 1e-2) ** 3  # AdamW's default weight decay at lr 1e-2, three steps, no gradient
        torch.testing.assert_close(model.transformer.wte.weight[others], embedding[others] * decay)
    # Generation goes through the full model.
    assert head(x[:, :4])[0].shape == (2, 1, weight.size(0))


def test_sources_without_token_ids_and_full_data_are_refused() -> None:
    with pytest.raises(UserError, match="--train-vocab full"):
        source_token_ids(CountingSource())  # a source that cannot list its ids
    model = small_model()
    with pytest.raises(UserError, match="every token id"):
        DataVocabHead(model, np.arange(model.config.padded_vocab_size))


class ListingSource(CrashingSource):
    """CrashingSource's batches, with the ids they can hold listed (as prepared shards list theirs)."""

    def token_ids(self) -> np.ndarray:
        return np.arange(VOCAB)


def test_a_data_vocabulary_run_resumes_bit_identically(tmp_path: Path) -> None:
    """The head is built before the optimizer and the checkpoint is loaded after it: a crashed run resumed
    from its last checkpoint ends with the uninterrupted run's weights, bit for bit."""

    def run(run_dir: Path, crash_at: int = -1, **kw: object) -> Trainer:
        cfg = small_config(run_dir, max_steps=8, checkpoint_every_steps=3, train_vocab="data", **kw)
        return Trainer(
            cfg,
            model=trainer_model(vocab_size=2 * VOCAB),  # ids the data never holds share one row
            train_source=ListingSource(4, 16, seed=1, crash_at=crash_at),
            val_source=ListingSource(4, 16, seed=2),
        )

    reference = run(tmp_path / "a")
    reference.fit()
    with pytest.raises(Crash):
        run(tmp_path / "b", crash_at=13).fit()  # during step 7
    resumed = run(tmp_path / "b", resume="latest")
    resumed.start()
    assert resumed.step == 6
    resumed.fit()
    for name, value in reference.model.state_dict().items():
        assert torch.equal(resumed.model.state_dict()[name], value), name
