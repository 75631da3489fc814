"""Update: a deployed model refreshed on every device with compressed updates, version by version.

Every device holds the deployed model (version 0: installed at the start, or
sent in round 1 by the ``full`` strategy). Each later round the server
retrains the next version on new data of the drifted task and sends every
device an update, which it applies to the model it holds. The update of a
label is a delta against the receiver's base, encoded by the label's strategy
(``quantise`` of the delta, ``topk``, ``lowrank``, ``factorised``), or, for
the labels listed in ``full_model``, the label's strategy applied to the whole
new model (the full-model baselines).

The server keeps, per label, the reference chain R_0, R_1, ...: what a device
holds after a clean chain of updates (R_v = R_{v-1} + decoded update v). It
retrains version v from R_{v-1}, the model the devices hold, so the delta is
exactly what the strategy's training made (a factorised update is W0 + U V^T
with W0 the devices' weights) and the compression error of one update is
corrected by the next. It records the version each device acknowledged and
sends the updates it missed, one after the other in one payload (a *bundle*:
one header, one checksum), or the whole reference model by the ``full``
strategy when the device holds nothing or is more than ``max_gap`` versions
behind; a lost update therefore never corrupts a later one. The
acknowledgement itself is not modelled as a transfer (a few bytes on a control
channel; **our choice**).

Device state (kept between rounds, sent with the round's messages): the
version held and the sparse difference between the model held and that
version's reference (empty on an ideal link: only channel damage or a lossy
``full`` strategy make it non-zero), so it stays small.

Drift kinds (``drift``), on any dataset of the config; the deployed model is
trained on ``deploy_size`` images of the old task, each version on
``update_size`` fresh images of the new task:

- ``refine``: old and new task are the same; the update brings more data.
- ``shift``: the new task's images are the old ones rotated by ``angle`` degrees
  (bilinear, border padding).
- ``new-classes``: the deployed model knows classes ``0 .. old_classes-1`` (its
  output layer has every class); the new task has them all.

The accuracy on the new task is ``accuracy``, on the old task ``accuracy_old``
(forgetting), both on the device's local test split.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import replace
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from pydantic import ConfigDict, Field, field_validator

from strategies.base import valid_model
from testbed import metrics
from testbed.compute import add_flops, decode_flops
from testbed.payload import Payload, PayloadSchema, Segment
from testbed.recipes import TrainConfig
from testbed.report.figures import figure
from testbed.rng import derive_rng, derive_seed
from testbed.scenarios.base import DeviceRun, RoundPlan, RoundResults, Scenario, ScenarioOptions, plain_state, state_digest
from testbed.tables import MODEL_QUALITY, Column
from testbed.transfer import Transfer

FULL = Transfer("full", "server->device", "the whole reference model, by the full strategy (deployment, resync)")
UPDATE = Transfer("update", "server->device", "the updates the device missed (one bundle), or a full-model label's model")

NOTHING = -1  # the version of a device that holds no model


class RetrainConfig(TrainConfig):
    """The server's retraining of each version (its own defaults, so setting one key keeps the rest)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    epochs: float = Field(default=2.0, gt=0)
    batch_size: int = Field(default=64, ge=1)
    schedule: Literal["onecycle", "cosine", "constant"] = "onecycle"


class UpdateOptions(ScenarioOptions):
    drift: Literal["refine", "shift", "new-classes"] = "refine"
    deploy_size: int = Field(default=1000, ge=2)  # images the deployed model is trained on
    update_size: int = Field(default=2000, ge=2)  # fresh images of the new task per version
    angle: float = 30.0  # shift: degrees, counter-clockwise
    old_classes: int = Field(default=5, ge=1)  # new-classes: the deployed model's classes 0..old_classes-1
    deploy: Literal["installed", "sent"] = "installed"
    full: dict[str, Any] = {"strategy": "raw"}  # the strategy of whole-model sends (deployment, resync)
    max_gap: int = Field(default=3, ge=1)  # a device further behind gets the whole model
    full_model: list[str] = []  # labels whose strategy sends the whole new model instead of a delta
    retrain: RetrainConfig = RetrainConfig()
    eval_images: int = Field(default=2000, ge=1)  # the server's figures: the first N test images

    @field_validator("full")
    @classmethod
    def _full_strategy(cls, value):
        from strategies.registry import checked_spec

        return checked_spec(value)


