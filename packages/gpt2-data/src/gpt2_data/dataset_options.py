"""A dataset's options from a command line's extra arguments: ``--field value`` per field of its ``Options``.

Dataset options are not fixed flags: each dataset declares its own ``Options`` dataclass, so a command that
takes a ``--dataset`` (``gpt2 data prepare``, ``gpt2 sft``) accepts the chosen dataset's fields as extra
arguments and checks them against that dataclass here.
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Any

from gpt2_core.errors import UserError

_TRUE, _FALSE = {"1", "true", "yes", "on"}, {"0", "false", "no", "off"}


def _parse(value: str, tp: Any, flag: str) -> Any:
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    if args and typing.get_origin(tp) is not list:  # Optional[X]
        tp = args[0]
    try:
        if tp is bool:
            if value.lower() not in _TRUE | _FALSE:
                raise ValueError(value)
            return value.lower() in _TRUE
        return tp(value) if tp in (int, float, str) else value
    except ValueError as e:
        raise UserError(f"{flag}: {value!r} is not a valid {getattr(tp, '__name__', tp)}") from e


def parse_dataset_options(dataset: str, args: list[str]) -> dict[str, Any]:
    """``['--text-field', 'body', '--no-include-topics']`` -> ``{'text_field': 'body', 'include_topics': False}``."""
    from gpt2_data.datasets import get_dataset_class

    options_cls = get_dataset_class(dataset).Options
    hints = typing.get_type_hints(options_cls)
    fields = {f.name.replace("_", "-"): f.name for f in dataclasses.fields(options_cls)}
    known = ", ".join(f"--{k}" for k in fields) or "none"
    out: dict[str, Any] = {}
    i = 0
    while i < len(args):
        arg = args[i]
        if not arg.startswith("--"):
            raise UserError(
                f"unexpected argument {arg!r}; dataset options are --name value ({dataset}: {known})"
            )
        key, eq, value = arg[2:].partition("=")
        negated = not eq and key.startswith("no-") and key[3:] in fields and hints[fields[key[3:]]] is bool
        name = fields.get(key[3:] if negated else key)
        if name is None:
            raise UserError(
                f"dataset {dataset!r} has no option --{key}; its options: {known} (gpt2 data list)"
            )
        if hints[name] is bool and not eq:
            out[name] = not negated
        else:
            if not eq:
                if i + 1 >= len(args):
                    raise UserError(f"--{key} needs a value")
                i += 1
                value = args[i]
            out[name] = _parse(value, hints[name], f"--{key}")
        i += 1
    return out
