"""The Flower apps: a ServerApp that owns the experiment, a ClientApp that emulates devices.

The same two apps run under Flower's simulation engine on Ray (``testbed run``)
and as a Flower App (``flwr run .``), so the code that emulates a fleet is the
code that would run on real devices.

One message per node and round carries everything the node needs: the run's
config (YAML text; nodes rebuild the fleet, data splits and model templates
from it and cache them per process), the round, the ids of the devices this
node emulates (its cohort), every strategy's payload bytes (encoded once per
round on the server) and the server's float models the payloads came from
(for the reconstruction error). The ClientApp runs each device of the cohort:
the device's own link (noise drawn from ``(seed, "link", round, device_id,
direction)``, never from the strategy, so all strategies meet the same
channel), decoding, measuring, evaluating, and in federated mode local training
and a compressed uplink. It replies with one metric row per device and
strategy. Results depend only on keys, never on the cohort or the worker.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import math
import os
import threading
import traceback
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp

from testbed import metrics
from strategies.base import is_conv_kernel
from testbed.payload import Payload, PayloadError
from testbed.rng import derive_rng, derive_seed

BROADCAST = "query.broadcast"
FEDERATED = "train.federated"
# Devices whose ClientApp work raises on purpose (comma-separated ids): a fault
# injection hook for resilience tests and demos; unset in normal runs.
FAIL_DEVICES_ENV = "TESTBED_FAIL_DEVICES"
# Devices whose worker process dies on the spot (os._exit), as a lost Ray worker would.
KILL_DEVICES_ENV = "TESTBED_KILL_DEVICES"


# ---- what a node rebuilds from the config, once per process -----------------------------


@dataclass
class NodeWorld:
    config: object  # ExperimentConfig
    fleet: object  # testbed.fleet.Fleet
    dataset: object  # testbed.data.Dataset
    strategies: dict  # label -> Strategy
    models: dict  # label -> receiver nn.Module (the template a payload decodes into)
    templates: dict  # label -> state_dict of that module (names, shapes, dtypes)
    uplink: object | None  # Strategy compressing federated updates
    splits: dict = field(default_factory=dict)  # device_id -> DeviceSplit
    clean: dict = field(default_factory=dict)  # (label, payload sha) -> clean decode
    links: dict = field(default_factory=dict)  # device_id -> Link

    def split(self, device_id: int):
        if device_id not in self.splits:
            from testbed.data import device_split

            device = self.fleet.device(device_id)
            cfg = self.config
            self.splits[device_id] = device_split(self.dataset, cfg.data, len(self.fleet.devices), device.partition, cfg.seed)
        return self.splits[device_id]

    def link(self, device_id: int):
        if device_id not in self.links:
            self.links[device_id] = self.fleet.link(device_id)
        return self.links[device_id]

    def link_model(self, device_id: int) -> str:
        return str(self.link(device_id).params.model)


def receiver_model(strategy, config, dataset) -> torch.nn.Module:
    """The model a device decodes ``strategy``'s payload into (names and shapes of what it sends).

    Its values are the seeded initial model, which is also the federated mode's starting model.
    """
    from testbed.training import model_template

    model = model_template(strategy, config.model, dataset.input_shape, dataset.num_classes, config.seed)
    return model.eval()


def constrained(strategy, model: torch.nn.Module, train=None) -> torch.nn.Module:
    """``model`` in the strategy's trained form, optionally trained (``train(model)``) in it."""
    if not strategy.keeps_form_in_federated_training():
        if train is not None:
            train(model)
        return model
    model = strategy.prepare_model(model)
    if train is not None:
        train(model)
    return strategy.after_training(model, lambda m: None)


_worlds: dict[str, NodeWorld] = {}
_world_lock = threading.Lock()
_threads_set = False


def config_sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def node_world(config_text: str, base_dir: str | None = None) -> NodeWorld:
    """Build (once per process and config) what a node needs to emulate devices."""
    global _threads_set
    if not _threads_set:
        # Metrics must not depend on thread scheduling; one thread per worker is also fastest here.
        torch.set_num_threads(1)
        # Flower's worker-side notices ("Manually terminating ClientAppActor" at every shutdown)
        # drown the run's own output; device errors are recorded in the metrics rows instead.
        logging.getLogger("flwr").setLevel(logging.ERROR)
        _threads_set = True
    key = config_sha(config_text)
    with _world_lock:
        if key in _worlds:
            return _worlds[key]
        import yaml

        from strategies.registry import build
        from testbed.config import validate_tree
        from testbed.data import load_dataset
        from testbed.fleet import Fleet

        config = validate_tree(yaml.safe_load(config_text), "run config")
        fleet = Fleet.from_config(config.fleet, config.seed, base_dir=base_dir or ".")
        dataset = load_dataset(config.data.dataset, config.data.dir)
        strategies = {label: build(spec) for label, spec in config.strategy_specs().items()}
        models = {label: receiver_model(s, config, dataset) for label, s in strategies.items()}
        templates = {label: {k: v.detach().clone() for k, v in m.state_dict().items()} for label, m in models.items()}
        uplink = build(dict(config.federated.uplink)) if config.mode == "federated" else None
        world = NodeWorld(config, fleet, dataset, strategies, models, templates, uplink)
        _worlds.clear()  # one experiment at a time per process
        _worlds[key] = world
        return world


