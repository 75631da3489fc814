"""Fleets at scale: the automatic cohort size, and one evaluation per distinct received model."""

from __future__ import annotations

import math

import pytest

from testbed.config import EngineConfig
from testbed.engine import MAX_COHORT, MESSAGES_PER_WORKER, cohort_size


@pytest.mark.parametrize("devices", [1, 7, 20, 100, 999, 2_000, 10_000, 1_000_000])
@pytest.mark.parametrize("workers", [1, 2, 16])
def test_automatic_cohorts_keep_every_worker_busy_with_a_few_messages(devices, workers):
    size = cohort_size(devices, EngineConfig(num_workers=workers))
    assert 1 <= size <= MAX_COHORT
    messages = math.ceil(devices / size)
    if size < MAX_COHORT:  # unbounded: a few messages per worker, never fewer than the devices allow
        assert messages <= workers * MESSAGES_PER_WORKER
        assert messages >= min(devices, workers * MESSAGES_PER_WORKER - workers)
    else:  # bounded: more messages, each as large as allowed
        assert messages >= workers * MESSAGES_PER_WORKER


def test_a_cohort_size_the_user_sets_is_kept():
    assert cohort_size(10_000, EngineConfig(devices_per_node=5, num_workers=2)) == 5
    assert cohort_size(3, EngineConfig(devices_per_node=50)) == 50


def test_the_issue_fleet_gets_few_messages():
    # 2,000 devices on 2 workers: 8 messages of 250, where the old fixed default of 5 gave 400.
    assert math.ceil(2_000 / cohort_size(2_000, EngineConfig(num_workers=2))) == 8
