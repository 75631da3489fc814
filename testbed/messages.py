"""The message schema between the ServerApp and the nodes, both halves, in Flower records.

One message per node and round (a :class:`RoundJob`): the run's config (YAML
text; a node rebuilds the fleet, data and models from it once per process), the
round, the node's cohort of device ids, the round's plan (blobs and tensors
shared by every device, each distinct tensor state sent once) and the state of
each (label, device) of the cohort for scenarios that keep one. One reply per
message (a :class:`CohortReply`): the cohort's transfer and measurement rows,
what each device sent up, and the devices' new states.

This module and :mod:`testbed.flower_app` are the only ones that know Flower's
record types; everything else works on these dataclasses.
"""

from __future__ import annotations

import json
from flwr.app import ArrayRecord, ConfigRecord, Message, RecordDict

from testbed.device import CohortReply, DeviceKey, RoundJob
from testbed.scenarios.base import RoundPlan, State, Upload, state_digest

MESSAGE_TYPE = "query.round"  # every round of every scenario is one query per node

# ---- tensors ---------------------------------------------------------------------------


def _state_record(state: State) -> ArrayRecord:
    return ArrayRecord(torch_state_dict={k: v.detach().cpu().contiguous() for k, v in state.items()})


def _record_state(record: ArrayRecord) -> State:
    return dict(record.to_torch_state_dict())


def _put_states(content: RecordDict | dict, prefix: str, states: dict) -> list:
    """Store ``states`` (key -> state) as records ``prefix/i``, each distinct state once; return the index."""
    index, seen = [], {}
    for key, state in states.items():
        digest = state_digest(state)
        if digest not in seen:
            seen[digest] = len(seen)
            content[f"{prefix}/{seen[digest]}"] = _state_record(state)
        index.append([key, seen[digest]])
    return index


def _get_states(content: RecordDict, prefix: str, index: list) -> dict:
    cache: dict[int, State] = {}
    out = {}
    for key, i in index:
        if i not in cache:
            cache[i] = _record_state(content[f"{prefix}/{i}"])
        out[key if isinstance(key, str) else tuple(key)] = cache[i]
    return out


def _device_keys(states: dict[DeviceKey, State]) -> dict:
    return {json.dumps([label, int(d)]): s for (label, d), s in states.items()}


def _from_device_keys(states: dict) -> dict[DeviceKey, State]:
    out = {}
    for key, s in states.items():
        label, d = json.loads(key)
        out[(label, int(d))] = s
    return out


# ---- the job -----------------------------------------------------------------------------


class PlanRecords:
    """A round plan as records, built once per round and shared by every node's message (the
    plan is the same for all; only the cohort and its device states differ)."""

    def __init__(self, plan: RoundPlan):
        self.states: dict = {}
        self.header = {
            "values": json.dumps(plan.values),
            "blob_names": list(plan.blobs),
            "states": json.dumps(_put_states(self.states, "state", plan.states)),
        }
        self.blobs = ConfigRecord({f"b{i}": data for i, data in enumerate(plan.blobs.values())})


def job_content(job: RoundJob, plan: PlanRecords | None = None) -> RecordDict:
    content = RecordDict()
    plan = plan or PlanRecords(job.plan)
    header = {
        "config": job.config_text,
        "base_dir": job.base_dir,
        "round": int(job.round),
        "devices": [int(d) for d in job.devices],
        "labels": list(job.labels),
        **plan.header,
        "device_states": json.dumps(_put_states(content, "device_state", _device_keys(job.device_states))),
    }
    for name, record in plan.states.items():
        content[name] = record
    content["job"] = ConfigRecord(header)
    content["blobs"] = plan.blobs
    return content


def job_message(job: RoundJob, node_id: int, plan: PlanRecords | None = None) -> Message:
    return Message(job_content(job, plan), dst_node_id=node_id, message_type=MESSAGE_TYPE)


def read_job(content: RecordDict) -> RoundJob:
    header = content["job"]
    blobs = content["blobs"]
    plan = RoundPlan(
        blobs={name: bytes(blobs[f"b{i}"]) for i, name in enumerate(header["blob_names"])},
        states=_get_states(content, "state", json.loads(str(header["states"]))),
        values=json.loads(str(header["values"])),
    )
    return RoundJob(
        config_text=str(header["config"]),
        base_dir=str(header["base_dir"]),
        round=int(header["round"]),
        devices=[int(d) for d in header["devices"]],
        labels=[str(x) for x in header["labels"]],
        plan=plan,
        device_states=_from_device_keys(_get_states(content, "device_state", json.loads(str(header["device_states"])))),
    )


# ---- the reply ---------------------------------------------------------------------------


def reply_content(reply: CohortReply) -> RecordDict:
    content = RecordDict()
    uploads = list(reply.uploads.items())
    content["rows"] = ConfigRecord(
        {
            "transfers": json.dumps(reply.transfers),
            "measurements": json.dumps(reply.measurements),
            "uploads": json.dumps([[label, int(d), up.meta] for (label, d), up in uploads]),
            "device_states": json.dumps(_put_states(content, "device_state", _device_keys(reply.device_states))),
        }
    )
    if uploads:
        content["upload_data"] = ConfigRecord({f"u{i}": up.data for i, (_, up) in enumerate(uploads)})
    return content


def read_reply(content: RecordDict) -> CohortReply:
    rows = content["rows"]
    uploads = {}
    for i, (label, d, meta) in enumerate(json.loads(str(rows["uploads"]))):
        uploads[(label, int(d))] = Upload(bytes(content["upload_data"][f"u{i}"]), meta)
    return CohortReply(
        transfers=json.loads(str(rows["transfers"])),
        measurements=json.loads(str(rows["measurements"])),
        uploads=uploads,
        device_states=_from_device_keys(_get_states(content, "device_state", json.loads(str(rows["device_states"])))),
    )
