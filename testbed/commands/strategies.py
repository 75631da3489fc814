"""`testbed strategies`: what strategies are registered (built-in and from installed packages)."""

from __future__ import annotations

import json


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("strategies", help="list the registered compression strategies")
    parser.add_argument("--json", action="store_true", help="print a JSON list of {name, description}")
    parser.set_defaults(handler=handle)


def handle(args) -> int:
    from strategies.registry import available

    rows = [{"name": name, "description": cls.description} for name, cls in sorted(available().items())]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table("name", "description", title="registered strategies")
    for row in rows:
        table.add_row(row["name"], row["description"])
    Console().print(table)
    return 0
