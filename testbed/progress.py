"""The one progress display of the testbed (rich, on stderr): training bars and the fleet's rounds."""

from __future__ import annotations


def console():
    from rich.console import Console

    return Console(stderr=True)


def progress_bar(fields: str):
    """A rich Progress with the project's columns: description, bar, done/total, elapsed, time
    remaining, then ``fields`` (a format string over the task's fields, e.g. ``"loss {task.fields[loss]:.4f}"``)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    return Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        TimeRemainingColumn(), TextColumn(fields), console=console(),
    )
