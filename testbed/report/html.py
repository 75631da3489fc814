"""The self-contained HTML page: inline CSS, inline SVG figures, no script, no external file."""

from __future__ import annotations

import html
import json
import math
import re

import pandas as pd

from testbed.report.figures import Drawn
from testbed.report.runs import RunData
from testbed.report.tables import (
    ROUND_COLUMNS, STRATEGY_COLUMNS, TRANSFER_COLUMNS, Report, ReportColumn, format_bytes,
    format_cell,
)

DEVICE_ROWS_SHOWN = 200  # the devices table on the page; devices.csv has them all

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 0 auto; max-width: 1280px;
       padding: 1.2em 2em 4em; color: #1a1a1a; background: #ffffff; line-height: 1.45; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; } h2 { margin-top: 1.8em; border-bottom: 1px solid #ddd; }
.meta { color: #555; font-size: 0.92em; }
.warn { background: #fff4e0; border-left: 4px solid #E69F00; padding: 0.5em 1em; margin: 0.8em 0; }
table { border-collapse: collapse; font-size: 0.85em; margin: 0.6em 0; }
th, td { border: 1px solid #d8d8d8; padding: 0.25em 0.55em; white-space: nowrap; }
th { background: #f2f5f9; position: sticky; top: 0; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr:nth-child(even) td { background: #fafafa; }
.scroll { overflow-x: auto; max-height: 36em; overflow-y: auto; }
figure { margin: 1.2em 0; } figure svg { max-width: 100%; height: auto; }
figcaption { color: #444; font-size: 0.9em; max-width: 60em; }
pre { background: #f6f8fa; padding: 0.8em; overflow-x: auto; font-size: 0.85em; }
details { margin: 0.5em 0; } summary { cursor: pointer; font-weight: 600; }
dl.defs dt { font-weight: 600; } dl.defs dd { margin: 0 0 0.4em 1.5em; color: #333; }
"""


def _esc(value) -> str:
    return html.escape(str(value), quote=True)


def _rich(text: str) -> str:
    """A meaning's Markdown (`code`, **bold**) as HTML."""
    out = re.sub(r"`([^`]+)`", r"<code>\1</code>", _esc(text))
    return re.sub(r"\*\*([^*]+)\*\*", r"<b>\1</b>", out)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _table_html(frame: pd.DataFrame, columns: tuple[ReportColumn, ...], hide=()) -> str:
    """A report table; hover a formatted number for its exact value."""
    columns = [c for c in columns if c.name in frame.columns and c.name not in hide]
    head = "".join(f"<th>{_esc(c.header)}</th>" for c in columns)
    body = []
    for _, row in frame.iterrows():
        cells = []
        for c in columns:
            value = row[c.name]
            text = format_cell(c.name, value)
            exact = f' title="{_esc(value)}"' if _is_number(value) and text != str(value) else ""
            cls = ' class="num"' if _is_number(value) or text in ("n/a", "-") else ""
            cells.append(f"<td{cls}{exact}>{_esc(text)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table></div>'


def _measurements_html(frame: pd.DataFrame, several: bool) -> str:
    """The scenario's measurements, one row each, one column per (run,) strategy: the mean over its
    device-rounds (hover for how many, the minimum and the maximum)."""
    keys = list(dict.fromkeys(zip(frame["run"], frame["strategy"])))
    head = "<th>measurement</th><th>unit</th>" + "".join(
        f"<th>{_esc(f'{run} / {strategy}' if several else strategy)}</th>" for run, strategy in keys)
    cells = {(r["run"], r["strategy"], r["measurement"]): r for _, r in frame.iterrows()}
    body = []
    for measurement, unit in dict.fromkeys(zip(frame["measurement"], frame["unit"])):
        row = [f"<td>{_esc(measurement)}</td><td>{_esc(unit)}</td>"]
        for run, strategy in keys:
            r = cells.get((run, strategy, measurement))
            if r is None:
                row.append('<td class="num">-</td>')
                continue
            hover = "; ".join(f"{k} {format_cell(k, r[k], unit=unit if k != 'rows' else '')}" for k in ("rows", "min", "max"))
            row.append(f'<td class="num" title="{_esc(hover)}">{_esc(format_cell("mean", r["mean"], unit=unit))}</td>')
        body.append("<tr>" + "".join(row) + "</tr>")
    note = ('<p class="meta">Each cell: the mean over the strategy\'s device-rounds with a value (dB values on the '
            "linear scale, flags: the share that are true); hover for how many, the minimum and the maximum. "
            "The measurements CSV beside this page has them all.</p>")
    return f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table></div>{note}'


def _definitions_html(columns: tuple[ReportColumn, ...], hide=()) -> str:
    items = "".join(f"<dt>{_esc(c.header)}</dt><dd>{_rich(c.meaning)}</dd>" for c in columns if c.name not in hide)
    return f'<details><summary>What the columns mean</summary><dl class="defs">{items}</dl></details>'


def _frame_html(frame: pd.DataFrame, limit: int | None = None) -> str:
    shown = frame if limit is None else frame.head(limit)
    head = "".join(f"<th>{_esc(c)}</th>" for c in shown.columns)
    rows = []
    for values in shown.itertuples(index=False):
        cells = []
        for value in values:
            if isinstance(value, float):
                text = "n/a" if math.isnan(value) else ("-inf" if value == -math.inf else f"{value:.6g}")
                cells.append(f'<td class="num">{_esc(text)}</td>')
            elif _is_number(value):
                cells.append(f'<td class="num">{_esc(value)}</td>')
            else:
                cells.append(f"<td>{_esc('' if value is None else value)}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    note = ""
    if limit is not None and len(frame) > limit:
        note = f'<p class="meta">First {limit} of {len(frame)} rows; the CSV beside the run has them all.</p>'
    return f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table></div>{note}'


def _payloads_html(run: RunData) -> str:
    parts = []
    for label, payload in run.payloads.items():
        segments = pd.DataFrame(payload.get("segments") or [], columns=["name", "bytes", "protected"])
        parts.append(
            f"<details><summary>{_esc(label)}: {_esc(format_bytes(payload.get('total_bytes')))} "
            f"({len(segments)} segments)</summary>{_frame_html(segments)}</details>"
        )
    return "".join(parts) or '<p class="meta">No payloads.json in this run.</p>'


def _run_meta(run: RunData) -> str:
    s = run.summary
    bits = [f"scenario {_esc(run.scenario or '?')}", f"seed {_esc(s.get('seed', run.config.get('seed', '?')))}"]
    bits.append(f"rounds {run.rounds_done} of {run.rounds if run.rounds is not None else '?'}")
    if "wall_s" in s:
        bits.append(f"wall {float(s['wall_s']):.1f} s")
    machine = s.get("machine") or {}
    if machine:
        bits.append("machine " + _esc(", ".join(f"{k} {v}" for k, v in machine.items())))
    return " · ".join(bits)


def _section(heading: str, body: str) -> list[str]:
    return [f"<h2>{_esc(heading)}</h2>", body]


def render_page(report: Report, figures: list[Drawn], files: dict[str, str]) -> str:
    runs = report.runs
    several = len(runs) > 1
    single = () if several else ("run",)
    names = sorted({str(run.summary.get("name") or run.config.get("name") or run.label) for run in runs})
    title = f"Fleet bandwidth report: {', '.join(names)}"
    warnings = [
        f"{_esc(run.label)}: incomplete, {run.rounds_done} of {run.rounds} rounds done."
        for run in runs
        if run.rounds is not None and run.rounds_done < run.rounds
    ]
    out = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_esc(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{_esc(title)}</h1>",
        f'<p class="meta">{len(runs)} run{"s" if several else ""}: '
        + "; ".join(f"<b>{_esc(run.label)}</b> ({_run_meta(run)})" for run in runs)
        + "</p>",
    ]
    out += [f'<div class="warn">{w}</div>' for w in warnings]
    out += _section("Strategies", _table_html(report.strategies, STRATEGY_COLUMNS, hide=single))
    out.append(
        '<p class="meta">Tables beside this page: '
        + ", ".join(f"<code>{_esc(name)}</code> ({_esc(what)})" for name, what in files.items())
        + ".</p>"
    )
    out.append(_definitions_html(STRATEGY_COLUMNS, hide=single))
    out += _section("Traffic by transfer", _table_html(report.transfers, TRANSFER_COLUMNS, hide=single)
                    if len(report.transfers) else '<p class="meta">No transfer recorded yet.</p>')
    out.append(_definitions_html(TRANSFER_COLUMNS, hide=single))
    out += _section("What the scenario measured", _measurements_html(report.measurements, several)
                    if len(report.measurements) else '<p class="meta">No measurements beyond the base columns.</p>')
    out.append(f"<details><summary>Per round ({len(report.rounds)} rows)</summary>"
               f"{_table_html(report.rounds, ROUND_COLUMNS, hide=single)}{_definitions_html(ROUND_COLUMNS, hide=single)}"
               "</details>")
    out.append("<h2>Plots</h2>")
    if not figures:
        out.append('<p class="meta">Nothing to plot yet.</p>')
    for drawn in figures:
        f = drawn.figure
        out.append(f'<figure id="fig-{_esc(f.key)}"><h3>{_esc(f.heading)}</h3>{drawn.svg}'
                   f"<figcaption>{_rich(f.caption)}</figcaption></figure>")
    out.append("<h2>What was measured</h2>")
    for run in runs:
        prefix = f"{_esc(run.label)}: " if several else ""
        out.append(f"<h3>{prefix}config</h3>")
        out.append(f"<pre>{_esc(run.config_text or '(no config.yaml)')}</pre>")
        out.append(f"<h3>{prefix}payloads</h3>{_payloads_html(run)}")
        out.append(f"<h3>{prefix}fleet ({len(run.devices)} devices)</h3>")
        out.append(_frame_html(run.devices, DEVICE_ROWS_SHOWN) if len(run.devices) else '<p class="meta">No devices.csv.</p>')
        if run.summary:
            out.append(f"<details><summary>{prefix}summary.json</summary><pre>{_esc(json.dumps(run.summary, indent=2))}</pre></details>")
    out.append("</body></html>")
    return "\n".join(out)
