"""Our models as an lm-evaluation-harness model: ``GPT2LM``, registered with lm-eval as ``gpt2-toolkit``.

It subclasses lm-eval's ``TemplateLM``, the base of lm-eval's own Hugging Face model (``hf``), so context and
continuation are split into tokens by the same code (``TemplateLM._encode_pair``: trailing spaces of the
context move to the continuation, the whole string is encoded and the context's tokens cut off); our
tokenizer gives the ids Hugging Face's GPT-2 tokenizer gives (special-token text such as ``<|endoftext|>`` is
the special token in both). The rest follows ``hf`` too:

- ``loglikelihood``: ``(context + continuation)[-(block_size + 1):][:-1]`` is fed, the continuation's tokens
  scored from the log-softmax over the real vocabulary (not its padding rows); requests sorted longest first
  and batched ``batch_size`` at a time (right-padded: causal attention keeps padding out of real positions).
  Unlike ``hf``, the head runs only at the positions that predict a continuation token.
- ``loglikelihood_rolling``: lm-eval's own rolling windows of ``block_size`` tokens (``get_rolling_token_windows``
  with one token of context, ``make_disjoint_window``), their log-likelihoods summed.
- ``generate_until``: the context's last ``block_size - max_gen_toks`` tokens, then our KV-cached generation
  (greedy unless the task asks to sample) until ``<|endoftext|>``, a stop string or ``max_gen_toks``; the text is
  cut at the first stop string.
- At the context's edge both refuse, as ``hf`` does (it asserts): a ``max_gen_toks`` that leaves no token of
  prompt, and a continuation longer than the context (a ``UserError`` naming the task and the lengths).

Requires lm-eval (``pip install 'gpt2-eval[lm-eval]'``): import this module only where it is needed.
"""

from __future__ import annotations

from typing import Any

import lm_eval.models  # noqa: F401  (lm-eval registers its own models lazily, unless the registry is empty)
import torch
from gpt2_core.errors import UserError
from gpt2_core.generation import generate_ids
from gpt2_core.llm import LLM
from gpt2_core.sampling import SamplingConfig
from gpt2_core.tokenizer import EOT_TOKEN
from lm_eval import utils
from lm_eval.api.model import TemplateLM
from lm_eval.api.registry import register_model
from tqdm import tqdm

NAME = "gpt2-toolkit"
"""The name lm-eval knows this model by: ``simple_evaluate(model="gpt2-toolkit", model_args="pretrained=DIR")``."""


