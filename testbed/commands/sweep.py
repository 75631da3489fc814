"""`testbed sweep`: run a config at every point of its `sweep:` grid, then one combined report."""

from __future__ import annotations

from pathlib import Path


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "sweep",
        help="run every point of a config's sweep: grid and write one combined report",
        description="Run the cartesian product of the config's sweep: section (dotted key -> list of values), "
        "each point into OUT/points/<name> one after another (each point uses the whole Ray engine), "
        "skipping points already done and resuming interrupted ones; then write OUT/report.html and "
        "OUT/sweep.csv.",
    )
    parser.add_argument("config", help="experiment config with a sweep: section")
    parser.add_argument("--out", metavar="DIR", default=None, help="sweep folder (default: runs/NAME-sweep)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key of every point (sweep.KEY=[...] changes the grid); repeatable")
    parser.add_argument("--ray-address", metavar="ADDR", default=None,
                        help="attach to a running Ray cluster instead of starting one")
    parser.add_argument("--dry-run", action="store_true", help="list the points and whether each is done; run nothing")
    parser.add_argument("--quiet", action="store_true", help="no progress display")
    parser.set_defaults(handler=handle)


def handle(args) -> int:
    from testbed.config import load_config
    from testbed.sweep import point_state, run_sweep, sweep_points

    config_path = Path(args.config)
    config = load_config(config_path, args.set)
    # A fixed default folder, so that running the same sweep again finds its points.
    out = Path(args.out) if args.out else Path("runs") / f"{config.name}-sweep"
    if args.dry_run:
        points = sweep_points(config, str(config_path))
        for index, point in enumerate(points, 1):
            state = point_state(out / "points" / point.name, point.config)
            print(f"{index:3d}/{len(points)}  {state:8s} {point.label}  ->  {out / 'points' / point.name}")
        return 0
    report = run_sweep(config, out, ray_address=args.ray_address, progress=not args.quiet, config_path=config_path)
    print(f"report  {report}\nsweep   {out / 'sweep.csv'}")
    return 0
