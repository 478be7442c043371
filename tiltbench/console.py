"""CLI-only rich helpers: a stderr console, a progress-callback factory, tables. Library code never prints."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from rich import box
from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    TaskID,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

err_console = Console(stderr=True)
out_console = Console()


@contextmanager
def progress_bar(enabled: bool = True) -> Iterator:
    """Yields a `progress(description, completed, total)` callback drawing one live rich bar on stderr (or None).

    One bar for the whole command: callers report overall progress (completed may be fractional), and each
    call updates the same bar, so a sweep of many rows never leaves a stack of frozen bars behind."""
    if not enabled:
        yield None
        return
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
    )
    bar = Progress(*columns, console=err_console)
    task: list[TaskID] = []

    def update(description: str, completed: float, total: float) -> None:
        if not task:
            bar.start()  # lazily: an error before the first step prints only its own line
            task.append(bar.add_task(description, total=total))
        bar.update(task[0], description=description, completed=completed, total=total)

    try:
        yield update
    finally:
        if task:
            bar.stop()


def table(title: str, headers: Sequence[str], rows: Sequence[Sequence[object]], caption: str | None = None) -> Table:
    # A light box (a rule under the header, no vertical bars) keeps a 9-column results table within 80 columns.
    result = Table(
        title=title,
        title_justify="left",
        caption=caption,
        caption_justify="left",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        collapse_padding=True,
    )
    for i, header in enumerate(headers):
        result.add_column(header, justify="left" if i == 0 else "right", no_wrap=True)
    for row in rows:
        result.add_row(*(f"{v:.4g}" if isinstance(v, float) else str(v) for v in row))
    return result
