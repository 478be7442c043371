"""CLI-only rich helpers: a stderr console, a progress-callback factory, tables. Library code never prints."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

err_console = Console(stderr=True)
out_console = Console()


@contextmanager
def progress_bar(enabled: bool = True) -> Iterator:
    """Yields a `progress(description, completed, total)` callback drawing a rich bar on stderr (or None)."""
    if not enabled:
        yield None
        return
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
    )
    bar = Progress(*columns, console=err_console)
    tasks: dict[str, int] = {}

    def update(description: str, completed: int, total: int) -> None:
        if not tasks:
            bar.start()  # lazily: an error before the first step prints only its own line
        key = description.split(" loss ")[0].split(" tilt rate")[0]
        if key not in tasks:
            tasks[key] = bar.add_task(description, total=total)
        bar.update(tasks[key], description=description, completed=completed, total=total)

    try:
        yield update
    finally:
        if tasks:
            bar.stop()


def table(title: str, headers: Sequence[str], rows: Sequence[Sequence[object]], caption: str | None = None) -> Table:
    result = Table(title=title, title_justify="left", caption=caption, caption_justify="left")
    for i, header in enumerate(headers):
        result.add_column(header, justify="left" if i == 0 else "right")
    for row in rows:
        result.add_row(*(f"{v:.4g}" if isinstance(v, float) else str(v) for v in row))
    return result


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(f"{v:.4g}" if isinstance(v, float) else str(v) for v in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"
