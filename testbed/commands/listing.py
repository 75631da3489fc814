"""The one way the listing commands (`testbed strategies`, `testbed scenarios`) print a registry."""

from __future__ import annotations

import json


def print_rows(rows: list[dict], title: str, as_json: bool) -> int:
    """``rows`` as a JSON list, or as a table with one column per key."""
    if as_json:
        print(json.dumps(rows, indent=2))
        return 0
    from rich.console import Console
    from rich.table import Table

    keys = list(rows[0]) if rows else ["name"]
    table = Table(*keys, title=title)
    for row in rows:
        table.add_row(*(", ".join(v) if isinstance(v, list) else str(v) for v in row.values()))
    Console().print(table)
    return 0
