"""gpt2-data."""

from importlib.metadata import version

__version__ = version("gpt2-data")
