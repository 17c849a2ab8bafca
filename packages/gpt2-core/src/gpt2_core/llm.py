"""One inference handle, in the shape of litgpt's ``LLM.load``: the model, its tokenizer, its chat template and
the kernel choice, loaded once, with ``generate``, ``stream`` and ``chat``::

    llm = LLM.load("runs/tiny/latest", quantize="int8")
    print(llm.generate("Hello", SamplingConfig(max_new_tokens=20))[0])

``LLM.load`` takes what the inference commands' ``--device``, ``--dtype``, ``--quantize``, ``--threads`` and
``--cpu-matmul`` take (``gpt2_core.runtime.RuntimeConfig``), so a flag means the same in every command.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from gpt2_core.runtime import RuntimeConfig

if TYPE_CHECKING:
    from gpt2_core.chat import ChatSampling, ChatSession
    from gpt2_core.chat_template import ChatTemplate
    from gpt2_core.cpu_matmul import Choice
    from gpt2_core.model import GPT
    from gpt2_core.sampling import SamplingConfig
    from gpt2_core.tokenizer import Tokenizer


@dataclass
class LLM:
    """A model ready for inference and what it needs to read and write text."""

    model: GPT
    """In eval mode, on its device and dtype, int8-swapped when loaded with ``quantize="int8"``."""
    tokenizer: Tokenizer
    """GPT-2's BPE with the model's special tokens."""
    template: ChatTemplate | None
    """The chat template of an SFT model, None for a base model."""
    choice: Choice
    """The route of the fp32 CPU products (``gpt2_core.cpu_matmul``), printed as e.g. ``torch (asked)``."""
    runtime: RuntimeConfig
    """How it was loaded (the defaults for a model handed to :meth:`from_model`)."""

    @classmethod
    def load(
        cls,
        path: str | os.PathLike[str],
        device: str = "auto",
        dtype: str = "auto",
        quantize: str = "none",
        threads: int = 0,
        cpu_matmul: str = "auto",
        batch_sizes: int | Sequence[int] = 1,
    ) -> LLM:
        """Load model directory ``path`` (ours, a checkpoint, or Hugging Face GPT-2) for inference.

        ``batch_sizes``: the batch sizes it will decode (the CPU route is timed for them). ``UserError`` naming the
        flag for a device, dtype, quantization or route this machine cannot run, or the path when it holds
        no model.
        """
        runtime = RuntimeConfig(
            device=device, dtype=dtype, threads=threads, cpu_matmul=cpu_matmul, quantize=quantize
        )
        return cls.from_runtime(path, runtime, batch_sizes)

    @classmethod
    def from_runtime(
        cls, path: str | os.PathLike[str], runtime: RuntimeConfig, batch_sizes: int | Sequence[int] = 1
    ) -> LLM:
        """:meth:`load` with the commands' ``RuntimeConfig``: torch's CPU threads set, the model on its device in
        its dtype, in eval mode, its Linear layers swapped for int8 ones when ``runtime.quantize`` says so
        (``gpt2_core.quantize``), else its fp32 CPU products routed for batches of ``batch_sizes``
        (``gpt2_core.cpu_matmul.apply``; after the threads are set, since the timing depends on them)."""
        import torch

        from gpt2_core import quantize
        from gpt2_core.cpu_matmul import apply, check_mode
        from gpt2_core.device import pick_device, pick_dtype
        from gpt2_core.model import GPT

        check_mode(runtime.cpu_matmul)
        quantize.check_mode(runtime.quantize)
        if runtime.threads:
            torch.set_num_threads(runtime.threads)
        where = pick_device(runtime.device)
        model = GPT.from_pretrained(path, device=where, dtype=pick_dtype(runtime.dtype, where)).eval()
        if runtime.quantize == "int8":
            quantize.quantize_int8(model)  # no nn.Linear left: the route below is moot and says so
        return cls.from_model(model, apply(model, runtime.cpu_matmul, rows=batch_sizes), runtime)

    @classmethod
    def from_model(
        cls, model: GPT, choice: Choice | None = None, runtime: RuntimeConfig | None = None
    ) -> LLM:
        """The handle around ``model``, already built (tests, a notebook): its tokenizer and chat template read
        from its config. ``choice`` defaults to torch's own products, ``runtime`` to the defaults."""
        from gpt2_core.chat_template import ChatTemplate
        from gpt2_core.cpu_matmul import Choice
        from gpt2_core.tokenizer import Tokenizer

        template = ChatTemplate.for_model(model)
        tokenizer = template.tokenizer if template else Tokenizer.for_config(model.config)
        return cls(
            model=model.eval(),
            tokenizer=tokenizer,
            template=template,
            choice=choice or Choice("torch", "not routed"),
            runtime=runtime or RuntimeConfig(),
        )

    @property
    def stop_ids(self) -> tuple[int, ...]:
        """Where a completion ends besides ``<|endoftext|>``: a chat model's end-of-turn marker, so a plain
        completion stops there rather than print it and the turns the model goes on to invent."""
        return (self.template.end_id,) if self.template else ()

    def generate(self, prompt: str, sampling: SamplingConfig | None = None) -> list[str]:
        """The completions (new text only) of ``prompt``, one per ``sampling.num_return_sequences``."""
        from gpt2_core.generation import generate
        from gpt2_core.sampling import SamplingConfig

        return generate(
            self.model, self.tokenizer, prompt, sampling or SamplingConfig(), stop_ids=self.stop_ids
        )

    def stream(self, prompt: str, sampling: SamplingConfig | None = None) -> Iterator[str]:
        """The completion of ``prompt`` piece by piece (whole characters; stop strings held back)."""
        from gpt2_core.generation import stream
        from gpt2_core.sampling import SamplingConfig

        return stream(
            self.model, self.tokenizer, prompt, sampling or SamplingConfig(), stop_ids=self.stop_ids
        )

    def chat(self, system: str | None = None, sampling: ChatSampling | None = None) -> ChatSession:
        """A conversation with this model (``gpt2_core.chat.ChatSession``), its KV cache kept across turns."""
        from gpt2_core.chat import ChatSession

        return ChatSession(self.model, system=system, sampling=sampling)
