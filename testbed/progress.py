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


def _duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def fleet_rate(done: int, round_devices: int, rounds_after: int, elapsed_s: float) -> str:
    """Devices per second in the round so far, and the time left in the round and in the run at
    that rate (the rounds after this one taken as large as this one)."""
    if done <= 0 or elapsed_s <= 0:
        return "- devices/s"
    rate = done / elapsed_s
    left = round_devices - done
    return (f"{rate:.1f} devices/s, round ETA {_duration(left / rate)}, "
            f"run ETA {_duration((left + rounds_after * round_devices) / rate)}")
