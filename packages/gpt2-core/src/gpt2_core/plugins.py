"""Finding plugins: a pluggy PluginManager fed by the ``gpt2`` entry-point group, and the registries
the ``register_*`` hooks fill.

Nothing is loaded at import time; the manager is built on first use and cached.
"""

from __future__ import annotations

import functools
import importlib
import importlib.metadata
import os
import sys
from collections.abc import Callable
from typing import Any

import pluggy

from gpt2_core import hookspecs

ENTRY_POINT_GROUP = "gpt2"
LOAD_PLUGINS_ENV = "GPT2_LOAD_PLUGINS"
"""Comma-separated allow-list of entry-point names to load; set but empty loads none."""


def _allowed() -> set[str] | None:
    value = os.environ.get(LOAD_PLUGINS_ENV)
    if value is None:
        return None
    return {name.strip() for name in value.split(",") if name.strip()}


@functools.cache
def get_plugin_manager() -> pluggy.PluginManager:
    """The process's plugin manager, with every ``gpt2`` entry point loaded.

    A plugin that fails to import is reported on stderr and skipped, so one broken third-party package
    cannot take the whole CLI down.
    """
    pm = pluggy.PluginManager("gpt2")
    pm.add_hookspecs(hookspecs)
    allowed = _allowed()
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        if (allowed is not None and ep.name not in allowed) or pm.get_plugin(ep.name) is not None:
            continue
        try:
            pm.register(ep.load(), name=ep.name)
        except Exception as e:  # a broken plugin must not break gpt2
            print(f"warning: plugin {ep.name!r} failed to load and is skipped: {e!r}", file=sys.stderr)
    return pm


def register_builtin(module: str, name: str) -> pluggy.PluginManager:
    """Register a package's built-ins, the hook implementations in module ``module`` (a dotted name), once, and
    return the manager.

    Each package calls this from the library functions that look its registrations up (datasets, loggers,
    optimizers, exporters, the host's commands), as llm registers its default plugins by dotted name: a
    package's built-ins are then found even when ``GPT2_LOAD_PLUGINS`` leaves its entry point out or its
    entry-point metadata is missing (a plain source checkout). Nothing is registered when the entry point
    ``name`` (whose module includes the built-ins) is already loaded. The module is imported by name, so the
    library module that looks registrations up and the built-ins module that imports it form no import circle.
    Third-party plugins still come only through entry points.
    """
    pm = get_plugin_manager()
    if pm.get_plugin(name) is None:
        plugin = importlib.import_module(module)
        if not pm.is_registered(plugin):
            pm.register(plugin, name=name)
    return pm


def plugin_versions() -> dict[str, str]:
    """Entry-point name -> version of the distribution that provides it."""
    out = {}
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        dist = getattr(ep, "dist", None)
        out[ep.name] = dist.version if dist is not None else "?"
    return out


def collect(hook: str, pm: pluggy.PluginManager | None = None) -> dict[str, Any]:
    """Call ``register_<hook>`` on every plugin and return name -> factory, refusing duplicate names."""
    pm = pm or get_plugin_manager()
    found: dict[str, Any] = {}

    def register(name: str, factory: Callable[..., Any]) -> None:
        if name in found:
            raise ValueError(f"two plugins register a {hook[:-1]} called {name!r}")
        found[name] = factory

    getattr(pm.hook, f"register_{hook}")(register=register)
    return found
