"""gpt2-serve: ``gpt2 serve``, an OpenAI-compatible HTTP API over one batched decoding loop."""

from importlib.metadata import version

__version__ = version("gpt2-serve")