# ---- message content ----------------------------------------------------------------------


def state_to_record(state: Mapping[str, torch.Tensor]) -> ArrayRecord:
    return ArrayRecord(torch_state_dict={k: v.detach().cpu().contiguous() for k, v in state.items()})


def record_to_state(record: ArrayRecord) -> dict[str, torch.Tensor]:
    return dict(record.to_torch_state_dict())


def round_content(
    *,
    config_text: str,
    base_dir: str,
    round_: int,
    devices: list[int],
    labels: list[str],
    payloads: Mapping[str, bytes],
    ref_records: list[ArrayRecord],
    ref_index: Mapping[str, int],
    ref_powers: Mapping[str, float],
) -> RecordDict:
    """The content of one node's message: shared records, the node's cohort."""
    content = RecordDict()
    content["job"] = ConfigRecord(
        {
            "config": config_text,
            "base_dir": base_dir,
            "round": int(round_),
            "devices": [int(d) for d in devices],
            "labels": list(labels),
            "ref_index": [int(ref_index[label]) for label in labels],
            "ref_power": [float(ref_powers[label]) for label in labels],
        }
    )
    content["payloads"] = ConfigRecord({label: payloads[label] for label in labels})
    for i, record in enumerate(ref_records):
        content[f"ref/{i}"] = record
    return content


# ---- the ClientApp ---------------------------------------------------------------------


def _devices_from_env(name: str) -> set[int]:
    raw = os.environ.get(name, "").strip()
    return {int(x) for x in raw.split(",") if x.strip()} if raw else set()


def run_cohort(content: RecordDict, federated: bool) -> tuple[list[dict], dict[str, bytes]]:
    """Emulate every device of the message's cohort; return metric rows and uplink payload bytes."""
    job = content["job"]
    world = node_world(str(job["config"]), str(job["base_dir"]) or None)
    round_ = int(job["round"])
    labels = list(job["labels"])
    refs: dict[int, dict] = {}
    payload_bytes = content["payloads"]
    fail = _devices_from_env(FAIL_DEVICES_ENV)
    kill = _devices_from_env(KILL_DEVICES_ENV)
    rows: list[dict] = []
    uplinks: dict[str, bytes] = {}
    for i, label in enumerate(labels):
        j = int(job["ref_index"][i])
        if j not in refs:
            refs[j] = record_to_state(content[f"ref/{j}"])
        reference, power = refs[j], float(job["ref_power"][i])
        raw = payload_bytes[label]
        payload = world.strategies[label].read(raw, world.templates[label])
        clean = _clean_decode(world, label, payload, raw)
        strategy = world.strategies[label]
        for device_id in job["devices"]:
            device_id = int(device_id)
            row = metrics.empty_row(round_, label, strategy.name, strategy.bits, device_id, world.link_model(device_id))
            try:
                if device_id in kill:
                    os._exit(17)
                if device_id in fail:
                    raise RuntimeError(f"injected failure ({FAIL_DEVICES_ENV})")
                up = run_device(world, label, payload, clean, reference, power, round_, device_id, row, federated)
                if up is not None:
                    uplinks[f"{label}/{device_id}"] = up
            except Exception as exc:  # a device that raises is a failed device, never a lost round
                row["failure"] = f"error: {type(exc).__name__}: {exc}"
            rows.append(row)
    return rows, uplinks


def _clean_decode(world: NodeWorld, label: str, payload: Payload, raw: bytes) -> dict | None:
    key = (label, hashlib.sha256(raw).hexdigest())
    if key not in world.clean:
        if len(world.clean) > 4 * len(world.strategies):
            world.clean.clear()
        try:
            world.clean[key] = world.strategies[label].decode(payload, world.templates[label])
        except PayloadError:
            world.clean[key] = None
    return world.clean[key]