@contextmanager
def one_thread():
    """The server's training on one thread: the same floats whatever the cores (a resumed run, another machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


# ---- the tasks -------------------------------------------------------------------------


def rotate(x: torch.Tensor, degrees: float) -> torch.Tensor:
    """Images N x C x H x W rotated by ``degrees`` (bilinear; border padding keeps the background)."""
    a = math.radians(degrees)
    theta = torch.tensor([[math.cos(a), -math.sin(a), 0.0], [math.sin(a), math.cos(a), 0.0]], dtype=x.dtype)
    grid = torch.nn.functional.affine_grid(theta.expand(len(x), 2, 3), list(x.shape), align_corners=False)
    return torch.nn.functional.grid_sample(x, grid, padding_mode="border", align_corners=False)


class Tasks:
    """The old and the new task of a drift kind, as functions of images and labels."""

    def __init__(self, options: UpdateOptions):
        self.options = options

    def old(self, x, y):
        if self.options.drift == "new-classes":
            keep = y < self.options.old_classes
            return x[keep], y[keep]
        return x, y

    def new(self, x, y):
        if self.options.drift == "shift":
            return rotate(x, self.options.angle), y
        return x, y

    def deploy_data(self, dataset, seed: int):
        """The deployed model's training images (old task)."""
        order = self._order(dataset, seed)
        x, y = self.old(dataset.train_x[order], dataset.train_y[order])
        return x[: self.options.deploy_size], y[: self.options.deploy_size]

    def version_data(self, dataset, seed: int, version: int):
        """Version ``version``'s fresh images of the new task (after the deployment's; wrapping round
        the training set when it runs out)."""
        o = self.options
        start = o.deploy_size + (version - 1) * o.update_size
        idx = np.take(self._order(dataset, seed), np.arange(start, start + o.update_size), mode="wrap")
        return self.new(dataset.train_x[idx], dataset.train_y[idx])

    @staticmethod
    def _order(dataset, seed: int) -> np.ndarray:
        return derive_rng(seed, "update-data").permutation(len(dataset.train_y))


# ---- bundles: the missed updates in one payload -----------------------------------------


def bundle_schema(part: PayloadSchema, versions: list[int]) -> PayloadSchema:
    """The schema of updates ``versions`` one after the other (both ends derive it: no bytes)."""
    specs = [replace(spec, name=f"v{v}:{spec.name}") for v in versions for spec in part.specs]
    return PayloadSchema(tuple(specs), f"update bundle {versions}: {part.identity}")


def bundle(parts: dict[int, Payload]) -> Payload:
    versions = sorted(parts)
    schema = bundle_schema(parts[versions[0]].schema, versions)
    segments = [Segment(f"v{v}:{s.name}", s.data, s.protected, s.fmt) for v in versions for s in parts[v].segments]
    return Payload(segments, schema)


def unbundle(payload: Payload, part: PayloadSchema, versions: list[int]) -> dict[int, Payload]:
    out = {}
    for v in versions:
        prefix = f"v{v}:"
        segments = [Segment(s.name[len(prefix):], s.data, s.protected, s.fmt) for s in payload.segments
                    if s.name.startswith(prefix)]
        out[v] = Payload(segments, part)
    return out


# ---- device models: a reference and a sparse deviation ----------------------------------


def float_names(state) -> list[str]:
    return [k for k, v in state.items() if v.dtype.is_floating_point]


def add_delta(base, delta) -> dict:
    """``base`` with ``delta`` added to its float tensors (the others kept)."""
    return {k: (v + delta[k].to(v.dtype)) if k in delta else v.clone() for k, v in base.items()}


def device_state(version: int, held, reference) -> dict:
    """What a device keeps: its version and where its model differs from that version's reference."""
    if held is None:
        return {"version": torch.tensor(version), "index": torch.zeros(0, dtype=torch.int64), "value": torch.zeros(0)}
    names = float_names(reference)
    diff = torch.cat([(held[k].float() - reference[k].float()).reshape(-1) for k in names])
    index = torch.nonzero(diff != 0).reshape(-1)  # NaN != 0 too: damage is kept as it is
    return {"version": torch.tensor(version), "index": index, "value": diff[index]}


def held_model(state: dict, reference) -> dict:
    flat = torch.cat([reference[k].float().reshape(-1) for k in float_names(reference)])
    flat[state["index"]] += state["value"]
    out, pos = {}, 0
    for k, v in reference.items():
        if v.dtype.is_floating_point:
            out[k] = flat[pos : pos + v.numel()].reshape(v.shape).to(v.dtype)
            pos += v.numel()
        else:
            out[k] = v.clone()
    return out


