"""The fleet-level bandwidth report of one run or several (a sweep).

:func:`write_report` reads run folders (see docs/REPORT.md for the contract) and
writes one self-contained HTML page plus its tables beside it::

    report.html             the page (inline CSS and SVG; opens offline)
    report_strategies.csv   one row per (run, strategy), full precision
    report_strategies.md    the same, formatted, as a Markdown table
    report_rounds.csv       one row per (run, strategy, round)
"""

from __future__ import annotations

from pathlib import Path

from testbed.atomic import atomic_write_text

from testbed.report.runs import ReportError, RunData, load_run, load_runs
from testbed.report.tables import STRATEGY_COLUMNS, markdown_table, rounds_table, strategy_table

__all__ = [
    "ReportError",
    "RunData",
    "load_run",
    "load_runs",
    "report_files",
    "rounds_table",
    "strategy_table",
    "write_report",
]


def report_files(out_html: str | Path) -> dict[str, Path]:
    """The files :func:`write_report` writes for ``out_html``, by role."""
    out_html = Path(out_html)
    stem = out_html.with_suffix("")
    return {
        "html": out_html,
        "strategies_csv": stem.with_name(stem.name + "_strategies.csv"),
        "strategies_md": stem.with_name(stem.name + "_strategies.md"),
        "rounds_csv": stem.with_name(stem.name + "_rounds.csv"),
    }


def _write_text(path: Path, text: str) -> None:
    # A reader never sees half a file (the orchestrator rewrites the report at the end of
    # every run, possibly while the page is open).
    atomic_write_text(path, text)


def write_report(run_dirs, out_html: str | Path | None = None, labels: list[str] | None = None) -> Path:
    """Write the report of ``run_dirs`` (one folder or several) to ``out_html`` and the tables beside it.

    ``out_html`` defaults to ``report.html`` inside the run folder when there is one.
    ``labels`` name the runs (default: their folder names); with several runs every
    strategy is shown as ``run / strategy``. Returns the HTML path.
    """
    from testbed.report.html import render_page
    from testbed.report.plots import render_figures

    if isinstance(run_dirs, (str, Path)):
        run_dirs = [run_dirs]
    run_dirs = list(run_dirs)
    if out_html is None:
        if len(run_dirs) != 1:
            raise ReportError(f"{len(run_dirs)} run folders: say where the report goes")
        out_html = Path(run_dirs[0]) / "report.html"
    runs = load_runs(run_dirs, labels)
    table = strategy_table(runs)
    rounds = rounds_table(runs)
    files = report_files(out_html)
    files["html"].parent.mkdir(parents=True, exist_ok=True)
    _write_text(files["strategies_csv"], table.to_csv(index=False))
    _write_text(files["strategies_md"], markdown_table(table, STRATEGY_COLUMNS))
    _write_text(files["rounds_csv"], rounds.to_csv(index=False))
    listed = {
        files["strategies_csv"].name: "per strategy, full precision",
        files["strategies_md"].name: "per strategy, Markdown",
        files["rounds_csv"].name: "per strategy and round",
    }
    page = render_page(runs, table, render_figures(runs, table, rounds), listed)
    _write_text(files["html"], page)
    return files["html"]
