"""The command line as a user meets it: real subprocesses of the installed `testbed` command."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from plugins import install_plugin

ROOT = Path(__file__).resolve().parents[1]


def run_cli(*args: str, env: dict | None = None, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "testbed", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**os.environ, **(env or {})},
        timeout=300,
    )


def test_strategies_lists_the_builtin_ones_as_json():
    result = run_cli("strategies", "--json")
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    names = {row["name"] for row in rows}
    assert {"raw", "quantise", "symmetry", "prune", "monocnn"} <= names
    assert all(row["description"] and "\n" not in row["description"] for row in rows)


def test_a_strategy_from_an_installed_package_registers_through_its_entry_point(tmp_path):
    source = textwrap.dedent(
        """
        from strategies.raw import RawStrategy

        class HalfStrategy(RawStrategy):
            description = "A plug-in strategy from another package."
        """
    )
    install_plugin(tmp_path, "plugin-codec", {"plugin_codec.py": source},
                   {"testbed.strategies": {"plugged": "plugin_codec:HalfStrategy"}})

    result = run_cli("strategies", "--json", env={"PYTHONPATH": str(tmp_path)})
    assert result.returncode == 0, result.stderr
    rows = {row["name"]: row["description"] for row in json.loads(result.stdout)}
    assert rows["plugged"] == "A plug-in strategy from another package."

    without = run_cli("strategies", "--json")
    assert "plugged" not in {row["name"] for row in json.loads(without.stdout)}


def test_inspect_json_describes_each_strategy_of_the_quickstart_exactly():
    result = run_cli("inspect", "--json")
    assert result.returncode == 0, result.stderr
    reports = json.loads(result.stdout)
    assert len(reports) >= 5
    for report in reports:
        assert {"strategy", "bits", "total_bytes", "model_ratio", "conv_ratio", "segments", "tensors"} <= set(report)
        # The segments (framing included) add up to the exact total, and so do the tensors.
        assert sum(s["bytes"] for s in report["segments"]) == report["total_bytes"]
        framing = report["segments"][0]
        assert framing["name"] == "framing" and framing["protected"]
        assert sum(t["bytes"] for t in report["tensors"]) + framing["bytes"] == report["total_bytes"]
    by_kind = {r["strategy"]: r for r in reports}
    assert by_kind["raw"]["model_ratio"] == pytest.approx(1.0, rel=0.02)
    assert by_kind["quantise"]["model_ratio"] > 3.5
    # central_skew sends 4 of 9 values of each 3x3 kernel.
    assert by_kind["symmetry"]["conv_ratio"] > 2.0 * by_kind["quantise"]["conv_ratio"] * 0.95


def test_inspect_with_a_strategy_on_the_command_line():
    result = run_cli("inspect", "--json", "--strategy", "quantise:bits=4,per_channel=true")
    assert result.returncode == 0, result.stderr
    (report,) = json.loads(result.stdout)
    assert report["bits"] == 4 and report["strategy"] == "quantise"


@pytest.mark.parametrize(
    "text, expected",
    [
        ("rounds: 3\nstrategies: [{label: a, strategy: raw}]\nbogus_key: 1\n", "bogus_key"),
        ("rounds: many\nstrategies: [{label: a, strategy: raw}]\n", "rounds"),
        ("rounds: 0\nstrategies: [{label: a, strategy: raw}]\n", "rounds"),
        ("strategies: [{label: a, strategy: quantise, bits: 40}]\n", "bits"),
        ("strategies: [{label: a, strategy: nosuch}]\n", "nosuch"),
        ("fleet: {link: {snr_db: {uniform: [0]}}}\nstrategies: [{label: a, strategy: raw}]\n", "snr_db"),
    ],
)
def test_a_bad_config_gets_one_line_naming_the_key_and_the_file(tmp_path, text, expected):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    result = run_cli("inspect", str(path))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "bad.yaml" in lines[0] and expected in lines[0]
    assert "Traceback" not in result.stderr