def as_bytes(t: torch.Tensor) -> bytes:
    return t.numpy().tobytes()


def as_tensor(data: bytes) -> torch.Tensor:
    return torch.frombuffer(bytearray(data), dtype=torch.uint8) if data else torch.zeros(0, dtype=torch.uint8)


# ---- the scenario -------------------------------------------------------------------------

_QUALITY = {c.name: c for c in MODEL_QUALITY}


class Update(Scenario):
    name = "update"
    description = "A deployed model refreshed with compressed updates (deltas against the device's version)."
    Options: ClassVar = UpdateOptions
    transfers = (FULL, UPDATE)
    keeps_device_state = True
    fleet_accuracy = "last"
    measurement_columns = (
        _QUALITY["decode_ok"], _QUALITY["accuracy"], _QUALITY["loss"], _QUALITY["n_test"],
        Column("accuracy_old", "float", "", "accuracy on the old task (the deployed model's), same split: forgetting"),
        _QUALITY["recon_nmse_db"],
        Column("version", "int", "", "the model version the device holds after the round (-1: none)"),
        Column("lag", "int", "", "versions the device is behind the server's after the round"),
        Column("sent", "str", "", "what it was sent: update (a bundle of deltas, or a full-model label's model), full, or nothing"),
        Column("updates_sent", "int", "", "deltas in the bundle it was sent (0: none, or a whole model)"),
    )

    def __init__(self, options, config):
        super().__init__(options, config)
        from strategies.registry import build

        self.full = build(dict(options.full))
        self.tasks = Tasks(options)

    def version_of_round(self, round_: int) -> int:
        return round_ - 1 if self.options.deploy == "sent" else round_

    # ---- server side -----------------------------------------------------------------
    def start(self, server) -> None:
        from testbed.config import ConfigError

        unknown = sorted(set(self.options.full_model) - set(server.labels))
        if unknown:
            raise ConfigError(f"scenario.full_model: {unknown[0]!r} is not a strategy label ({', '.join(server.labels)})")
        self.server = server
        self._trained: dict = {}  # (update training key, base digest, version) -> retrained state
        self._eval = self._eval_sets(server.dataset)
        if server.restore is not None:
            r = server.restore
            self.refs, self.history, self.acked = r["refs"], r["history"], r["acked"]
            self.payloads = {label: [bytes(t.numpy()) for t in ts] for label, ts in r["payloads"].items()}
            return
        deployed = self._deployed_model(server)
        installed = self.options.deploy == "installed"
        self.refs, self.payloads, self.history, self.acked = {}, {}, {}, {}
        for label, strategy in server.strategies.items():
            self._check_architecture(label, strategy, deployed)
            sender = strategy if label in self.options.full_model else self.full
            payload = None if installed else sender.encode(deployed)
            ref = deployed if installed else sender.decode(payload, deployed)
            self.refs[label] = [plain_state(ref)]
            self.payloads[label] = [b"" if payload is None else payload.to_bytes()]  # version 0: whole model
            self.acked[label] = {str(d.device_id): 0 if installed else NOTHING for d in server.fleet.devices}
            self.history[label] = [self._figures(0, deployed, self.refs[label][0], payload)]

    def _deployed_model(self, server) -> dict:
        from strategies.base import Strategy
        from testbed.training import initial_model, train_epochs

        cfg = self.config
        x, y = self.tasks.deploy_data(server.dataset, cfg.seed)
        server.log(f"deployed model: {len(y)} images of the old task ({self.options.drift})")
        model = initial_model(Strategy(), cfg.model, server.dataset.input_shape, server.dataset.num_classes, cfg.seed)
        with one_thread():
            train_epochs(model, x, y, cfg.model.train, derive_seed(cfg.seed, "deploy-train"))
        return plain_state(model.eval().state_dict())

    def _check_architecture(self, label: str, strategy, deployed: dict) -> None:
        from testbed.config import ConfigError
        from testbed.training import receiver_model

        template = receiver_model(strategy, self.config, self.server.dataset).state_dict()
        if {k: tuple(v.shape) for k, v in template.items()} != {k: tuple(v.shape) for k, v in deployed.items()}:
            raise ConfigError(f"strategies: {label} ({strategy.name}) sends another architecture than the "
                              "deployed model; the update scenario needs strategies of plain models")

    def _eval_sets(self, dataset) -> dict:
        n = self.options.eval_images
        x, y = dataset.test_x[:n], dataset.test_y[:n]
        return {"new": self.tasks.new(x, y), "old": self.tasks.old(x, y)}

    def _accuracy(self, state: dict, task: str) -> float:
        from testbed.training import evaluate, receiver_model

        key = f"{state_digest(state)}:{task}"
        cache = self.server.accuracy_cache
        if key not in cache:
            model = receiver_model(self.full, self.config, self.server.dataset)
            model.load_state_dict(state)
            cache[key] = float(evaluate(model, *self._eval[task])[0])
        return cache[key]

    def _figures(self, version: int, trained: dict, reference: dict, payload: Payload | None) -> dict:
        """The server's figures of a version: update bytes, accuracy of the retrained and the reference model."""
        return {
            "version": version,
            "update_bytes": None if payload is None else payload.nbytes,
            "server_accuracy": self._accuracy(trained, "new"),
            "accuracy": self._accuracy(reference, "new"),
            "accuracy_old": self._accuracy(reference, "old"),
        }

    def _retrain(self, strategy, base: dict, version: int) -> dict:
        """Version ``version`` retrained from ``base`` the way ``strategy`` trains its updates (shared
        by strategies with the same key and base)."""
        from torch.nn.utils import parametrize

        from strategies.base import Strategy
        from testbed.training import initial_model, train_epochs

        key = (strategy.update_training_key(), state_digest(base), version)
        if key not in self._trained:
            cfg, dataset = self.config, self.server.dataset
            model = initial_model(Strategy(), cfg.model, dataset.input_shape, dataset.num_classes, cfg.seed)
            model.load_state_dict(base)
            with torch.random.fork_rng(devices=[]):  # the factors' initial values, seeded
                torch.manual_seed(derive_seed(cfg.seed, "update-init", version))
                model = strategy.prepare_update(model)
            x, y = self.tasks.version_data(dataset, cfg.seed, version)
            with one_thread():
                train_epochs(model, x, y, self.options.retrain, derive_seed(cfg.seed, "update-train", version))
            for module in model.modules():
                if parametrize.is_parametrized(module):
                    for name in list(module.parametrizations):
                        parametrize.remove_parametrizations(module, name, leave_parametrized=True)
            self._trained[key] = plain_state(model.eval().state_dict())
        return self._trained[key]

    def _new_version(self, version: int) -> None:
        self._trained = {k: v for k, v in self._trained.items() if k[2] == version}  # earlier ones are done
        for label, strategy in self.server.strategies.items():
            base = self.refs[label][-1]
            trained = self._retrain(strategy, base, version)
            if label in self.options.full_model:
                payload = strategy.encode(trained)
                ref = plain_state(strategy.decode(payload, base))
            else:
                delta = {k: trained[k] - base[k] for k in float_names(base)}
                payload = strategy.encode(delta)
                ref = add_delta(base, strategy.decode(payload, delta, delta=True))
            self.refs[label].append(ref)
            self.payloads[label].append(payload.to_bytes())
            self.history[label].append(self._figures(version, trained, ref, payload))
            self.server.log(f"version {version} {label}: {payload.nbytes} B, accuracy {self.history[label][-1]['accuracy']:.4f}")

    def plan_round(self, server, round_: int) -> RoundPlan:
        v = self.version_of_round(round_)
        if v >= len(self.refs[server.labels[0]]):
            self._new_version(v)
        plan = RoundPlan(values={"version": v, "from": {label: dict(acked) for label, acked in self.acked.items()}})
        for label, strategy in server.strategies.items():
            held = sorted(set(self.acked[label].values()))
            for a in {*held, v} - {NOTHING}:
                plan.states[f"reference/{label}/{a}"] = self.refs[label][a]
            if label in self.options.full_model:
                if v > 0 or self.options.deploy == "sent":
                    plan.blobs[f"update/{label}"] = self.payloads[label][v]
                continue
            if any(a == NOTHING or v - a > self.options.max_gap for a in held):
                plan.blobs[f"full/{label}"] = self.full.encode(self.refs[label][v]).to_bytes()
            template = self._delta_template(label)
            for a in held:
                if a != NOTHING and 0 < v - a <= self.options.max_gap:
                    parts = {n: strategy.read(self.payloads[label][n], template) for n in range(a + 1, v + 1)}
                    plan.blobs[f"update/{label}/{a}"] = bundle(parts).to_bytes()
        return plan

    def _delta_template(self, label: str) -> dict:
        ref = self.refs[label][0]
        return {k: ref[k] for k in float_names(ref)}

    def absorb(self, server, round_: int, results: RoundResults) -> None:
        """Record the version each device acknowledged (devices whose reply was lost keep theirs)."""
        for row in results.measurements:
            version = row.get("version")
            if version is not None and not (isinstance(version, float) and math.isnan(version)):
                self.acked[row["label"]][str(row["device_id"])] = int(version)

    def saved_state(self) -> dict:
        payloads = {label: [as_tensor(p) for p in ps] for label, ps in self.payloads.items()}
        return {"refs": self.refs, "payloads": payloads, "history": self.history, "acked": self.acked}

    def summary(self, server, label: str) -> dict:
        """The server's figures of every version (update bytes from the previous version; accuracy of the
        reference model on the first ``eval_images`` test images, new and old task)."""
        return {"versions": self.history[label]}

    # ---- device side -----------------------------------------------------------------
    def run_device(self, device: DeviceRun) -> None:
        world, label, plan = device.world, device.label, device.plan
        v = int(plan.values["version"])
        version, held = self._held(device)
        expected = int(plan.values["from"][label][str(device.device_id)])
        if version != expected:  # the server's record and the device disagree: never apply a wrong base
            device.fail(f"device holds version {version}, the server's record says {expected}")
            return  # the device keeps what it holds
        if version < v:
            received = self._receive(device, version, held, v)
            if received is not None:
                version, held = v, received
        reference = plan.states.get(f"reference/{label}/{version}")
        device.state = device_state(version, held, reference) if held is not None else device_state(NOTHING, None, None)
        device.measure(version=version, lag=v - version)
        if held is None:
            return
        from testbed.training import evaluate

        model = world.model(label)
        model.load_state_dict(held)
        split = device.split
        x, y = world.dataset.test_x[split.test_idx], world.dataset.test_y[split.test_idx]
        new_x, new_y = self.tasks.new(x, y)
        accuracy, loss = evaluate(model, new_x, new_y)
        old_x, old_y = self.tasks.old(x, y)
        device.compute(world.forward_flops(label) * (len(new_y) + len(old_y)))
        accuracy_old = float(evaluate(model, old_x, old_y)[0]) if len(old_y) else math.nan
        power = metrics.float_power(reference)
        nmse = metrics.to_db(metrics.squared_error(held, reference) / power) if power else math.nan
        device.measure(accuracy=float(accuracy), loss=float(loss), n_test=int(len(y)), accuracy_old=accuracy_old,
                       recon_nmse_db=nmse)

    def _held(self, device: DeviceRun) -> tuple[int, dict | None]:
        """The device's version and model (a device with no state holds the installed model, if any)."""
        if device.state is None:
            if self.options.deploy == "installed":
                return 0, device.plan.states[f"reference/{device.label}/0"]
            return NOTHING, None
        version = int(device.state["version"])
        if version == NOTHING:
            return NOTHING, None
        return version, held_model(device.state, device.plan.states[f"reference/{device.label}/{version}"])

    def _receive(self, device: DeviceRun, version: int, held: dict | None, v: int) -> dict | None:
        """Bring the device from ``version`` to ``v``; the new model, or None if the transfer failed."""
        world, label, strategy = device.world, device.label, device.strategy
        template = world.template(label)
        if label in self.options.full_model:
            raw = device.plan.blobs[f"update/{label}"]
            sent_payload, decode = world.parse(label, raw), (lambda p: strategy.decode(p, template))
            result = device.transfer(UPDATE, sent_payload, decode=decode)
            sent, count = UPDATE.name, 0
        elif version == NOTHING or v - version > self.options.max_gap:
            raw = device.plan.blobs[f"full/{label}"]
            sent_payload, decode = self.full.read(raw, template), (lambda p: self.full.decode(p, template))
            result = device.transfer(FULL, sent_payload, strategy_name=self.full.name, decode=decode)
            sent, count = FULL.name, 0
        else:
            deltas = {k: template[k] for k in float_names(template)}
            part = strategy.payload_schema(deltas)
            versions = list(range(version + 1, v + 1))
            raw = device.plan.blobs[f"update/{label}/{version}"]

            def apply(payload):
                model = held
                for p in unbundle(payload, part, versions).values():  # in version order
                    delta = strategy.decode(p, deltas, delta=True)
                    add_flops(sum(t.numel() for t in delta.values()))  # adding it: one operation per value
                    model = add_delta(model, delta)
                return valid_model(model)

            sent_payload, decode = Payload.from_bytes(raw, bundle_schema(part, versions)), apply
            result = device.transfer(UPDATE, sent_payload, decode=decode)
            sent, count = UPDATE.name, len(versions)
        if result.row["delivered"]:  # decoded whether it loads or not; counted on the payload as sent (shapes only)
            key = ("decode-flops", label, sent, raw)
            device.compute(world.memo(key, lambda: decode_flops(lambda: decode(sent_payload))))
        device.measure(sent=sent, updates_sent=count, decode_ok=result.ok)
        return result.value if result.ok else None




