"""gpt2-train."""

from importlib.metadata import version

__version__ = version("gpt2-train")
