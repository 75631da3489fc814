"""Split inference: devices run the head of the model and send the intermediate features up.

After *Range Asymmetric Numeral Systems-Based Lightweight Intermediate Feature
Compression for Split Computing of Deep Neural Networks* (arXiv:2511.11664).
The model (trained centrally as a plain model, from the checkpoint cache when
there) is cut at the split point ``split`` (testbed.models.split). The device
holds the head: installed (``head: install``, no transfer) or delivered once,
over its downlink (``head``, server->device), encoded by the label's strategy,
in the first round the device takes part; what arrived (channel damage
included) is the device's state from then on. The server holds the tail.

Every round each device takes the next ``batch`` images of its local test split
(cycling through it), runs the head, encodes the features with the label's
feature codec (``features``: one ``{codec: ..., ...}`` for every label, or one
per label) and sends them ``up`` (device->server). The server parses and
decodes what arrived (the shape, batch x the split point's feature shape, is
known to both ends), runs the tail and scores the predictions against the
labels and against the unsplit model's predictions on the same images.
"""

from __future__ import annotations

import time
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from pydantic import Field, field_validator

from testbed.compute import decode_flops, forward_flops
from testbed.errors import ConfigError
from testbed.report.figures import figure
from testbed.scenarios.base import DeviceRun, RoundPlan, RoundResults, Scenario, ScenarioOptions, plain_state
from testbed.tables import Column
from testbed.transfer import Transfer

HEAD = Transfer("head", "server->device", "the head of the model (up to the split point), encoded by the label's strategy; once per device")
UP = Transfer("up", "device->server", "a batch of intermediate features, encoded by the label's feature codec")

CLEAN_IMAGES = 1000  # test images of the end-of-run ideal-link accuracy (the first ones of the test set)

SPLIT_COLUMNS = (
    Column("feature_codec", "str", "", "the label's feature codec (and its options)"),
    Column("feature_bits", "int", "", "the feature codec's bit width (empty: floats)"),
    Column("n_test", "int", "", "images in the round's batch"),
    Column("bytes_per_sample", "float", "B", "the features payload's exact size (framing and side information included) per image"),
    Column("bits_per_element", "float", "bit", "the same in bits per feature element"),
    Column("accuracy", "float", "", "accuracy of the split model's predictions on the batch (counts towards fleet accuracy)"),
    Column("accuracy_unsplit", "float", "", "accuracy of the unsplit model on the same images"),
    Column("agreement", "float", "", "fraction of the images where the split and the unsplit model predict the same class"),
    Column("encode_ms", "float", "ms", "the device's feature encoding time (not reproducible: wall clock)"),
    Column("decode_ms", "float", "ms", "the server's parse and decode time (not reproducible: wall clock)"),
)


def _codec_specs(value: dict) -> dict[str, dict] | dict:
    from testbed.features import FeatureCodecSpecError, build_codec

    specs = {"": value} if "codec" in value else value
    for label, spec in specs.items():
        if not isinstance(spec, dict):
            raise ValueError(f"{label}: expected a codec spec {{codec: NAME, ...}}, or one per label")
        try:
            build_codec(spec)
        except FeatureCodecSpecError as exc:
            raise ValueError(f"{label + ': ' if label else ''}{exc}") from None
    return value


class SplitOptions(ScenarioOptions):
    split: str  # the split point (testbed.models.split: e.g. block2 for deepcnn, layer1 for resnet18)
    batch: int = Field(default=32, ge=1)  # images per device and round
    head: Literal["install", "deliver"] = "install"
    # one codec for every label ({codec: rans-features, bits: 4}) or one per label ({LABEL: {codec: ...}})
    features: dict[str, Any] = {"codec": "rans-features", "bits": 4}

    @field_validator("features")
    @classmethod
    def _codecs_build(cls, value):
        return _codec_specs(value)


def batch_indices(test_idx: np.ndarray, round_: int, batch: int) -> np.ndarray:
    """The round's images of a device: the next ``batch`` of its test split, cycling (never more than it holds)."""
    n = len(test_idx)
    size = min(batch, n)
    return test_idx[(np.arange(size) + (round_ - 1) * size) % n]


