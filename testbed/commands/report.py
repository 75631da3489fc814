"""`testbed report`: the fleet-level bandwidth report of one run folder or several."""

from __future__ import annotations

from pathlib import Path


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "report",
        help="write the HTML report (plus CSV and Markdown tables) of one or more run folders",
        description="Read run folders and write one self-contained HTML page (tables: strategies, the traffic "
        "of every transfer, what the scenario measured, rounds; plots: accuracy against SNR and bytes, "
        "per-device spread, reconstruction error, traffic, and any figure a scenario registers) with its "
        "tables beside it as CSV and Markdown. Several folders are compared in one page, each strategy "
        "labelled 'run / strategy'.",
    )
    parser.add_argument("runs", nargs="+", metavar="DIR", help="run folders (written by testbed run or sweep)")
    parser.add_argument("--out", metavar="FILE.html", default=None,
                        help="the page to write (default: DIR/report.html for a single run folder)")
    parser.add_argument("--label", action="append", default=None, metavar="NAME",
                        help="name of each run in the report, in order (default: folder names); repeatable")
    parser.set_defaults(handler=handle)


def handle(args) -> int:
    from testbed.cli import UserError, check_writable
    from testbed.report import ReportError, report_files, write_report

    if args.out is None and len(args.runs) > 1:
        raise UserError("several run folders: give the page's path with --out FILE.html")
    if args.out is not None and Path(args.out).suffix.lower() not in (".html", ".htm"):
        raise UserError(f"--out {args.out}: expected a .html file")
    if args.out is not None:
        check_writable(Path(args.out).parent, "--out")
    try:
        page = write_report(args.runs, args.out, labels=args.label)
    except ReportError as exc:
        raise UserError(str(exc)) from None
    for role, path in report_files(page).items():
        print(f"{role:15s} {path}")
    return 0
