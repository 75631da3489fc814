"""The docs' column tables are the declared ones (regenerate with scripts/write_docs_tables.py)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "write_docs_tables.py"


def test_orchestrator_docs_list_the_declared_columns():
    spec = importlib.util.spec_from_file_location("write_docs_tables", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    text = module.DOC.read_text()
    assert module.updated(text) == text, "docs/ORCHESTRATOR.md is out of date: run python scripts/write_docs_tables.py"
    assert "| `bit_errors` | int |" in text and "| `train_loss` | float |" in text
