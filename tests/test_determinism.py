"""The same seed gives the same metrics whatever the cohort size and the number of Ray workers."""

from __future__ import annotations

from conftest import run_tiny


def test_metrics_do_not_depend_on_cohorts_or_workers(tiny_run, tmp_path):
    # The reference run used two devices per node and two workers.
    other = run_tiny(tmp_path / "run", "engine.devices_per_node=5", "engine.num_workers=1")
    reference = (tiny_run / "metrics.csv").read_text()
    assert reference.count("\n") == 1 + 2 * 3 * 8
    assert (other / "metrics.csv").read_text() == reference
    assert (other / "rounds.csv").read_text() == (tiny_run / "rounds.csv").read_text()
    assert (other / "payloads.json").read_text() == (tiny_run / "payloads.json").read_text()
