"""Attaching to an existing Ray cluster by address (how runs scale past one machine)."""

from __future__ import annotations


import pytest

from conftest import FAULTY, run_tiny
from testbed.engine import local_ray_head

pytestmark = pytest.mark.slow  # starts Flower on Ray


@pytest.fixture
def ray_cluster():
    """A one-node Ray cluster on loopback, started here and stopped afterwards (only ours)."""
    with local_ray_head(num_cpus=2) as address:
        yield address


def test_run_on_a_cluster_by_address_gives_the_local_metrics(ray_cluster, tiny_run, tmp_path):
    out = run_tiny(tmp_path / "run", *FAULTY, "scenario.measurements=[nmse_conv]", "engine.devices_per_node=1",
                   ray_address=ray_cluster)
    assert (out / "metrics.csv").read_text() == (tiny_run / "metrics.csv").read_text()