class Split(Scenario):
    name = "split"
    description = "Split inference: devices run the model's head and send compressed intermediate features up."
    Options: ClassVar = SplitOptions
    transfers = (HEAD, UP)
    measurement_columns = SPLIT_COLUMNS
    keeps_device_state = True  # the head as it arrived (deliver)
    fleet_accuracy = "mean"  # every round measures the same split model, on other images

    def __init__(self, options: SplitOptions, config):
        super().__init__(options, config)
        from testbed.features import build_codec

        features = options.features
        labels = [e.label for e in config.strategies]
        if "codec" not in features:
            missing = [label for label in labels if label not in features]
            extra = [key for key in features if key not in labels]
            if missing or extra:
                problem = f"no codec for label(s) {', '.join(missing)}" if missing else f"not a label: {', '.join(extra)}"
                raise ConfigError(f"scenario.features: {problem} (labels: {', '.join(labels)})")
        self.codecs = {label: build_codec(features if "codec" in features else features[label]) for label in labels}
        self._node: dict = {}  # per process: the model, its head and tail, decoded heads

    # ---- both sides: the model and its two halves --------------------------------------
    def _parts(self, dataset):
        """(model, head, tail, the split point) of this process, built once; the values are set by the caller."""
        if "model" not in self._node:
            from testbed.models import build_model
            from testbed.models.split import split_model, split_points

            with torch.random.fork_rng(devices=[]):  # the values are loaded later; leave the global generator alone
                model = build_model(self.config.model, dataset.input_shape, dataset.num_classes).eval()
            points = {p.name: p for p in split_points(model, dataset.input_shape)}
            head, tail = split_model(model, self.options.split)  # a ModelError (one line) for an unknown point
            self._node.update(model=model, head=head, tail=tail, point=points[self.options.split])
        n = self._node
        return n["model"], n["head"], n["tail"], n["point"]

    # ---- server side -------------------------------------------------------------------
    def start(self, server) -> None:
        from strategies.registry import build
        from testbed.training import central_model

        model, head, _, point = self._parts(server.dataset)
        server.log(f"split at {point.name}: features of {'x'.join(map(str, point.shape))} per image")
        trained = central_model(build({"strategy": "raw"}), self.config.model, server.dataset, self.config.seed,
                                progress=server.show_progress)
        model.load_state_dict(trained.state_dict())
        self.head_state = plain_state(head.state_dict())
        self.head_payloads = {}
        if self.options.head == "deliver":
            for label, strategy in server.strategies.items():
                if strategy.training_key() != "plain":
                    raise ConfigError(
                        f"strategies ({label}): {strategy.name} sends a model trained in its own form "
                        f"({strategy.training_key()}); the split's head is cut from a plain model: use scenario.head=install "
                        "or a strategy that codes a plain model (raw, quantise, prune, lowrank)")
                self.head_payloads[label] = strategy.encode(self.head_state).to_bytes()

    def plan_round(self, server, round_: int) -> RoundPlan:
        plan = RoundPlan()
        if self.options.head == "deliver":
            plan.blobs = {f"head/{label}": raw for label, raw in self.head_payloads.items()}
        else:
            plan.states["head"] = self.head_state
        return plan

    @torch.no_grad()
    def absorb(self, server, round_: int, results: RoundResults) -> None:
        from testbed.payload import PayloadError

        model, _, tail, point = self._parts(server.dataset)
        data = server.dataset
        for row in results.measurements:
            upload = results.uploads.get((row["label"], row["device_id"]))
            if upload is None:
                continue
            codec = self.codecs[row["label"]]
            images = np.asarray(upload.meta["images"], dtype=np.int64)
            shape = (len(images), *point.shape)
            start = time.perf_counter()
            try:
                features = codec.decode(codec.read(upload.data, shape), shape)
            except PayloadError as exc:
                row["failure"] = f"{UP.name} decode: {exc}"
                continue
            row["decode_ms"] = 1e3 * (time.perf_counter() - start)
            predicted = tail(features).argmax(1)
            unsplit = model(data.test_x[images]).argmax(1)
            truth = data.test_y[images]
            row["accuracy"] = float((predicted == truth).float().mean())
            row["accuracy_unsplit"] = float((unsplit == truth).float().mean())
            row["agreement"] = float((predicted == unsplit).float().mean())

    @torch.no_grad()
    def summary(self, server, label: str) -> dict:
        """The unsplit model's accuracy and the split one's over an ideal link (first CLEAN_IMAGES test images)."""
        model, head, tail, point = self._parts(server.dataset)
        codec = self.codecs[label]
        x, y = server.dataset.test_x[:CLEAN_IMAGES], server.dataset.test_y[:CLEAN_IMAGES]
        correct = unsplit = 0
        for start in range(0, len(x), self.options.batch):
            images, truth = x[start : start + self.options.batch], y[start : start + self.options.batch]
            features = head(images)
            received = codec.decode(codec.encode(features), features.shape)
            correct += int((tail(received).argmax(1) == truth).sum())
            unsplit += int((model(images).argmax(1) == truth).sum())
        out = {"feature_codec": repr(codec), "split": point.name, "unsplit_accuracy": unsplit / len(x),
               "clean_accuracy": correct / len(x), "clean_images": int(len(x))}
        if label in self.head_payloads:
            out["head_payload_bytes"] = len(self.head_payloads[label])
        return out

    # ---- device side -------------------------------------------------------------------
    def _head(self, device: DeviceRun):
        """The device's head with the weights it holds, or None if its delivery failed this round."""
        world, label = device.world, device.label
        _, head, _, _ = self._parts(world.dataset)
        if self.options.head == "install":
            head.load_state_dict(device.plan.states["head"])
            return head
        strategy = device.strategy
        if "template" not in self._node:
            self._node["template"] = {k: v.clone() for k, v in head.state_dict().items()}
        template = self._node["template"]
        if device.state is None:
            sent = strategy.read(device.plan.blobs[f"head/{label}"], template)
            result = device.transfer(HEAD, sent, decode=lambda p: strategy.decode(p, template))
            if result.row["delivered"]:  # decoded once; the device holds the head from then on
                device.compute(world.memo(("head-decode-flops", label), lambda: decode_flops(lambda: strategy.decode(sent, template))))
            if not result.ok:
                return None
            device.state = {"head_payload": torch.frombuffer(bytearray(result.received.to_bytes()), dtype=torch.uint8)}
        raw = device.state["head_payload"].numpy().tobytes()
        decoded = self._node.setdefault("heads", {})
        if raw not in decoded:  # devices with the same received head share one decode
            if len(decoded) > 64:
                decoded.clear()
            decoded[raw] = strategy.decode(strategy.read(raw, template), template)
        head.load_state_dict(decoded[raw])
        return head

    @torch.no_grad()
    def run_device(self, device: DeviceRun) -> None:
        codec = self.codecs[device.label]
        device.measure(feature_codec=repr(codec), feature_bits=codec.bits)
        head = self._head(device)
        if head is None:
            return
        images = batch_indices(device.split.test_idx, device.round, self.options.batch)
        features = head(device.world.dataset.test_x[images])
        start = time.perf_counter()
        payload = codec.encode(features)
        encode_ms = 1e3 * (time.perf_counter() - start)
        # the head's forward pass per image (counted once per node), and one operation per feature value encoded
        one = device.world.memo(("head-flops",), lambda: forward_flops(head, device.world.dataset.test_x[0]))
        device.compute(one * len(images) + features.numel())
        device.measure(n_test=len(images), bytes_per_sample=payload.nbytes / len(images),
                       bits_per_element=8 * payload.nbytes / features.numel(), encode_ms=encode_ms)
        result = device.transfer(UP, payload, strategy_name=codec.name)
        if result.received is not None:
            # The image indices are emulation bookkeeping (the server scores against their labels), not link traffic.
            device.send(result.received.to_bytes(), images=images.tolist())


