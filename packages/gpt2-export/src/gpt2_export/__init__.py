"""gpt2-export."""

from importlib.metadata import version

__version__ = version("gpt2-export")
