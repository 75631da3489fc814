"""The tables of docs/LINKS.md that come from the link code: options per model, trace columns, auto's choices.

    PYTHONPATH=. .venv/bin/python scripts/link_tables.py           # rewrite them in docs/LINKS.md
    PYTHONPATH=. .venv/bin/python scripts/link_tables.py --check   # exit 1 if the docs differ

Each table sits between ``<!-- table: NAME -->`` and ``<!-- end table -->``; the options
tables come from the models' ``Params`` (testbed.links.schema), the trace columns from
testbed.fleet.columns, and the repetition table from the ``auto`` rule itself.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from testbed.fleet import FOG_PREFIX, columns
from testbed.links import LinkParams, available, link_params, make_link
from testbed.links.schema import options_table, parameters
from testbed.rng import derive_rng

DOC = Path(__file__).resolve().parents[1] / "docs" / "LINKS.md"
BLOCK = re.compile(r"(<!-- table: (?P<name>[\w-]+) -->\n)(?P<body>.*?)(<!-- end table -->)", re.S)


def trace_table() -> str:
    params = parameters()
    rows = ["| column | required | value | what |", "|---|---|---|---|"]
    for name, c in columns(fog_hops=False).items():
        if c.required:
            required = "yes"
        elif c.measured:
            required = "on the rows whose link model has it"
        else:
            required = "no"
        if c.attr == "model":
            what = "the device's link model"
        elif c.link:
            what = f"link parameter of {', '.join(params[c.attr].models) if len(params[c.attr].models) < len(available()) else 'every model'}"
        elif name == "device_id":
            what = "the device's id, unique"
        elif name == "partition":
            what = "data partition (default: the row's position), below the number of devices"
        elif name == "fog":
            what = "the fog node the device is attached to (default: by `fleet.fog.assign`), below `fleet.fog.nodes`"
        else:
            what = f"compute: `{c.attr}`"
        rows.append(f"| `{name}` | {required} | {c.rule.text} | {what} |")
    hop = [name for name, c in columns().items() if c.fog_hop]
    rows.append(f"| `{hop[0]}`, `{hop[1]}`, ... `{hop[-1]}` | no | as the column without `{FOG_PREFIX}` | the device<->fog hop "
                f"link's model and parameters ({len(hop)} columns: `{FOG_PREFIX}` and each link column above); a row "
                "with none of them: `fleet.fog.link`, else the device's own link |")
    return "\n".join(rows)


def auto_table() -> str:
    """The copies ``auto`` picks with 1 KB packets."""

    def copies(model: str, **values) -> int:
        link = make_link(link_params(model, **values))
        return link.protection.copies(link.channel(derive_rng(0)))

    snrs = [-5, -3, 0, 3, 5, 7, 8, 10]
    rows = ["| Eb/N0 | " + " | ".join(f"{s} dB" for s in snrs) + " |", "|---|" + "---:|" * len(snrs)]
    for label, modulation in (("BPSK, QPSK", "bpsk"), ("16-QAM", "16qam")):
        rows.append(f"| {label} | " + " | ".join(str(copies("awgn", snr_db=s, modulation=modulation)) for s in snrs) + " |")
    bers, losses = [1e-4, 1e-3, 1e-2, 0.1], [0.1, 0.5]
    rows += ["", "| link | " + " | ".join([f"ber {b:g}" for b in bers] + [f"loss {x:g}" for x in losses]) + " |",
             "|---|" + "---:|" * (len(bers) + len(losses))]
    rows.append("| bsc, erasure | " + " | ".join([str(copies("bsc", ber=b)) for b in bers] + [str(copies("erasure", loss=x)) for x in losses]) + " |")
    return "\n".join(rows)


def tables() -> dict[str, str]:
    out = {"shared": options_table(LinkParams)}
    for name, cls in available().items():
        table = options_table(cls.Params)
        out[name] = table if table.count("\n") > 1 else "No parameters of its own: only the shared ones."
    out["trace"] = trace_table()
    out["auto"] = auto_table()
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only say whether docs/LINKS.md is up to date")
    args = parser.parse_args()
    text, want = DOC.read_text(), tables()
    found = {m["name"] for m in BLOCK.finditer(text)}
    missing = sorted(set(want) - found)
    new = BLOCK.sub(lambda m: m[1] + want.get(m["name"], m["body"].rstrip("\n")) + "\n" + m[4], text)
    if args.check:
        stale = sorted(m["name"] for m in BLOCK.finditer(text) if m["body"] != want.get(m["name"], "") + "\n")
        if stale or missing:
            print(f"{DOC.name}: tables out of date: {', '.join(stale)}; missing: {', '.join(missing) or 'none'}"
                  " (run scripts/link_tables.py)", file=sys.stderr)
            return 1
        return 0
    DOC.write_text(new)
    if missing:
        print(f"{DOC.name}: no place for the tables {', '.join(missing)} (add <!-- table: NAME --> ... <!-- end table -->)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
