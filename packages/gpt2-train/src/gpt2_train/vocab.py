"""``--train-vocab data``: the output layer scores only the token ids that occur in the training data.

A small model on a small corpus spends most of its step in the head: tiny's 50,304 x 128 output matrix has
8x the weights of its four blocks, and the (tokens x 50,304) logits are the biggest tensors of the step. The
Shakespeare corpus uses 18,447 distinct GPT-2 ids. Here the head scores those ids plus one more row that
stands for every other id; all the other ids share that one embedding row, so the model stays an ordinary
full-vocabulary GPT-2 whose softmax is exactly the one trained:

    p(other id u) = exp(h . w_shared) / Z        for each of the U other ids, so together
    p(any other)  = exp(h . w_shared + log U) / Z

which is the shared row's logit with ``log U`` added, the one extra class of the training softmax. After
every optimizer step the shared row is copied to every other id's row (the representative, the first other
id, is the only one that receives gradient), so checkpoints, val loss and samples all see the same model.
The rows are the head's: the token embedding's when tied (GPT-2), an untied head's own otherwise; an untied
model's input embedding is left as it is (the other ids are never looked up in training, as in a full run).
Ids that never occur in the training data are never targets in training; in held-out data such an id costs
``log U`` more than the shared class, which the loss adds, so val loss through this head is the full model's.

BENCHMARKS.md has the speed-up measured on tiny.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from gpt2_core.errors import UserError
from gpt2_core.loss import IGNORE_INDEX, cross_entropy
from gpt2_core.model import GPT
from gpt2_core.onednn_linear import OneDNNLinear, onednn_linear
from gpt2_data.batch_source import BatchSource


def source_token_ids(source: BatchSource) -> np.ndarray:
    """The distinct token ids a batch source can yield (``source.token_ids()``; ShardLoader and SFT's list them)."""
    ids = source.token_ids()
    if ids is None:
        raise UserError(
            "--train-vocab data needs a data source that can list its token ids (prepared shards or SFT "
            "examples); use --train-vocab full"
        )
    return np.asarray(ids, dtype=np.int64)


class DataVocabHead(torch.nn.Module):
    """``model`` whose training forward scores only ``ids`` and one row shared by all other ids.

    Generation (no targets) runs the full model, which the shared rows make equal to the trained one. Every
    optimizer step must be followed by :meth:`tie_others` (the trainer registers it as a step post-hook).
    """

    def __init__(self, model: GPT, ids: np.ndarray) -> None:
        super().__init__()
        self.model = model
        rows = model.config.padded_vocab_size
        weight = model.lm_head.weight
        seen = torch.zeros(rows, dtype=torch.bool)
        seen[torch.as_tensor(ids, dtype=torch.long)] = True
        others = torch.nonzero(~seen).squeeze(1)
        if len(others) == 0:
            raise UserError(
                "--train-vocab data: the training data uses every token id; use --train-vocab full"
            )
        kept = torch.nonzero(seen).squeeze(1)
        # Index in the training softmax of each id: its own row, or the last one (the shared row).
        lookup = torch.full((rows,), len(kept), dtype=torch.long)
        lookup[kept] = torch.arange(len(kept))
        bias = torch.zeros(len(kept) + 1)
        bias[-1] = math.log(len(others))
        device = weight.device
        self.register_buffer("rows", torch.cat([kept, others[:1]]).to(device), persistent=False)
        self.register_buffer("lookup", lookup.to(device), persistent=False)
        self.register_buffer("bias", bias.to(device), persistent=False)
        self.register_buffer("others", others.to(device), persistent=False)
        self.tie_others()

    @torch.no_grad()
    def tie_others(self) -> None:
        """Copy the shared row (the first other id's) to every other id's row of the head."""
        weight = self.model.lm_head.weight
        weight[self.others] = weight[self.others[0]].clone()

    def forward(
        self, idx: torch.Tensor, targets: torch.Tensor | None = None, *, ignore_index: int = IGNORE_INDEX
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``GPT.forward``'s contract; with targets, logits (B, T, kept ids + 1) over the training softmax."""
        if targets is None:
            return self.model(idx)
        h = self.model.hidden(idx)
        head = self.model.lm_head.weight[self.rows]
        # The head's product takes the route measured for the model's own head (gpt2_core.cpu_matmul).
        linear = onednn_linear if isinstance(self.model.lm_head, OneDNNLinear) else F.linear
        logits = linear(h, head, self.bias.to(h.dtype))
        counted = targets != ignore_index
        mapped = torch.where(counted, self.lookup[torch.where(counted, targets, 0)], ignore_index)
        loss = cross_entropy(logits.view(-1, logits.size(-1)), mapped.reshape(-1), ignore_index)
        # A target outside the training data's ids (held-out text) is one of the U others, each of which
        # has 1/U of the shared class's probability: log U more loss, as the full model gives it.
        others = (mapped == len(self.rows) - 1).sum()
        return logits, loss + self.bias[-1] * others / counted.sum().clamp(min=1)  # none counted: 0, not 0/0
