"""docs/LINKS.md's generated tables (options per model, trace columns, auto's choices) match the code."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_docs_tables_are_the_schemas():
    result = subprocess.run(
        [sys.executable, "scripts/link_tables.py", "--check"],
        capture_output=True, text=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120,
    )
    assert result.returncode == 0, result.stderr
