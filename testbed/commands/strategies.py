"""`testbed strategies`: what strategies are registered (built-in and from installed packages)."""

from __future__ import annotations

from testbed.commands.listing import print_rows


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("strategies", help="list the registered compression strategies")
    parser.add_argument("--json", action="store_true", help="print a JSON list of {name, description}")
    parser.set_defaults(handler=handle)


def handle(args) -> int:
    from strategies.registry import available

    rows = [{"name": name, "description": cls.description} for name, cls in sorted(available().items())]
    return print_rows(rows, "registered strategies", args.json)
