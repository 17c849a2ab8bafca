"""gpt2-cli: the ``gpt2`` command. Every command comes from a plugin (this package's own included)."""

from importlib.metadata import version

__version__ = version("gpt2-cli")
