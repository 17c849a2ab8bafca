"""gpt2-sft."""

from importlib.metadata import version

__version__ = version("gpt2-sft")