# ---- the report's figure (registered on import; matplotlib and pandas are loaded only to draw) -----


def fleet_lag(run, rows):
    """(round, device_id, lag) for every device of the fleet and round, those that sat the round out
    included: the server's version of the round less the version the device last reported holding
    (before its first report: the installed version 0, or none (-1) when the deployment is sent)."""
    import pandas as pd

    rows = rows.assign(round=pd.to_numeric(rows["round"], errors="coerce"),
                       version=pd.to_numeric(rows["version"], errors="coerce"),
                       lag=pd.to_numeric(rows["lag"], errors="coerce")).dropna(subset=["round", "version", "lag"])
    server = (rows["version"] + rows["lag"]).groupby(rows["round"]).max()
    devices = run.devices["device_id"].tolist() if "device_id" in run.devices else rows["device_id"].unique().tolist()
    deploy = (run.config.get("scenario") or {}).get("deploy", "installed")
    start = 0 if deploy == "installed" else NOTHING
    out = []
    held = {int(d): start for d in devices}
    for round_, v in server.items():
        for r in rows[rows["round"] == round_].itertuples():
            held[int(r.device_id)] = int(r.version)
        out += [(int(round_), d, int(v) - h) for d, h in held.items()]
    return pd.DataFrame(out, columns=["round", "device_id", "lag"])


