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


def test_two_thousand_devices_on_two_workers_get_eight_messages():
    # 2,000 devices on 2 workers: 8 messages of 250, where the old fixed default of 5 gave 400.
    assert math.ceil(2_000 / cohort_size(2_000, EngineConfig(num_workers=2))) == 8


# ---- one evaluation per distinct received model -------------------------------------------

SHARED_FLEET = ["fleet.devices=24", "fleet.link.model=[ideal, awgn, awgn, awgn]",
                "fleet.link.snr_db=[4, 6, 14, 20, 9, 7, 18, 30]", "data.test_per_device=30"]


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """The tiny broadcast experiment prepared in this process (central models trained), no Ray."""
    from conftest import TINY, tiny_config
    from testbed.orchestrator import Experiment

    experiment = Experiment(tiny_config(*SHARED_FLEET), tmp_path_factory.mktemp("shared") / "run", progress=False,
                            config_path=TINY)
    experiment.prepare()
    yield experiment
    experiment.finish()


def _cohort(experiment, round_: int, devices: list[int]):
    from testbed.device import RoundJob, run_cohort

    plan = experiment.scenario.plan_round(experiment, round_)
    return run_cohort(RoundJob(experiment.config_text, experiment.base_dir, round_, devices, experiment.labels, plan))


@pytest.mark.slow  # trains the tiny config's central models
def test_shared_evaluation_gives_each_device_its_own_metrics_exactly(prepared, monkeypatch):
    import testbed.device
    from testbed.scenarios.base import DeviceRun
    from testbed.shared_evaluation import SharedEvaluation
    from testbed.training import evaluate

    queues = []

    class Counted(SharedEvaluation):
        def __init__(self):
            super().__init__()
            queues.append(self)

    monkeypatch.setattr(testbed.device, "SharedEvaluation", Counted)
    devices = list(range(24))
    shared = _cohort(prepared, 1, devices).measurements
    queued, evaluated = sum(q.queued for q in queues), sum(q.evaluated for q in queues)
    assert queued == sum(1 for r in shared if r["decode_ok"])
    assert evaluated < queued / 2  # ideal and clean links share their models

    def alone(self, state, test_idx, record, digest=None):  # the evaluation before sharing: every device by itself
        model = self.world.model(self.label)
        model.load_state_dict(state)
        record(*evaluate(model, self.world.dataset.test_x[test_idx], self.world.dataset.test_y[test_idx]))

    monkeypatch.setattr(DeviceRun, "evaluate", alone)
    reference = _cohort(prepared, 1, devices).measurements
    assert len(shared) == len(reference) == 24 * len(prepared.labels)
    for a, b in zip(shared, reference):
        assert a == b or all(a[k] == b[k] or (a[k] != a[k] and b[k] != b[k]) for k in a), (a, b)  # NaN == NaN
    assert len({r["accuracy"] for r in shared if r["label"] == "q8"}) > 1  # the devices' own splits differ


def test_logits_do_not_depend_on_the_other_rows_of_the_batch():
    import torch

    from testbed.config import ModelConfig
    from testbed.models import build_model
    from testbed.training import MIN_BATCH, predict

    torch.manual_seed(0)
    model = build_model(ModelConfig(arch="deepcnn", width=32), (1, 28, 28), 10)
    x = torch.randn(300, 1, 28, 28)
    full = predict(model, x)
    for start, n in [(0, 1), (5, 2), (9, 5), (40, MIN_BATCH - 1), (100, 50), (250, 50)]:
        assert torch.equal(predict(model, x[start : start + n]), full[start : start + n]), (start, n)
    order = torch.randperm(300)
    assert torch.equal(predict(model, x[order]), full[order])


def test_the_progress_line_gives_the_rate_and_the_time_left_in_round_and_run():
    from testbed.progress import fleet_rate

    # 2,500 of 10,000 devices in 50 s: 50 devices/s, 150 s left in the round, 2 more rounds of 200 s.
    assert fleet_rate(2_500, 10_000, 2, 50.0) == "50.0 devices/s, round ETA 0:02:30, run ETA 0:09:10"
    assert fleet_rate(10, 10, 0, 2.0) == "5.0 devices/s, round ETA 0:00:00, run ETA 0:00:00"
    assert fleet_rate(0, 10, 3, 1.0) == "- devices/s"  # nothing to measure a rate on yet
    assert fleet_rate(7_200, 10_800, 0, 3_600.0) == "2.0 devices/s, round ETA 0:30:00, run ETA 0:30:00"
