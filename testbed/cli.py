"""The `testbed` command line: one subcommand per module in testbed/commands/.

Each command module provides ``add_parser(subparsers)``, which registers its
subparser with ``set_defaults(handler=...)``; a handler takes the parsed
arguments and returns the exit code. Errors a user can fix (a bad config, an
unknown strategy, a missing dataset) are printed as one line, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys

COMMANDS = ("run", "inspect", "strategies", "scenarios", "report", "sweep")


class UserError(Exception):
    """An error caused by the user's input; printed as one line with exit code 2."""


def _user_error_types() -> tuple[type[BaseException], ...]:
    from strategies.registry import StrategySpecError
    from testbed.config import ConfigError
    from testbed.payload import PayloadError

    types: list[type[BaseException]] = [UserError, ConfigError, StrategySpecError, PayloadError, FileNotFoundError]
    try:
        from testbed.data import DatasetError

        types.append(DatasetError)
    except ImportError:
        pass
    return tuple(types)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="testbed",
        description="Send neural networks to fleets of edge devices over bad links: exact bytes, per-device metrics.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"testbed.commands.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"testbed.commands.{name}":
                raise
            continue
        module.add_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "handler", None) is None:
        parser.print_help()
        return 1
    try:
        return int(args.handler(args) or 0)
    except _user_error_types() as exc:
        print(f"testbed {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"testbed {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
