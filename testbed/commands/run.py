"""`testbed run`: one experiment, from a YAML config, into a run folder."""

from __future__ import annotations

import time
from pathlib import Path

from testbed.config import DEFAULT_CONFIG, default_config_path


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "run",
        help="run one experiment (default: the quickstart) and write its run folder",
        description="Run an experiment config on an emulated fleet (Flower on Ray) and write its run folder: "
        "transfers.csv, measurements.csv, rounds.csv, summary.json, the report.",
    )
    parser.add_argument("config", nargs="?", default=None, help=f"experiment config (default: {DEFAULT_CONFIG})")
    parser.add_argument("--out", metavar="DIR", default=None, help="run folder (default: runs/NAME-TIMESTAMP)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key; repeatable")
    parser.add_argument("--resume", metavar="DIR", default=None,
                        help="continue the run in DIR from its last finished round (uses DIR/config.yaml)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace a run already in --out (without it such a folder is refused)")
    parser.add_argument("--ray-address", metavar="ADDR", default=None,
                        help="attach to a running Ray cluster (e.g. 10.0.0.5:6379) instead of starting one")
    parser.add_argument("--quiet", action="store_true", help="no progress display or summary table")
    parser.set_defaults(handler=handle)



def handle(args) -> int:
    from testbed.cli import UserError, check_writable
    from testbed.config import load_config
    from testbed.runner import run_experiment

    if args.resume:
        if args.config or args.set or args.overwrite:
            raise UserError("--resume DIR takes the config from DIR/config.yaml; drop CONFIG, --set and --overwrite")
        out = Path(args.resume)
        config_path = out / "config.yaml"
        if not config_path.exists():
            raise UserError(f"{out}: not a run folder (no config.yaml)")
        config = load_config(config_path)
        resume = True
    else:
        config_path = Path(args.config) if args.config else default_config_path()
        config = load_config(config_path, args.set)
        out = Path(args.out) if args.out else Path("runs") / f"{config.name}-{time.strftime('%Y%m%d-%H%M%S')}"
        resume = False
    check_writable(out, "--resume" if resume else "--out")
    run_experiment(
        config, out, resume=resume, ray_address=args.ray_address, progress=not args.quiet,
        config_path=config_path, overwrite=args.overwrite,
    )
    return 0

