"""Waiting in tests on a condition, with a generous deadline, never on a fixed sleep.

A test that sleeps a fixed time and then asserts passes on an idle machine and fails on a busy one; one that
polls the condition until a deadline passes on both, and fails (with what it saw) only when the state never
comes. Importable from every test (the root ``tests/`` is on pytest's ``pythonpath``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

DEADLINE = 120.0
"""Seconds a condition may take to hold: minutes on a loaded 2-core machine is slow, not broken."""
POLL = 0.02


def wait_until(probe: Callable[[], T], what: str, timeout: float = DEADLINE) -> T:
    """Call ``probe`` until it returns something truthy, and return that; ``AssertionError`` naming ``what``
    (and the last value seen) when ``timeout`` seconds pass first."""
    deadline = time.monotonic() + timeout
    while not (value := probe()):
        assert time.monotonic() < deadline, f"waited {timeout:.0f} s for {what}; last saw {value!r}"
        time.sleep(POLL)
    return value


async def wait_until_async(probe: Callable[[], T], what: str, timeout: float = DEADLINE) -> T:
    """:func:`wait_until` inside an event loop: yields to the loop between probes."""
    deadline = time.monotonic() + timeout
    while not (value := probe()):
        assert time.monotonic() < deadline, f"waited {timeout:.0f} s for {what}; last saw {value!r}"
        await asyncio.sleep(POLL)
    return value
