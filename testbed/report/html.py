"""The self-contained HTML page: inline CSS, inline SVG figures, no script, no external file."""

from __future__ import annotations

import html
import json
import math

import pandas as pd

from testbed.report.plots import FIGURES
from testbed.report.runs import RunData
from testbed.report.tables import STRATEGY_COLUMNS, format_bytes, format_cell

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

_DEFINITIONS = [
    ("bytes/device/round", "mean over (device, round) rows of all bytes sent to a device (payload, CRC "
     "trailers and resends; plus uplink bytes in federated mode); failed deliveries included."),
    ("ratio (model), ratio (conv)", "fp32 bytes of the whole model, or of the conv kernels alone, over the "
     "payload bytes carrying them (payloads.json)."),
    ("protected", "share of the payload sent protected (delivered intact, by retransmission)."),
    ("fleet bytes, airtime", "sums over every device and round."),
    ("acc mean / p10 / min", "across devices; a device's accuracy is its mean over rounds in broadcast mode, "
     "its last-round accuracy in federated mode. Failed deliveries have no accuracy: see 'failed'."),
    ("NMSE", "reconstruction error against the server's float model, averaged on the linear scale and shown "
     "in dB; compression: a clean decode; channel: what the link added; -inf: exact."),
    ("failed", "device-rounds where the model was not delivered or could not be decoded."),
]


def _esc(value) -> str:
    return html.escape(str(value), quote=True)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _strategy_table_html(table: pd.DataFrame, several_runs: bool) -> str:
    columns = [c for c in STRATEGY_COLUMNS if several_runs or c != "run"]
    head = "".join(f"<th>{_esc(STRATEGY_COLUMNS[c])}</th>" for c in columns)
    body = []
    for _, row in table.iterrows():
        cells = []
        for c in columns:
            value = row[c]
            text = format_cell(c, value)
            exact = f' title="{_esc(value)}"' if _is_number(value) and text != str(value) else ""
            cls = ' class="num"' if c not in ("run", "strategy", "kind") else ""
            cells.append(f"<td{cls}{exact}>{_esc(text)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table></div>'


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
    bits = [f"mode {_esc(run.mode)}", f"seed {_esc(s.get('seed', run.config.get('seed', '?')))}"]
    bits.append(f"rounds {run.rounds_done} of {run.rounds if run.rounds is not None else '?'}")
    if "wall_s" in s:
        bits.append(f"wall {float(s['wall_s']):.1f} s")
    machine = s.get("machine") or {}
    if machine:
        bits.append("machine " + _esc(", ".join(f"{k} {v}" for k, v in machine.items())))
    return " · ".join(bits)


def render_page(runs: list[RunData], table: pd.DataFrame, figures: dict[str, str], files: dict[str, str]) -> str:
    several = len(runs) > 1
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
    out.append("<h2>Strategies</h2>")
    out.append(_strategy_table_html(table, several))
    out.append(
        '<p class="meta">Tables beside this page: '
        + ", ".join(f"<code>{_esc(name)}</code> ({_esc(what)})" for name, what in files.items())
        + ".</p>"
    )
    out.append("<details><summary>What the columns mean</summary><dl class=\"defs\">")
    out += [f"<dt>{_esc(k)}</dt><dd>{_esc(v)}</dd>" for k, v in _DEFINITIONS]
    out.append("</dl></details>")
    out.append("<h2>Plots</h2>")
    for key, heading, caption in FIGURES:
        out.append(f'<figure id="fig-{key}"><h3>{_esc(heading)}</h3>{figures[key]}<figcaption>{_esc(caption)}</figcaption></figure>')
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
