"""`testbed inspect`: the payload breakdown of strategies applied to a model."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from testbed.config import DEFAULT_CONFIG, default_config_path


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "inspect",
        help="show the payload breakdown (bytes per segment and tensor, compression ratios) of strategies",
        description="Encode the config's model with each of its strategies (or those given with --strategy) "
        "and show what goes on the wire.",
    )
    parser.add_argument("config", nargs="?", default=None, help=f"experiment config (default: {DEFAULT_CONFIG})")
    parser.add_argument(
        "--strategy",
        action="append",
        default=[],
        metavar="SPEC",
        help="a strategy instead of the config's: NAME or NAME:key=value,key=value "
        "(e.g. symmetry:group=central_skew,mode=dof,bits=8); repeatable",
    )
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")
    parser.add_argument(
        "--trained",
        action="store_true",
        help="use the trained central models (from the checkpoint cache, training them if needed) "
        "instead of freshly initialised weights; rANS sizes depend on the weights",
    )
    parser.add_argument("--summary", action="store_true", help="only the one-line-per-strategy summary")
    parser.add_argument("--json", action="store_true", help="print a JSON list with one object per strategy")
    parser.set_defaults(handler=handle)


def parse_strategy_arg(text: str) -> dict:
    """``NAME:key=value,...`` -> a strategy spec dict (values parsed as YAML scalars)."""
    from testbed.cli import UserError

    name, _, options = text.partition(":")
    spec = {"strategy": name.strip()}
    for item in filter(None, (s.strip() for s in options.split(","))):
        if "=" not in item:
            raise UserError(f"--strategy {text!r}: expected key=value, got {item!r}")
        key, value = item.split("=", 1)
        spec[key.strip()] = yaml.safe_load(value)
    return spec



def strategy_models(config, specs: dict[str, dict], trained: bool, base_dir=None):
    """label -> (strategy, state to send, reference state of the plain model); data files of the
    config are read relative to ``base_dir`` (the config's folder)."""
    import torch

    from strategies.registry import build
    from testbed.data import data_info
    from testbed.models import build_model

    info = data_info(config.data, base_dir)
    torch.manual_seed(config.seed)
    plain = build_model(config.model, info.input_shape, info.num_classes)
    reference = plain.state_dict()
    if trained:
        from testbed.data import load_data
        from testbed.training import central_model

        dataset = load_data(config.data, base_dir)
    out = {}
    for label, spec in specs.items():
        strategy = build(spec)
        if trained:
            model = central_model(strategy, config.model, dataset, config.seed)
        else:
            torch.manual_seed(config.seed)
            model = strategy.prepare_model(build_model(config.model, info.input_shape, info.num_classes))
            model = strategy.after_training(model, finetune=lambda m: None)
        out[label] = (strategy, model.state_dict(), reference)
    return out


def handle(args) -> int:
    from testbed.config import load_config
    from testbed.inspect import payload_report

    path = Path(args.config) if args.config else default_config_path()
    config = load_config(path, args.set)
    if args.strategy:
        specs = {}
        for text in args.strategy:
            spec = parse_strategy_arg(text)
            specs[text] = spec
    else:
        specs = config.strategy_specs()
    reports = [
        payload_report(label, strategy, state, reference)
        for label, (strategy, state, reference) in strategy_models(config, specs, args.trained, path.parent).items()
    ]
    if args.json:
        print(json.dumps(reports, indent=2))
        return 0
    print_reports(reports, config, trained=args.trained, summary_only=args.summary)
    return 0


def _shape(shape: list[int] | None) -> str:
    if shape is None:
        return "-"  # side information not carried under a tensor's name
    return "x".join(map(str, shape)) if shape else "scalar"


def _ratio(value) -> str:
    return f"{value:.2f}x" if value else "-"


def print_reports(reports: list[dict], config, trained: bool, summary_only: bool) -> None:
    from rich import box
    from rich.console import Console
    from rich.table import Table

    console = Console()
    weights = "trained central models" if trained else f"freshly initialised weights (seed {config.seed})"
    console.print(f"[bold]{config.model.arch}[/] for {config.data.dataset}, {weights}")
    summary = Table(title="payloads (ratios against float32)", box=box.SIMPLE_HEAD, pad_edge=False)
    summary.add_column("strategy", min_width=min(24, max(len(r["label"]) for r in reports)))
    columns = ("kind", "bits", "total\nbytes", "protected\nbytes", "framing\nbytes", "model\nratio", "conv\nratio")
    for column in columns:
        summary.add_column(column, justify="left" if column == "kind" else "right", no_wrap=True)
    for r in reports:
        framing = r["segments"][0]["bytes"]  # payload_report's first row: header and checksum
        summary.add_row(r["label"], r["strategy"], str(r["bits"] or "-"), f"{r['total_bytes']:,}",
                        f"{r['protected_bytes']:,}", f"{framing:,}", _ratio(r["model_ratio"]), _ratio(r["conv_ratio"]))
    console.print(summary)
    if summary_only:
        return
    for r in reports:
        segments = Table("segment", "bytes", "protected", title=f"{r['label']}: segments")
        for s in r["segments"]:
            segments.add_row(s["name"], f"{s['bytes']:,}", "yes" if s["protected"] else "no")
        tensors = Table("tensor", "shape", "bytes", title=f"{r['label']}: tensors")
        for t in r["tensors"]:
            tensors.add_row(t["name"], _shape(t["shape"]), f"{t['bytes']:,}")
        console.print(segments, tensors)
