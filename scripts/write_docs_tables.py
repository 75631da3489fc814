"""Write the run folder's column tables into docs/ORCHESTRATOR.md from their declarations.

The section between ``<!-- tables:begin -->`` and ``<!-- tables:end -->`` is generated from
``testbed.tables`` and the registered scenarios' measurement columns; tests/test_docs_tables.py
fails when the docs and the declarations disagree.

    python scripts/write_docs_tables.py          # rewrite the section
    python scripts/write_docs_tables.py --check  # exit 1 if it is out of date
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

DOC = Path(__file__).resolve().parents[1] / "docs" / "ORCHESTRATOR.md"
BEGIN, END = "<!-- tables:begin -->", "<!-- tables:end -->"


def generated() -> str:
    from testbed.scenarios import SCENARIOS
    from testbed.tables import MEASUREMENTS, ROUNDS, TRANSFERS

    parts = [TRANSFERS.markdown(), MEASUREMENTS.markdown()]
    for name in SCENARIOS.builtin_names():  # the project's scenarios (plug-ins document their own)
        cls = SCENARIOS.get(name)
        options = cls.Options(measurements=["nmse_conv"]) if "measurements" in cls.Options.model_fields else None
        extra = [c for c in cls.measurements_table(options).columns if c.name not in MEASUREMENTS.names]
        lines = [f"Measurement columns of `{name}`:", "", "| column | type | unit | meaning |", "|---|---|---|---|"]
        lines += [f"| `{c.name}` | {c.dtype} | {c.unit} | {c.meaning} |" for c in extra]
        parts.append("\n".join(lines) + "\n")
    parts.append(ROUNDS.markdown())
    return "\n".join(parts)


def updated(text: str) -> str:
    if BEGIN not in text or END not in text:
        raise SystemExit(f"{DOC}: no {BEGIN} ... {END} section")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{BEGIN}\n{generated()}{END}{tail}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the docs are out of date")
    args = parser.parse_args()
    text = DOC.read_text()
    new = updated(text)
    if args.check:
        return 0 if new == text else 1
    DOC.write_text(new)
    return 0


if __name__ == "__main__":
    sys.exit(main())
