"""Typer options from config dataclasses: one flag per field, its attribute docstring as the help.

Commands take a config object instead of a long parameter list::

    @app.command()
    @dataclass_options(SamplingConfig, into="sampling", flags={"max_new_tokens": "--max-tokens"})
    def generate(sampling: SamplingConfig, model: Path = typer.Option(...)) -> None: ...

The parameter named ``into`` receives the built dataclass; the function's other parameters stay
ordinary Typer parameters, so decorators stack (one per config). Validation stays in the dataclass's
``__post_init__``.

A command whose config is layered (defaults < preset < TOML file < flags) passes ``given_only=True``:
``into`` then receives a dict of just the flags the user typed, and the command builds and validates the
merged config once. Building one from every flag's default first would validate a config nobody asked
for (``--epochs 0`` fails against the default ``--max-steps 0``, though the preset sets max_steps).
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import typing
from collections.abc import Callable, Sequence
from typing import Annotated, Any

import typer
from gpt2_core.dataclass_utils import field_docs
from typer.core import TyperCommand

SUPPORTED = (int, float, str, bool)
CONTEXT = "_dataclass_options_ctx"
"""The hidden parameter through which a ``given_only`` wrapper receives Typer's context."""
ENCODING_ERRORS_HELP = (
    "replace: bytes of the {source} that are not UTF-8 are read as U+FFFD, with a warning; strict: an error."
)


def _cli_type(tp: Any) -> Any | None:
    """The type Typer should parse for a field, or None when the field cannot be a flag (dicts...)."""
    origin = typing.get_origin(tp)
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    if tp in SUPPORTED:
        return tp
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)) and len(args) == 1:
        inner = _cli_type(args[0])
        return inner if inner is None else typing.Optional[inner]  # noqa: UP045 (Typer needs Optional)
    if origin is list and args and args[0] in SUPPORTED:
        return list[args[0]]
    return None


def dataclass_options(
    cls: type | Sequence[tuple[type, str]],
    *,
    into: str,
    flags: dict[str, str] | None = None,
    exclude: Sequence[str] = (),
    panel: str | None = None,
    given_only: bool = False,
    defaults: dict[str, Any] | None = None,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator adding one Typer option per field of ``cls`` (renamed by ``flags``, minus ``exclude``), in
    ``--help`` under the heading ``panel`` (None: "Options"); ``defaults`` replaces fields' defaults, by
    field name.

    ``into`` receives ``cls`` built from every option's value, or with ``given_only`` a dict of the
    options typed on the command line (or set from the environment), by field name. With ``given_only``,
    ``cls`` may be several dataclasses, each with its heading: ``[(AdamWOptions, "Optimizer adamw"), ...]``
    (a field two of them have is one flag, under the first's heading).
    """
    flags = flags or {}
    defaults = defaults or {}
    groups = [(cls, panel)] if isinstance(cls, type) else list(cls)
    if len(groups) != 1 and not given_only:
        raise TypeError("dataclass_options: several dataclasses need given_only=True")

    def decorate(func: Callable[..., Any]) -> Callable[..., Any]:
        sig = inspect.signature(func)
        resolved = typing.get_type_hints(func, include_extras=True)
        own = [
            p.replace(annotation=resolved.get(p.name, p.annotation))
            for p in sig.parameters.values()
            if p.name != into
        ]
        taken = {p.name for p in own}
        extra: list[inspect.Parameter] = []
        names: list[str] = []
        for group, heading in groups:
            hints, docs = typing.get_type_hints(group), field_docs(group)
            for f in dataclasses.fields(group):
                tp = _cli_type(hints[f.name])
                if f.name in exclude or tp is None or f.name in taken or f.name in names:
                    continue
                if f.name in defaults:
                    default = defaults[f.name]
                elif f.default is not dataclasses.MISSING:
                    default = f.default
                elif f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
                    default = f.default_factory()  # type: ignore[misc]
                    default = None if default == [] else default
                else:
                    default = ...
                flag = flags.get(f.name, "--" + f.name.replace("_", "-"))
                is_flag = tp is bool or tp == typing.Optional[bool]  # noqa: UP045 (Optional: None = unset)
                decls = [f"{flag}/--no-{flag[2:]}"] if is_flag else [flag]
                option = typer.Option(
                    *decls, help=docs.get(f.name, ""), rich_help_panel=heading, show_default=True
                )
                extra.append(
                    inspect.Parameter(
                        f.name,
                        inspect.Parameter.KEYWORD_ONLY,
                        default=default,
                        annotation=Annotated[tp, option],
                    )
                )
                names.append(f.name)

        # Typer hands its context to one parameter only: the command's own, if it has one.
        ctx_name = next((p.name for p in own if p.annotation is typer.Context), None)
        if given_only and ctx_name is None:
            extra.append(inspect.Parameter(CONTEXT, inspect.Parameter.KEYWORD_ONLY, annotation=typer.Context))

        @functools.wraps(func)
        def wrapper(**kwargs: Any) -> Any:
            values = {n: kwargs.pop(n) for n in names}
            if given_only:
                ctx = kwargs[ctx_name] if ctx_name else kwargs.pop(CONTEXT)
                # By name: Typer ships its own copy of click, with its own ParameterSource enum.
                typed = ("COMMANDLINE", "ENVIRONMENT")
                given = {n: v for n, v in values.items() if ctx.get_parameter_source(n).name in typed}
                return func(**kwargs, **{into: given})
            for f in dataclasses.fields(groups[0][0]):
                if (
                    f.name in values
                    and values[f.name] is None
                    and f.default_factory is not dataclasses.MISSING
                ):  # type: ignore[misc]
                    values[f.name] = f.default_factory()  # type: ignore[misc]
            return func(**kwargs, **{into: groups[0][0](**values)})

        params = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in own] + extra
        wrapper.__signature__ = sig.replace(parameters=params)  # type: ignore[attr-defined]
        # Typer resolves annotations in the wrapper's module: hand it resolved ones.
        wrapper.__annotations__ = {p.name: p.annotation for p in params}
        del wrapper.__wrapped__  # Typer must see the new signature, not the original
        return wrapper

    return decorate


class SectionedCommand(TyperCommand):
    """A command whose ``--help`` lists its options under their ``panel`` headings (Typer draws those only in
    its rich help, which this CLI turns off): "Arguments", "Options", then each heading in the order it
    appears."""

    def format_options(self, ctx: Any, formatter: Any) -> None:
        sections: dict[str | None, list[tuple[str, str]]] = {"Arguments": [], None: []}
        for param in self.get_params(ctx):
            record = param.get_help_record(ctx)
            if record is not None:
                argument = param.param_type_name == "argument"
                heading = "Arguments" if argument else getattr(param, "rich_help_panel", None)
                sections.setdefault(heading, []).append(record)
        for heading, records in sections.items():
            if records:
                with formatter.section(heading or "Options"):
                    formatter.write_dl(records)


def runtime_options(func: Callable[..., Any], **defaults: Any) -> Callable[..., Any]:
    """Decorator giving an inference command (generate, chat, serve, the evals) ``--device``, ``--dtype``,
    ``--threads``, ``--cpu-matmul`` and ``--quantize``, passed as its ``runtime`` parameter (a
    ``gpt2_core.runtime.RuntimeConfig``); ``defaults``: the command's own defaults for some of them."""
    from gpt2_core.runtime import RuntimeConfig

    return dataclass_options(RuntimeConfig, into="runtime", defaults=defaults)(func)
