"""What every config dataclass shares: field documentation, and building one from a dict or TOML file.

Each concern has its own dataclass (``GPTConfig``, ``SamplingConfig``, ``DataConfig``, ``TrainConfig``,
...) whose attribute docstrings are its documentation; the CLI turns them into ``--help`` text.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import inspect
import sys
import textwrap
from pathlib import Path
from typing import Any, TypeVar

from gpt2_core.errors import UserError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

T = TypeVar("T")


@functools.cache
def field_docs(cls: type) -> dict[str, str]:
    """Attribute docstrings of a dataclass (the string literal right after each field), by field name."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        try:
            tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
        except (OSError, TypeError):
            continue
        body = tree.body[0].body  # type: ignore[attr-defined]
        for node, nxt in zip(body, body[1:]):
            if (
                isinstance(node, ast.AnnAssign)
                and isinstance(node.target, ast.Name)
                and isinstance(nxt, ast.Expr)
                and isinstance(nxt.value, ast.Constant)
                and isinstance(nxt.value.value, str)
            ):
                docs[node.target.id] = " ".join(nxt.value.value.split())
    return docs


def from_dict(cls: type[T], values: dict[str, Any], source: str) -> T:
    """Build dataclass ``cls`` from ``values``, naming ``source`` in the error for an unknown key."""
    known = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(values) - known)
    if unknown:
        raise UserError(
            f"{source}: unknown option(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
        )
    try:
        return cls(**values)
    except TypeError as e:
        raise UserError(f"{source}: {e}") from e


def read_toml(path: str | Path) -> dict[str, Any]:
    """A TOML file as a dict, with a one-line error naming the file when it is missing or malformed."""
    p = Path(path)
    try:
        with p.open("rb") as f:
            return tomllib.load(f)
    except FileNotFoundError as e:
        raise UserError(f"{p}: config file not found") from e
    except tomllib.TOMLDecodeError as e:
        raise UserError(f"{p}: invalid TOML ({e})") from e