# ---- the report's figure (registered on import; matplotlib and pandas are loaded only to draw) -----


@figure("split-bytes", "Split inference: accuracy against feature bytes",
        "One point per label (its feature codec), the means over the device-rounds that were scored: "
        "accuracy against the exact features payload per image (left, log scale; dashed: the unsplit "
        "model on the same images) and agreement with the unsplit model's predictions against bits per "
        "feature element (right). Noisy links' failed deliveries have no accuracy and are left out.",
        needs=("bits_per_element",), size=(10.0, 3.6))
def draw_split_bytes(view, fig) -> None:
    import pandas as pd

    left, right = fig.subplots(1, 2)
    unsplit = []
    for s in view.series:
        rows = s.measurements.apply(pd.to_numeric, errors="coerce")
        scored = rows[rows["accuracy"].notna()]
        if scored.empty:
            continue
        left.plot(scored["bytes_per_sample"].mean(), scored["accuracy"].mean(), color=s.color, marker=s.marker,
                  linestyle="none", markersize=7, label=s.label)
        right.plot(scored["bits_per_element"].mean(), scored["agreement"].mean(), color=s.color, marker=s.marker,
                   linestyle="none", markersize=7)
        unsplit.append(scored["accuracy_unsplit"].mean())
    if unsplit:
        left.axhline(float(np.mean(unsplit)), color="#444444", linestyle="--", linewidth=1, label="unsplit model")
    left.set_xscale("log")
    left.set_xlabel("features payload per image (B)")
    left.set_ylabel("accuracy")
    right.set_xlabel("bits per feature element")
    right.set_ylabel("agreement with the unsplit model")
    handles, labels = left.get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="center left", bbox_to_anchor=(0.9, 0.5), frameon=False)
    fig.subplots_adjust(left=0.08, right=0.88, wspace=0.3)