def run_device(world, label, payload, clean, reference, power, round_, device_id, row, federated) -> bytes | None:
    """One device and strategy: receive over the link, decode, measure, evaluate (and train, send up)."""
    from testbed.training import evaluate

    seed = world.config.seed
    link = world.link(device_id)
    tx = link.transmit(payload, derive_rng(seed, "link", round_, device_id, "down"))
    row.update(metrics.downlink_fields(tx.stats.as_dict(), payload.protected_nbytes))
    if tx.received is None:
        row["failure"] = f"delivery: {tx.stats.failure or 'not delivered'}"
        return None
    try:
        received = world.strategies[label].decode(tx.received, world.templates[label])
        model = world.models[label]
        model.load_state_dict(received, strict=True)
    except (PayloadError, RuntimeError, KeyError, ValueError) as exc:
        row["failure"] = f"decode: {exc}"
        return None
    row["decode_ok"] = True
    row["recon_nmse_db"] = metrics.to_db(metrics.squared_error(received, reference) / power) if power else math.nan
    if clean is not None and power:
        row["recon_nmse_compression_db"] = metrics.to_db(metrics.squared_error(clean, reference) / power)
        row["recon_nmse_channel_db"] = metrics.to_db(metrics.squared_error(received, clean) / power)
    # Conv kernels alone: what the symmetry codecs act on (BatchNorm statistics dominate the whole-model power).
    kernels = {name: t for name, t in reference.items() if is_conv_kernel(t)}
    if kernels:
        row["recon_nmse_conv_db"] = metrics.nmse_db(received, kernels)
    split = world.split(device_id)
    x, y = world.dataset.test_x[split.test_idx], world.dataset.test_y[split.test_idx]
    accuracy, loss = evaluate(model, x, y)
    row.update(accuracy=float(accuracy), loss=float(loss), n_test=int(len(y)))
    if not federated:
        return None
    return train_and_send(world, label, model, received, round_, device_id, row)


def train_and_send(world, label, model, received, round_, device_id, row) -> bytes | None:
    """Federated: train the received model locally, send the compressed update up the same link."""
    from testbed.training import train_local

    cfg, seed = world.config, world.config.seed
    split = world.split(device_id)
    x, y = world.dataset.train_x[split.train_idx], world.dataset.train_y[split.train_idx]
    row["_n_train"] = int(len(y))  # FedAvg weight; not a column
    losses = []
    train_seed = derive_seed(seed, "train", round_, device_id)
    local = constrained(
        world.strategies[label], copy.deepcopy(model),
        lambda m: losses.append(train_local(m, x, y, cfg.federated.local, train_seed)),
    )
    row["train_loss"] = float(losses[0])
    trained = local.state_dict()
    delta = {k: (trained[k] - received[k]).detach().float() for k, v in received.items() if v.dtype.is_floating_point}
    up_payload = world.uplink.encode(delta)
    tx = world.link(device_id).transmit(up_payload, derive_rng(seed, "link", round_, device_id, "up"))
    row.update(metrics.uplink_fields(tx.stats.as_dict(), up_payload.protected_nbytes))
    if tx.received is None:
        row["failure"] = f"uplink delivery: {tx.stats.failure or 'not delivered'}"
        return None
    return tx.received.to_bytes()


client_app = ClientApp()


def _reply(message: Message, federated: bool) -> Message:
    rows, uplinks = run_cohort(message.content, federated)
    content = RecordDict()
    content["rows"] = ConfigRecord({"json": json.dumps(rows)})
    if uplinks:
        content["uplinks"] = ConfigRecord(uplinks)
    return Message(content, reply_to=message)


@client_app.query("broadcast")
def broadcast(message: Message, context: Context) -> Message:
    return _reply(message, federated=False)


@client_app.train("federated")
def federated(message: Message, context: Context) -> Message:
    return _reply(message, federated=True)


# ---- the ServerApp ---------------------------------------------------------------------


def make_server_app(experiment) -> ServerApp:
    """A ServerApp driving an :class:`testbed.orchestrator.Experiment` prepared in this process."""
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        experiment.drive(grid)

    return app


def _app_path(text: str) -> Path:
    """A config path from the run config: as given, else under the app (project) folder."""
    path = Path(text).expanduser()
    if path.is_absolute() or path.exists():
        return path
    return Path(__file__).resolve().parents[1] / path


# ``flwr run .``: the run config names the experiment config and the run folder
# ([tool.flwr.app.config] in pyproject.toml, overridable with --run-config).
server_app = ServerApp()


@server_app.main()
def _flwr_main(grid: Grid, context: Context) -> None:
    from testbed.config import load_config
    from testbed.orchestrator import Experiment

    run_config = context.run_config
    config_path = _app_path(str(run_config.get("config", "configs/tiny.yaml")))
    overrides = [s for s in str(run_config.get("set", "")).split(";") if s.strip()]
    config = load_config(config_path, overrides)
    out = Path(str(run_config.get("out", "runs/flwr"))).expanduser()
    experiment = Experiment(
        config, out, resume=bool(run_config.get("resume", False)), progress=False, config_path=config_path
    )
    try:
        experiment.prepare()
        experiment.drive(grid)
    except Exception:
        experiment.log(traceback.format_exc())
        raise
    finally:
        experiment.finish()