@figure("update-rounds", "Versions and accuracy over rounds",
        "Left: how many versions each device of the fleet is behind the server after each round (dots, "
        "jittered; a device that sat the round out keeps the version it last reported); middle and right: "
        "the accuracy on the new task and on the old one (forgetting) of each device that took part. "
        "Lines are the means over those devices.",
        needs=("lag",), size=(11.5, 3.4))
def draw_update_rounds(view, fig) -> None:
    import pandas as pd
    from matplotlib.ticker import MaxNLocator

    axes = fig.subplots(1, 3)
    jitter = np.random.default_rng(0)  # fixed: the page is the same on every render
    width = 0.6 / max(1, len(view.series))
    for i, s in enumerate(view.series):
        rows = s.measurements
        shift = (i - (len(view.series) - 1) / 2) * width
        panels = [fleet_lag(s.run, rows).set_index("round")["lag"]]
        for column in ("accuracy", "accuracy_old"):
            values = pd.to_numeric(rows[column], errors="coerce") if column in rows else pd.Series(dtype=float)
            panels.append(values.set_axis(pd.to_numeric(rows["round"], errors="coerce")).dropna())
        for ax, values, first in zip(axes, panels, (True, False, False)):
            if values.empty:
                continue
            x = values.index.to_numpy(float) + shift
            ax.scatter(x + jitter.uniform(-width / 3, width / 3, len(x)), values.to_numpy(float), s=7,
                       color=s.color, marker=s.marker, alpha=0.3, linewidths=0)
            mean = values.groupby(level=0).mean()
            ax.plot(mean.index.to_numpy(float) + shift, mean.to_numpy(), color=s.color, marker=s.marker,
                    linestyle=s.linestyle, label=s.label if first else None)
    for ax, title in zip(axes, ("version lag, every device (versions behind)", "accuracy, new task",
                                "accuracy, old task")):
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("round")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes[0].yaxis.set_major_locator(MaxNLocator(integer=True))
    handles, labels = axes[0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="center left", bbox_to_anchor=(0.92, 0.5), frameon=False)
    fig.subplots_adjust(left=0.05, right=0.9, wspace=0.3)
