"""A round in flight: its messages out on the nodes, its replies taken as they come.

The orchestrator keeps one round in flight, or two where the scenario's round plan does not
depend on the rounds before (``Scenario.plans_ahead``: broadcast): the next round's messages
then wait in the engine's queue while the current round finishes, so no worker idles at the
end of a round while the slowest cohort finishes, nor at the start of the next while the
simulation engine picks its messages up (it polls for new messages every 0.1 s). Rounds
are still committed one at a time, in order, each from its own replies.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field


@dataclass
class RoundInFlight:
    round: int
    devices: int  # devices taking part
    pending: dict[str, list[int]]  # message id -> the cohort (device ids) it carries
    measurements: list[dict]  # starts with the server's rows (devices that do not take part)
    launched: float = field(default_factory=time.perf_counter)
    transfers: list[dict] = field(default_factory=list)
    uploads: dict = field(default_factory=dict)
    device_states: dict = field(default_factory=dict)
    # Replies taken before the round became the one in front: (devices, transfers, measurements),
    # shown by the progress display when it does.
    early: list[tuple] = field(default_factory=list)

    def take(self, reply) -> None:
        """A node's reply (:class:`testbed.device.CohortReply`) for one of the round's cohorts."""
        self.transfers.extend(reply.transfers)
        self.measurements.extend(reply.measurements)
        self.uploads.update(reply.uploads)
        self.device_states.update(reply.device_states)


def owner(rounds, message_id: str) -> tuple[RoundInFlight, list[int]] | None:
    """The round in flight a reply belongs to and the cohort it answers (None: none pending)."""
    for flight in rounds:
        if message_id in flight.pending:
            return flight, flight.pending.pop(message_id)
    return None
