"""One evaluation per distinct received model: devices that hold the same model share it.

At 12 dB and above almost every device of a round receives a bit-identical model, and
evaluating it is most of a device's work. Devices whose decoded state has the same
:func:`~testbed.scenarios.base.state_digest` are evaluated together: the model runs once
on the union of their test images (each image once), and each device's accuracy and loss
are taken from its own images' logits, summed exactly as :func:`testbed.training.evaluate`
sums them, so the metrics equal evaluating each device alone (each image's logits do not
depend on the other images of its batch: :data:`testbed.training.MIN_BATCH`).

A node queues its devices' evaluations while it runs a label's devices and runs them once
that label's devices are done (:func:`testbed.device.run_cohort`).
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from testbed.scenarios.base import State, state_digest

Record = Callable[[float, float], None]  # (accuracy, loss) -> None: the device's measurement


@dataclass
class _Group:
    label: str
    state: State
    members: list[tuple[object, np.ndarray, Record]] = field(default_factory=list)  # (device, test indices, record)


class SharedEvaluation:
    """The queued evaluations of a node's devices, grouped by (label, received state)."""

    def __init__(self):
        self._groups: dict[tuple[str, str], _Group] = {}
        self.evaluated = 0  # distinct models evaluated (for the benchmarks)
        self.queued = 0  # device evaluations asked for

    def add(self, device, label: str, state: State, test_idx, record: Record, digest: str | None = None) -> None:
        """Evaluate ``state`` (the model ``label`` decodes into) on the device's test images, later
        (``digest``: the state's :func:`state_digest`, when the caller has it)."""
        key = (label, digest or state_digest(state))
        group = self._groups.get(key)
        if group is None:
            group = self._groups[key] = _Group(label, state)
        group.members.append((device, np.asarray(test_idx, dtype=np.int64), record))
        self.queued += 1

    def run(self, world) -> None:
        """Every queued evaluation, one model run per group; a group that raises fails its devices."""
        from testbed.training import predict, scores

        groups, self._groups = self._groups, {}
        for group in groups.values():
            try:
                model = world.model(group.label)
                model.load_state_dict(group.state, strict=True)
                union = np.unique(np.concatenate([idx for _, idx, _ in group.members]))
                logits = predict(model, world.dataset.test_x[union]) if len(union) else None
                self.evaluated += 1
                for device, idx, record in group.members:
                    if len(idx) == 0:
                        record(0.0, 0.0)  # what evaluate gives an empty split
                        continue
                    record(*scores(logits[np.searchsorted(union, idx)], world.dataset.test_y[idx]))
            except Exception as exc:  # an evaluation that raises fails its devices, never the round
                logging.getLogger("testbed.device").debug(traceback.format_exc())
                for device, _, _ in group.members:
                    device.fail(f"error: {type(exc).__name__}: {exc}")
