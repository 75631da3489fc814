"""The fleet-level bandwidth report of one run or several (a sweep).

:func:`write_report` reads run folders (see docs/REPORT.md) and writes one
self-contained HTML page plus its tables beside it::

    report.html               the page (inline CSS and SVG; opens offline)
    report_strategies.csv     one row per (run, strategy), full precision
    report_strategies.md      the same, formatted, as a Markdown table
    report_transfers.csv      one row per (run, strategy, transfer): the traffic
    report_measurements.csv   one row per (run, strategy, scenario measurement)
    report_rounds.csv         one row per (run, strategy, round)

The names below are imported when first used, so that a scenario module can
register a figure (:mod:`testbed.report.figures`) without loading pandas.
"""

from __future__ import annotations

import importlib
from pathlib import Path

_EXPORTS = {
    "ReportError": "testbed.report.runs",
    "RunData": "testbed.report.runs",
    "load_run": "testbed.report.runs",
    "load_runs": "testbed.report.runs",
    "Report": "testbed.report.tables",
    "rounds_table": "testbed.report.tables",
    "strategy_table": "testbed.report.tables",
    "transfer_table": "testbed.report.tables",
    "measurement_table": "testbed.report.tables",
    "figure": "testbed.report.figures",
}

__all__ = [*_EXPORTS, "report_files", "write_report"]

# role -> (file name suffix, what it holds: the page lists them)
FILES = {
    "strategies_csv": ("_strategies.csv", "per strategy, full precision"),
    "strategies_md": ("_strategies.md", "per strategy, Markdown"),
    "transfers_csv": ("_transfers.csv", "per strategy and transfer"),
    "measurements_csv": ("_measurements.csv", "per strategy and measurement"),
    "rounds_csv": ("_rounds.csv", "per strategy and round"),
}


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def report_files(out_html: str | Path) -> dict[str, Path]:
    """The files :func:`write_report` writes for ``out_html``, by role."""
    out_html = Path(out_html)
    stem = out_html.with_suffix("").name
    return {"html": out_html, **{role: out_html.with_name(stem + suffix) for role, (suffix, _) in FILES.items()}}


def write_report(run_dirs, out_html: str | Path | None = None, labels: list[str] | None = None) -> Path:
    """Write the report of ``run_dirs`` (one folder or several) to ``out_html`` and the tables beside it.

    ``out_html`` defaults to ``report.html`` inside the run folder when there is one.
    ``labels`` name the runs (default: their folder names); with several runs every
    strategy is shown as ``run / strategy``. Returns the HTML path.
    """
    from testbed.atomic import atomic_write_text
    from testbed.report.figures import render_figures
    from testbed.report.html import render_page
    from testbed.report.runs import ReportError, load_runs
    from testbed.report.tables import STRATEGY_COLUMNS, Report, markdown_table

    if isinstance(run_dirs, (str, Path)):
        run_dirs = [run_dirs]
    run_dirs = list(run_dirs)
    if out_html is None:
        if len(run_dirs) != 1:
            raise ReportError(f"{len(run_dirs)} run folders: say where the report goes")
        out_html = Path(run_dirs[0]) / "report.html"
    report = Report.of(load_runs(run_dirs, labels))
    files = report_files(out_html)
    files["html"].parent.mkdir(parents=True, exist_ok=True)
    # Each file is replaced whole: a reader never sees half of one (the orchestrator rewrites
    # the report at the end of every run, possibly while the page is open).
    atomic_write_text(files["strategies_csv"], report.strategies.to_csv(index=False))
    atomic_write_text(files["strategies_md"], markdown_table(report.strategies, STRATEGY_COLUMNS))
    atomic_write_text(files["transfers_csv"], report.transfers.to_csv(index=False))
    atomic_write_text(files["measurements_csv"], report.measurements.to_csv(index=False))
    atomic_write_text(files["rounds_csv"], report.rounds.to_csv(index=False))
    listed = {files[role].name: what for role, (_, what) in FILES.items()}
    atomic_write_text(files["html"], render_page(report, render_figures(report), listed))
    return files["html"]
