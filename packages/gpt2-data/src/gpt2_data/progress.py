"""The progress line of ``gpt2 data prepare``."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator


@contextlib.contextmanager
def progress_bar(enabled: bool, description: str, total: int | None) -> Iterator[Callable[..., None]]:
    """A rich progress line, updated through the function it yields; when off, not even rich is imported."""
    if not enabled:
        yield lambda **fields: None
        return
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    columns = [
        SpinnerColumn(),
        TextColumn("[bold]{task.description}"),
        TextColumn(
            "{task.fields[docs]:,} docs  {task.completed:,.0f} tokens  {task.fields[rate]}  {task.fields[shards]} shards"
        ),
        TimeElapsedColumn(),
    ]
    with Progress(*columns, transient=False) as bar:
        task = bar.add_task(description, total=total, docs=0, rate="", shards=0)
        yield lambda **fields: bar.update(task, **fields)
