"""The benchmarks' baseline: a broadcast round's per-device work in plain processes, no Flower or Ray.

Every (label, device) of the round: the link (the same keyed noise as the fleet), the decode into
the receiver's model, the reconstruction errors (the fleet's own function), and
the evaluation on the device's test split; with ``share`` the evaluations go through
:class:`testbed.shared_evaluation.SharedEvaluation` as on the fleet's nodes (the same work the
fleet does), without it each device evaluates alone. The world (dataset, fleet, receiver models)
is the node's :class:`testbed.device.NodeWorld`, built once per process. ``run_pool`` spreads the
devices over a process pool of every core, in contiguous chunks the size of the fleet's cohorts.

Used by scripts/bench_fleet.py and scripts/bench_scale.py.
"""

from __future__ import annotations

import multiprocessing
import time

_world = None
_plan = None


def _start(config_text: str, base_dir: str, plan) -> None:
    import torch

    from testbed.device import node_world

    global _world, _plan
    torch.set_num_threads(1)
    _world, _plan = node_world(config_text, base_dir), plan
    for label in plan.labels:  # the receiver models, before any round is timed
        _world.model(label)


class _Device:
    """What SharedEvaluation needs of a device: somewhere to put a failure (none here)."""

    def fail(self, reason: str) -> None:
        pass


def run_devices(world, plan, round_: int, device_ids: list[int], share: bool) -> int:
    """The round's work for ``device_ids`` and every label; the (label, device) pairs evaluated."""
    from testbed import metrics
    from testbed.payload import PayloadError
    from testbed.rng import derive_rng
    from testbed.scenarios.base import state_digest
    from testbed.scenarios.broadcast import reconstruction_errors
    from testbed.shared_evaluation import SharedEvaluation
    from testbed.training import evaluate

    seed, data = world.config.seed, world.dataset
    evaluated = 0
    for label in plan.labels:
        raw = plan.blobs[f"payload/{label}"]
        strategy, model, template = world.strategies[label], world.model(label), world.template(label)
        payload = world.parse(label, raw)
        reference = plan.states[f"reference/{label}"]
        power = metrics.float_power(reference)  # the fleet's plan carries it
        queue = SharedEvaluation() if share else None
        for device_id in device_ids:
            tx = world.link(device_id, "server->device").transmit(payload, derive_rng(seed, "link", round_, device_id, "down"))
            if tx.received is None:
                continue
            try:
                received = strategy.decode(tx.received, template)
                model.load_state_dict(received, strict=True)
            except (PayloadError, RuntimeError, KeyError, ValueError):
                continue
            digest = state_digest(received)
            reconstruction_errors(world, label, raw, round_, received, digest, reference, power)
            idx = world.split(device_id).test_idx
            if share:
                queue.add(_Device(), label, received, idx, lambda accuracy, loss: None, digest)
            else:
                evaluate(model, data.test_x[idx], data.test_y[idx])
            evaluated += 1
        if share:
            queue.run(world)
    return evaluated


def _chunk(args) -> int:
    round_, device_ids, share = args
    return run_devices(_world, _plan, round_, device_ids, share)


class Plan:
    """The round's shared items as the fleet's plan has them (payload bytes, float models)."""

    def __init__(self, labels, blobs, states):
        self.labels, self.blobs, self.states = list(labels), dict(blobs), dict(states)


def plan_of(experiment) -> Plan:
    """The broadcast plan of a prepared Experiment (testbed.orchestrator), for the pool."""
    plan = experiment.scenario.plan_round(experiment, 1)
    return Plan(experiment.labels, plan.blobs, plan.states)


def run_pool(experiment, rounds: list[int], workers: int, share: bool) -> list[float]:
    """Seconds per round of the plain loop over ``workers`` processes (each builds its world first,
    outside the timing). Where the fleet sends a round's messages while the round before still runs
    (the scenario plans ahead, testbed.inflight), the loop queues every round's chunks at once, in
    order, so that it too never waits at a round's end; a round's time is then from the end of the
    round before to the end of its last chunk."""
    from testbed.engine import cohort_size

    plan = plan_of(experiment)
    devices = [d.device_id for d in experiment.fleet.devices]
    context = multiprocessing.get_context("spawn")  # a fresh process, as a Ray worker is
    size = cohort_size(len(experiment.fleet.devices), experiment.config.engine)  # the fleet's cohorts
    jobs = []
    for round_ in rounds:
        taking_part = sorted(d.device_id for d in experiment.fleet.available(round_, experiment.config.seed))
        jobs.append([(round_, taking_part[i : i + size], share) for i in range(0, len(taking_part), size)])
    with context.Pool(workers, initializer=_start, initargs=(experiment.config_text, experiment.base_dir, plan)) as pool:
        pool.map(_chunk, [(0, devices[:1], share)] * workers, chunksize=1)  # every process builds its world
        if not experiment.scenario.plans_ahead or not all(jobs):  # a round with no device: nothing to queue
            times = []
            for round_jobs in jobs:
                start = time.perf_counter()
                pool.map(_chunk, round_jobs, chunksize=1)
                times.append(time.perf_counter() - start)
            return times
        ends, left = [], [len(j) for j in jobs]
        start = time.perf_counter()
        for round_index, _ in pool.imap(_indexed, [(k, job) for k, round_jobs in enumerate(jobs) for job in round_jobs]):
            left[round_index] -= 1
            if not left[round_index]:  # in order: imap yields the chunks as they were queued
                ends.append(time.perf_counter())
        return [end - before for end, before in zip(ends, [start, *ends])]


def _indexed(args) -> tuple[int, int]:
    round_index, job = args
    return round_index, _chunk(job)
