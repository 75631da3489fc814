"""The `testbed` command line: one subcommand per module in testbed/commands/.

Each command module provides ``add_parser(subparsers)``, which registers its
subparser with ``set_defaults(handler=...)``; a handler takes the parsed
arguments and returns the exit code. Errors a user can fix (a bad config, an
unknown strategy, a missing dataset) are printed as one line, never a traceback.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import os
import sys
from pathlib import Path

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


# What to do about an operating-system error, by its errno.
_OS_ADVICE = {
    errno.ENOSPC: "the disk is full: free space, then run again (testbed run --resume DIR continues a run)",
    errno.EROFS: "the file system is read-only: choose a writable path",
    errno.EACCES: "no permission: choose another path or change its permissions",
    errno.EPERM: "no permission: choose another path or change its permissions",
    errno.ENOTDIR: "a part of the path is a file, not a folder: choose another path",
    errno.EEXIST: "a file is in the way: choose another path",
    errno.EISDIR: "it is a folder: give a file's path",
}


def os_error_line(exc: OSError) -> str:
    """One line for an operating-system error: the path, what went wrong, what to do."""
    advice = _OS_ADVICE.get(exc.errno, "check the path and the disk")
    return f"{exc.filename or 'a file'}: {exc.strerror or exc}; {advice}"


def check_writable(folder: Path, flag: str) -> None:
    """Refuse a folder (given with ``flag``) this process cannot write, before any work is done."""
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise UserError(f"{flag} {folder}: {existing} is a file, not a folder; choose another {flag}")
    candidates = [existing]
    if existing == folder:  # a folder already there (--resume, --overwrite): its files are appended or replaced
        candidates += sorted(p for p in folder.iterdir() if p.is_file())
    unwritable = next((p for p in candidates if not os.access(p, os.W_OK)), None)
    if unwritable is not None:
        raise UserError(f"{flag} {folder}: {unwritable} is not writable (a read-only file system or no "
                        f"permission); make it writable or choose another {flag}")


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
    except OSError as exc:  # the disk, permissions, a path through a file: not a bug of the testbed
        print(f"testbed {args.command}: error: {os_error_line(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:  # Ctrl-C, or a run stopped by SIGINT / SIGTERM (testbed.runner.RunStopped)
        print(f"testbed {args.command}: {exc or 'interrupted'}", file=sys.stderr)
        return getattr(exc, "exit_code", 130)


if __name__ == "__main__":
    sys.exit(main())