def cut_at_stop(text: str, stops: list[str]) -> tuple[str, bool]:
    """``text`` up to the first of ``stops`` found in it, and whether one was."""
    cut = min((i for i in (text.find(s) for s in stops if s) if i >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)


@register_model(NAME)
class GPT2LM(TemplateLM):
    """A gpt2 model directory (ours, a checkpoint, a sharded checkpoint, an SFT model, or an HF GPT-2) for lm-eval,
    loaded through ``gpt2_core.LLM``.

    ``pretrained``: the directory; ``device``, ``dtype``, ``quantize``, ``threads``, ``cpu_matmul``: as the
    inference commands' flags (``gpt2_core.runtime.RuntimeConfig``; the weights are cast to ``dtype``, as
    ``hf``'s ``dtype`` does; torch's own products unless ``cpu_matmul`` says otherwise, as ``hf`` runs);
    ``batch_size``: requests per forward pass; ``max_gen_toks``: the default length of ``generate_until``
    (256, as ``hf``). ``UserError`` naming the flag for a value this machine cannot run.
    """

    def __init__(
        self,
        pretrained: str,
        device: str = "cpu",
        dtype: str = "float32",
        batch_size: int | str = 1,
        max_gen_toks: int = 256,
        quantize: str = "none",
        threads: int = 0,
        cpu_matmul: str = "torch",
        **kwargs: Any,
    ) -> None:
        super().__init__()
        self.batch_size = max(1, int(batch_size)) if str(batch_size) != "auto" else 16
        llm = LLM.load(
            pretrained,
            device=device,
            dtype=dtype,
            quantize=quantize,
            threads=int(threads),
            cpu_matmul=cpu_matmul,
            batch_sizes=self.batch_size,
        )
        self.model, self.tok = llm.model, llm.tokenizer
        self._device = next(self.model.parameters()).device
        self._max_gen_toks = int(max_gen_toks)
        self._task_of: dict[Any, str | None] = {}

    @property
    def eot_token_id(self) -> int:
        return self.tok.eot_id

    @property
    def max_length(self) -> int:
        return self.model.config.block_size

    @property
    def device(self) -> torch.device:
        return self._device

    def tok_encode(self, string: str, add_special_tokens: bool | None = None, **kwargs: Any) -> list[int]:
        # GPT-2 adds no BOS, whatever add_special_tokens says (as its Hugging Face tokenizer).
        return self.tok.encode(string, allow_special=True)

    def tok_decode(self, tokens: list[int]) -> str:
        return self.tok.decode(tokens)

    # --- scoring ---

    def loglikelihood(self, requests: list[Any], disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        """``TemplateLM.loglikelihood``, noting each request's task for the error at the context's edge."""
        self._task_of = {req.args: req.task_name for req in requests}
        return super().loglikelihood(requests, disable_tqdm=disable_tqdm)

    @torch.inference_mode()
    def _loglikelihood_tokens(
        self, requests: list[tuple[Any, list[int], list[int]]], disable_tqdm: bool = False, **kwargs: Any
    ) -> list[tuple[float, bool]]:
        """(sum of the continuation's log-probabilities, whether it is the greedy continuation) per request."""
        for key, _, continuation in requests:
            # Longer than the window, its first tokens would be read at positions the window has dropped.
            if len(continuation) > self.max_length:
                raise UserError(
                    f"lm-eval task {self._task_of.get(key)}: a continuation of {len(continuation)} tokens "
                    f"does not fit this model's {self.max_length}-token context"
                )
        order = sorted(range(len(requests)), key=lambda i: -len(requests[i][1]) - len(requests[i][2]))
        results: list[tuple[float, bool] | None] = [None] * len(requests)
        vocab = self.model.config.vocab_size
        for start in tqdm(range(0, len(order), self.batch_size), disable=disable_tqdm, desc="loglikelihood"):
            chunk = order[start : start + self.batch_size]
            inputs = [(requests[i][1] + requests[i][2])[-(self.max_length + 1) :][:-1] for i in chunk]
            width = max(len(x) for x in inputs)
            batch = torch.full((len(chunk), width), self.eot_token_id, dtype=torch.long)
            for row, x in enumerate(inputs):
                batch[row, : len(x)] = torch.tensor(x)
            hidden = self.model.hidden(batch.to(self._device))  # (B, T, n_embd)
            # The head only where a continuation token is predicted: most positions are context, and the
            # head (n_embd x vocabulary) costs as much per position as the whole of GPT-2 small's blocks.
            rows = [row for row, i in enumerate(chunk) for _ in requests[i][2]]
            cols = [
                p
                for row, i in enumerate(chunk)
                for p in range(len(inputs[row]) - len(requests[i][2]), len(inputs[row]))
            ]
            logits = self.model.lm_head(hidden[rows, cols])[:, :vocab]  # (continuation tokens, vocab)
            logprobs = logits.float().log_softmax(dim=-1)
            targets = torch.tensor([t for i in chunk for t in requests[i][2]], device=logprobs.device)
            picked = logprobs.gather(1, targets[:, None]).squeeze(1)
            hits = logprobs.argmax(dim=-1) == targets
            start = 0
            for i in chunk:
                n = len(requests[i][2])
                results[i] = (float(picked[start : start + n].sum()), bool(hits[start : start + n].all()))
                start += n
        return results  # type: ignore[return-value]

    def loglikelihood_rolling(self, requests: list[Any], disable_tqdm: bool = False) -> list[float]:
        """Log-likelihood of each whole text, scored in windows of the model's context."""
        windows, owners = [], []
        for n, (text,) in enumerate(req.args for req in requests):
            for window in utils.get_rolling_token_windows(
                token_list=self.tok_encode(text),
                prefix_token=self.prefix_token_id,
                max_seq_len=self.max_length,
                context_len=1,
            ):
                windows.append((None, *utils.make_disjoint_window(window)))
                owners.append(n)
        totals = [0.0] * len(requests)
        for n, (logprob, _) in zip(owners, self._loglikelihood_tokens(windows, disable_tqdm=disable_tqdm)):
            totals[n] += logprob
        return totals

    # --- generation ---

    def generate_until(self, requests: list[Any], disable_tqdm: bool = False) -> list[str]:
        """The continuation of each context, cut at the first of the task's stop strings (``until``)."""
        out = []
        for req in tqdm(requests, disable=disable_tqdm, desc="generate"):
            context, gen_kwargs = req.args
            kwargs = dict(gen_kwargs)
            until = kwargs.pop("until", None) or []
            until = [until] if isinstance(until, str) else list(until)
            max_new = int(kwargs.pop("max_gen_toks", self._max_gen_toks))
            if max_new >= self.max_length:  # no token of prompt would be left: every answer from nothing
                raise UserError(
                    f"lm-eval task {req.task_name}: max_gen_toks {max_new} leaves no room for the prompt in "
                    f"this model's {self.max_length}-token context (set it below {self.max_length} in the "
                    "task's generation_kwargs)"
                )
            temperature = float(kwargs.pop("temperature", 0.0))
            if not kwargs.pop("do_sample", False):
                temperature = 0.0
            cfg = SamplingConfig(
                max_new_tokens=max_new,
                temperature=temperature,
                top_k=int(kwargs.pop("top_k", 0) or 0),
                top_p=float(kwargs.pop("top_p", 1.0) or 1.0),
                stop=[*until, EOT_TOKEN],  # lm-eval adds the end-of-text string to every task's stops
            )
            prompt = self.tok_encode(context)[-(self.max_length - max_new) :]
            tokens: list[int] = []
            for step in generate_ids(self.model, prompt, cfg, eot_id=self.eot_token_id):
                t = int(step[0])
                if t == self.eot_token_id:
                    break
                tokens.append(t)
                # A stop string ends the text; it may span tokens, so look at the recent ones.
                if cut_at_stop(self.tok_decode(tokens[-64:]), cfg.stop)[1]:
                    break
            out.append(cut_at_stop(self.tok_decode(tokens), cfg.stop)[0])
        return out
