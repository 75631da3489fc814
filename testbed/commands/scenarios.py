"""`testbed scenarios`: what traffic scenarios are registered (built-in and from installed packages)."""

from __future__ import annotations

from testbed.commands.listing import print_rows


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("scenarios", help="list the registered traffic scenarios")
    parser.add_argument("--json", action="store_true",
                        help="print a JSON list of {name, description, transfers, options}")
    parser.set_defaults(handler=handle)


def handle(args) -> int:
    from testbed.scenarios import SCENARIOS

    rows = [
        {
            "name": name,
            "description": cls.description,
            "transfers": [f"{t.name} ({t.hop})" for t in cls.transfers],
            "options": list(cls.Options.model_fields),
        }
        for name, cls in sorted(SCENARIOS.available().items())
    ]
    return print_rows(rows, "registered scenarios", args.json)
