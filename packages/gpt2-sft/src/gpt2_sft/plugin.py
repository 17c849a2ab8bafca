"""gpt2-sft's implementations of the gpt2 hooks."""

from gpt2_core.hookspecs import hookimpl  # noqa: F401
