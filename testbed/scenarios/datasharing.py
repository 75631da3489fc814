"""Data sharing: devices send images up to their fog node as JPEG; the fog node shares them as INRs.

After "Residual-INR: Communication Efficient On-Device Learning Using Implicit Neural
Representation" (arXiv 2408.05617). Every device is attached to one fog node
(:meth:`testbed.fleet.Fleet.fog_node`); its device<->fog hops use its hop link (the trace's
``fog_*`` columns, else ``fleet.fog.link``, else its own link: :meth:`testbed.fleet.Fleet.fog_link`).

A round has two phases, and the fog node's work happens between rounds (**our choice**,
the shape the round loop gives: the fog node is on the server's side of the emulation):

- devices, round r: receive the fog batch of round r-1 in three forms, each over the
  device's link (``down``: every image of the fog node as Residual-INR weights, encoded
  by the label's strategy; ``down_jpeg``: the JPEGs that arrived, forwarded, the
  baseline; ``down_jpeg_matched``: the same images re-encoded as JPEG at the quality
  whose bytes match the INR payload's), decode and measure them; send
  ``images_per_round`` new images of their training split up as JPEG (``up``,
  device->fog); then learn: one local model per form, trained on the device's own
  images so far plus every shared image it decoded in that form, and measured on the
  device's test split;
- fog node, absorb of round r: decode the JPEGs that arrived, fit every image's
  Residual-INR (all fog nodes' images in one batched fit), encode each fog batch once
  per label; the next round's plan carries it. Images sent up in the last round are
  not shared (no round follows).

The receivers are every device of the fog node, or the configured ``receivers``; a
receiver gets the whole batch, its own images included (it trains on its originals of
those). A device whose uplink fails is left out of the batch; the others are still
served. The object region is the image's box from the dataset where it has one (an
image folder's boxes.csv; the box then goes up with the JPEG, 16 bytes) else the
bounding box of the foreground by Otsu's threshold on the JPEG the fog node received
(**our choice**). The object SIREN has a fixed width here (``object_hidden``), so that
the receiver knows the payload's layout from the options alone; sizing it by the
object's area would need the width on the wire. The ids (and so the class labels) of
the batch's images travel in the plan and are not counted as bytes.
"""

from __future__ import annotations

import io
import math
import time

import numpy as np
import torch
from pydantic import Field, model_validator

from testbed.compute import count_flops, forward_flops, train_flops
from testbed.inr import Box, FitOptions, ResidualOptions, SirenShape, decode_residual_inr, fit_residual_inrs, init_siren, otsu_box, psnr, ssim
from testbed.payload import Payload, PayloadSchema, Segment, SegmentSpec
from testbed.recipes import LocalTrainConfig
from testbed.rng import derive_seed
from testbed.scenarios.base import DeviceRun, RoundPlan, RoundResults, Scenario, ScenarioOptions
from testbed.tables import Column
from testbed.transfer import Transfer

UP = Transfer("up", "device->fog", "the device's new images, JPEG-compressed (with their boxes where the dataset has them)")
DOWN = Transfer("down", "fog->device", "the fog batch as Residual-INR weights, encoded by the label's strategy")
DOWN_JPEG = Transfer("down_jpeg", "fog->device", "the baseline: the fog batch forwarded as the JPEGs that arrived")
DOWN_JPEG_MATCHED = Transfer("down_jpeg_matched", "fog->device",
                             "the baseline at equal bytes: the fog batch as JPEG at the quality whose bytes match the INR payload's")
# The forms a shared image reaches a device in, each with its transfer and its columns' suffix.
FORMS = {"inr": (DOWN, ""), "jpeg": (DOWN_JPEG, "_jpeg"), "jpeg_matched": (DOWN_JPEG_MATCHED, "_jpeg_matched")}
BOX_BYTES = 16  # an uploaded box: 4 int32


class DataSharingOptions(ScenarioOptions):
    images_per_round: int = Field(default=2, ge=1)
    jpeg_quality: int = Field(default=75, ge=1, le=95)
    match_jpeg: bool = True  # also send the batch as JPEG at the INR payload's bytes (down_jpeg_matched)
    receivers: list[int] | None = None  # device ids that receive their fog node's batch (None: all)
    background_hidden: int = Field(default=28, ge=1)  # the authors' background SIREN: 10 x 28
    background_layers: int = Field(default=10, ge=2)
    object_hidden: int = Field(default=16, ge=1)
    object_layers: int = Field(default=4, ge=2)
    with_object: bool = True
    iterations: int = Field(default=500, ge=1)
    lr: float = Field(default=1e-3, gt=0)  # the authors use 2e-4 with more iterations
    target_psnr: float | None = None
    learn: bool = True  # on-device learning on the shared images (one model per form)
    local: LocalTrainConfig = LocalTrainConfig()  # a device's training in a round

    @model_validator(mode="before")
    @classmethod
    def _moved(cls, values):
        if isinstance(values, dict) and "fog_nodes" in values:
            raise ValueError("fog_nodes moved to the fleet: set fleet.fog.nodes (and fleet.fog.assign, fleet.fog.link)")
        return values

    def inr(self, channels: int) -> ResidualOptions:
        return ResidualOptions(
            background=SirenShape(hidden=self.background_hidden, layers=self.background_layers, out_features=channels),
            object_layers=self.object_layers, object_hidden=(self.object_hidden, self.object_hidden),
            fit=FitOptions(iterations=self.iterations, lr=self.lr, target_psnr=self.target_psnr),
            with_object=self.with_object,
        )

    def forms(self) -> tuple[str, ...]:
        return tuple(f for f in FORMS if f != "jpeg_matched" or self.match_jpeg)


def jpeg_schema(count: int, boxes: bool = False) -> PayloadSchema:
    """``count`` JPEG files, each a protected segment whose length is on the wire (and their boxes)."""
    specs = tuple(SegmentSpec(f"jpeg.{k}", nbytes=None) for k in range(count))
    return PayloadSchema(specs + ((SegmentSpec("boxes", nbytes=BOX_BYTES * count),) if boxes else ()), "jpeg")


def jpeg_payload(files: list[bytes], boxes: list[Box] | None = None) -> Payload:
    segments = [Segment(f"jpeg.{k}", f, True) for k, f in enumerate(files)]
    if boxes is not None:
        segments.append(Segment("boxes", np.asarray(boxes, dtype="<i4").tobytes(), True))
    return Payload(segments, jpeg_schema(len(files), boxes is not None))


def read_boxes(payload: Payload) -> list[Box | None] | None:
    """The boxes an upload carries (None for an image without one), or None when it carries none."""
    for segment in payload.segments:
        if segment.name == "boxes":
            rows = np.frombuffer(segment.data, dtype="<i4").reshape(-1, 4)
            return [None if (r < 0).any() else tuple(int(v) for v in r) for r in rows]
    return None


def to_jpeg(image: np.ndarray, quality: int) -> bytes:
    from PIL import Image

    pixels = np.clip(np.round(image * 255), 0, 255).astype(np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="JPEG", quality=quality)
    return out.getvalue()


def from_jpeg(data: bytes) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(data)), dtype=np.float32) / 255


def matched_jpeg(images: list[np.ndarray], target_bytes: int) -> tuple[int, list[bytes]]:
    """The highest JPEG quality (1..100) whose payload of ``images`` is at most ``target_bytes``,
    and its files (quality 1 when even that is larger). One quality for the whole batch."""
    cache: dict[int, list[bytes]] = {}

    def size(q: int) -> int:
        if q not in cache:
            cache[q] = [to_jpeg(im, q) for im in images]
        return jpeg_payload(cache[q]).nbytes

    low, high = 1, 100  # bisection: JPEG size grows with quality (nearly monotone; the result is checked)
    if size(high) <= target_bytes:
        return high, cache[high]
    while high - low > 1:
        mid = (low + high) // 2
        low, high = (mid, high) if size(mid) <= target_bytes else (low, mid)
    return low, cache.get(low) or [to_jpeg(im, low) for im in images]


def dataset_image(dataset, index: int) -> np.ndarray:
    """Training image ``index`` in [0, 1] as [H, W] or [H, W, C] (the normalisation undone)."""
    x = dataset.train_x[index].numpy()
    x = x * np.asarray(dataset.std, dtype=np.float32)[:, None, None] + np.asarray(dataset.mean, dtype=np.float32)[:, None, None]
    x = np.clip(x, 0, 1)
    return x[0] if x.shape[0] == 1 else np.transpose(x, (1, 2, 0))


def image_tensor(dataset, image: np.ndarray) -> torch.Tensor:
    """An [H, W] or [H, W, C] image in [0, 1] as the dataset's normalised [C, H, W] input (dataset_image undone)."""
    x = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))
    x = x.unsqueeze(0) if x.ndim == 2 else x.permute(2, 0, 1)
    return (x - torch.tensor(dataset.mean).view(-1, 1, 1)) / torch.tensor(dataset.std).view(-1, 1, 1)


def dataset_box(dataset, index: int) -> Box | None:
    """The dataset's object box of training image ``index``, None where it has none."""
    if dataset.train_boxes is None or bool((dataset.train_boxes[index] < 0).any()):
        return None
    return tuple(int(v) for v in dataset.train_boxes[index])


def batch_template(count: int, options: DataSharingOptions, channels: int) -> dict[str, torch.Tensor]:
    """The state layout of a fog batch of ``count`` Residual-INRs (what the receiver knows)."""
    inr = options.inr(channels)
    obj = SirenShape(hidden=options.object_hidden, layers=options.object_layers, out_features=channels)
    out = {}
    for k in range(count):
        out.update({f"{k}.background.{n}": v for n, v in init_siren(inr.background, 0, "template").items()})
        if options.with_object:
            out.update({f"{k}.object.{n}": v for n, v in init_siren(obj, 0, "template").items()})
            out[f"{k}.object.box"] = torch.zeros(4, dtype=torch.int32)
    return out


def _mean(values) -> float:
    values = list(values)
    return float(np.mean(values)) if values else math.nan


def _quality_columns(suffix: str, what: str) -> tuple[Column, ...]:
    return (
        Column(f"psnr{suffix or '_inr'}_db", "float", "dB", f"PSNR of the {what} against the original images (mean)"),
        Column(f"psnr{suffix or '_inr'}_object_db", "float", "dB", "the same in the object region (the dataset's box, else the Otsu box of the original)"),
        Column(f"ssim{suffix or '_inr'}", "float", "", f"SSIM of the {what} (mean)"),
    )


def _learning_columns(suffix: str, what: str) -> tuple[Column, ...]:
    return (
        Column(f"accuracy{suffix}", "float", "", f"accuracy on the device's test split of its model trained on its own images and the shared ones {what}"
               + (" (counts towards fleet accuracy)" if not suffix else "")),
        Column(f"train_s{suffix}", "float", "s", f"this round's on-device training time of that model ({what})"),
    )


class DataSharing(Scenario):
    name = "datasharing"
    description = "Images up to a fog node as JPEG, shared down to its devices as Residual-INR weights (and as JPEG)."
    Options = DataSharingOptions
    transfers = (UP, DOWN, DOWN_JPEG, DOWN_JPEG_MATCHED)
    keeps_device_state = True  # the shared images a device decoded so far, and its models
    fleet_accuracy = "last"
    measurement_columns = (
        Column("images_sent", "int", "", "new images this device sent up this round"),
        Column("up_bytes_per_image", "float", "B", "uplink bytes (JPEG, boxes, framing and resends) per image sent"),
        Column("images_received", "int", "", "images of the fog batch this device received (round r-1's)"),
        Column("inr_bytes_per_image", "float", "B", "downlink bytes of the INR batch (framing and resends) per image"),
        Column("jpeg_bytes_per_image", "float", "B", "downlink bytes of the JPEG baseline per image"),
        Column("jpeg_matched_bytes_per_image", "float", "B", "downlink bytes of the JPEG baseline at the INR's bytes per image"),
        Column("jpeg_matched_quality", "int", "", "the JPEG quality whose batch payload matches the INR payload's bytes (at most them; 1 when even quality 1 is larger)"),
        *_quality_columns("", "decoded INRs"),
        *_quality_columns("_jpeg", "forwarded JPEGs"),
        *_quality_columns("_jpeg_matched", "JPEGs at the INR's bytes"),
        Column("fit_s_per_image", "float", "s", "fog node's fitting time per image of the batch"),
        Column("decode_s_per_image", "float", "s", "this device's INR decoding time per image"),
        Column("train_images", "int", "", "images the device's INR-form model trained on this round (its own and the shared ones)"),
        *_learning_columns("", "decoded from INRs"),
        *_learning_columns("_jpeg", "as forwarded JPEGs"),
        *_learning_columns("_jpeg_matched", "as JPEGs at the INR's bytes"),
    )

    # ---- server side (the fog nodes) --------------------------------------------------
    def start(self, server) -> None:
        from testbed.errors import ConfigError

        unknown = sorted(set(self.options.receivers or ()) - {d.device_id for d in server.fleet})
        if unknown:
            raise ConfigError(f"scenario.receivers: no device {', '.join(map(str, unknown))} in the fleet")
        self.pending = RoundPlan()  # the fog batches the next round delivers
        if server.restore is not None:
            self.pending = RoundPlan(
                blobs={k: bytes(v.numpy().tobytes()) for k, v in server.restore["blobs"].items()},
                values=dict(server.restore["values"]),
            )

    def plan_round(self, server, round_: int) -> RoundPlan:
        return self.pending

    def absorb(self, server, round_: int, results: RoundResults) -> None:
        self.pending = RoundPlan()
        if round_ >= self.config.rounds:
            return  # nothing follows to deliver the last round's images
        with_boxes = server.dataset.train_boxes is not None
        arrived: dict[int, tuple] = {}  # device -> (image indices, JPEG files, decoded images, boxes)
        for (label, device_id), upload in sorted(results.uploads.items(), key=lambda kv: kv[0][1]):
            if device_id in arrived:
                continue  # every label's devices send the same images over the same channel
            count = len(upload.meta["images"])
            try:
                payload = Payload.from_bytes(upload.data, jpeg_schema(count, with_boxes))
                files = [s.data for s in payload.segments if s.name.startswith("jpeg.")]
                images = [from_jpeg(f) for f in files]
            except Exception as exc:  # a JPEG that arrived damaged is left out, the others served
                results.row(label, device_id)["failure"] = f"{UP.name} decode: {exc}"
                continue
            boxes = read_boxes(payload) or [None] * count
            arrived[device_id] = (list(upload.meta["images"]), files, images, boxes)
        batches: dict[int, list[tuple[int, int]]] = {}
        owners, pictures, files, boxes = [], [], [], []
        for device_id in sorted(arrived):
            fog = server.fleet.fog_node(device_id)
            for index, jpeg, image, box in zip(*arrived[device_id]):
                batches.setdefault(fog, []).append((device_id, index))
                owners.append((fog, device_id, index))
                pictures.append(image)
                files.append(jpeg)
                boxes.append(box)
        if not pictures:
            return
        channels = 1 if pictures[0].ndim == 2 else pictures[0].shape[2]
        states, seconds = fit_residual_inrs(pictures, boxes, self.config.seed,
                                            [("fit", round_, d, i) for _, d, i in owners], self.options.inr(channels))
        by_image = {(d, i): (s, f, p) for (_, d, i), s, f, p in zip(owners, states, files, pictures)}
        values = {"batches": {str(fog): [list(x) for x in batch] for fog, batch in batches.items()},
                  "fit_s_per_image": seconds / len(pictures), "matched_quality": {}}
        blobs = {}
        for fog, batch in batches.items():
            merged = {}
            for k, key in enumerate(batch):
                merged.update({f"{k}.{n}": v for n, v in by_image[key][0].items()})
            blobs[f"jpeg/{fog}"] = jpeg_payload([by_image[key][1] for key in batch]).to_bytes()
            for label in server.labels:
                blobs[f"inr/{label}/{fog}"] = server.strategies[label].encode(merged).to_bytes()
                if self.options.match_jpeg:
                    # Re-encoded from the JPEGs that arrived: all the fog node has of the images.
                    quality, matched = matched_jpeg([by_image[key][2] for key in batch], len(blobs[f"inr/{label}/{fog}"]))
                    blobs[f"jpeg_matched/{label}/{fog}"] = jpeg_payload(matched).to_bytes()
                    values["matched_quality"].setdefault(label, {})[str(fog)] = quality
        self.pending = RoundPlan(blobs=blobs, values=values)

    def saved_state(self) -> dict:
        return {"blobs": {k: torch.frombuffer(bytearray(v), dtype=torch.uint8) for k, v in self.pending.blobs.items()},
                "values": self.pending.values}

    # ---- device side ------------------------------------------------------------------
    def run_device(self, device: DeviceRun) -> None:
        world = device.world
        fog = world.fleet.fog_node(device.device_id)
        batch = device.plan.values.get("batches", {}).get(str(fog))
        receivers = self.options.receivers
        shared: dict[str, list[tuple[np.ndarray, int]]] = {}
        if batch and (receivers is None or device.device_id in receivers):
            shared = self.receive_batch(device, fog, [tuple(x) for x in batch])
        self.send_images(device)
        if self.options.learn:
            self.learn(device, shared)

    def picks(self, device: DeviceRun, round_: int) -> list[int]:
        """The training images the device sends up in ``round_`` (its split, cycled)."""
        train, n = device.split.train_idx, self.options.images_per_round
        return [int(train[(n * (round_ - 1) + k) % len(train)]) for k in range(n)]

    def send_images(self, device: DeviceRun) -> None:
        if len(device.split.train_idx) == 0:
            raise ValueError("the device has no training split to share images from (set data.train_per_device)")
        dataset = device.world.dataset
        picks = self.picks(device, device.round)
        images = [dataset_image(dataset, i) for i in picks]
        files = [to_jpeg(image, self.options.jpeg_quality) for image in images]
        device.compute(sum(image.size for image in images))  # one operation per pixel value encoded (our choice)
        boxes = None if dataset.train_boxes is None else [dataset_box(dataset, i) or (-1, -1, -1, -1) for i in picks]
        result = device.transfer(UP, jpeg_payload(files, boxes), strategy_name="jpeg")
        device.measure(images_sent=len(picks), up_bytes_per_image=result.row["bytes"] / len(picks))
        if result.ok:
            device.send(result.received.to_bytes(), images=picks)

    def receive_batch(self, device: DeviceRun, fog: int, batch: list[tuple[int, int]]) -> dict[str, list[tuple[np.ndarray, int]]]:
        """Every form of the fog batch over the device's link, measured; the decoded images of each
        form that arrived, with their training indices (the device's own images left out)."""
        world, count = device.world, len(batch)
        originals = [dataset_image(world.dataset, i) for _, i in batch]
        height, width = originals[0].shape[:2]
        channels = 1 if originals[0].ndim == 2 else originals[0].shape[2]
        pixel_values = height * width * channels
        boxes = [dataset_box(world.dataset, i) or otsu_box(o) for (_, i), o in zip(batch, originals)]
        template = batch_template(count, self.options, channels)
        decoded_at = {}

        def decode_inrs(p):
            state = device.strategy.decode(p, template)
            started = time.perf_counter()
            parts = [{n.split(".", 1)[1]: v for n, v in state.items() if n.split(".", 1)[0] == str(k)} for k in range(count)]
            images = [decode_residual_inr(part, height, width) for part in parts]
            decoded_at["s"] = time.perf_counter() - started
            # the SIRENs' passes over every pixel (the object SIREN's over its box), counted once per node and box
            for part in parts:
                box = tuple(part["object.box"].tolist()) if "object.box" in part else None
                device.compute(world.memo(("inr-decode-flops", height, width, box),
                                          lambda: count_flops(lambda: decode_residual_inr(part, height, width))))
            device.compute(sum(v.numel() for v in state.values() if v.dtype.is_floating_point))
            return images

        def decode_jpegs(p):
            device.compute(count * pixel_values)  # one operation per pixel value decoded (our choice)
            return [from_jpeg(s.data) for s in p.segments]

        sources = {"inr": (device.strategy.read(device.plan.blobs[f"inr/{device.label}/{fog}"], template), None, decode_inrs),
                   "jpeg": (Payload.from_bytes(device.plan.blobs[f"jpeg/{fog}"], jpeg_schema(count)), "jpeg", decode_jpegs)}
        values = dict(images_received=count, fit_s_per_image=float(device.plan.values["fit_s_per_image"]))
        if self.options.match_jpeg:
            sources["jpeg_matched"] = (Payload.from_bytes(device.plan.blobs[f"jpeg_matched/{device.label}/{fog}"], jpeg_schema(count)),
                                       "jpeg", decode_jpegs)
            values["jpeg_matched_quality"] = int(device.plan.values["matched_quality"][device.label][str(fog)])
        shared = {}
        for form, (payload, strategy_name, decode) in sources.items():
            transfer, suffix = FORMS[form]
            result = device.transfer(transfer, payload, strategy_name=strategy_name, decode=decode)
            values[f"{form}_bytes_per_image"] = result.row["bytes"] / count
            if not result.ok:
                continue
            tag = suffix or "_inr"
            decoded = result.value
            values[f"psnr{tag}_db"] = _mean(psnr(d, o) for d, o in zip(decoded, originals))
            values[f"psnr{tag}_object_db"] = _mean(psnr(d[t:b, l:r], o[t:b, l:r]) for d, o, (t, l, b, r) in zip(decoded, originals, boxes))
            values[f"ssim{tag}"] = _mean(ssim(d, o) for d, o in zip(decoded, originals))
            shared[form] = [(d, i) for d, (owner, i) in zip(decoded, batch) if owner != device.device_id]
        if "s" in decoded_at:
            values["decode_s_per_image"] = decoded_at["s"] / count
        device.measure(**values)
        return shared

    def learn(self, device: DeviceRun, shared: dict[str, list[tuple[np.ndarray, int]]]) -> None:
        """Train one model per form on the device's own images so far and the shared images it
        decoded in that form so far (kept in its state), and measure it on the device's test split."""
        from strategies.registry import build
        from testbed.training import evaluate, initial_model, train_local

        dataset, split = device.world.dataset, device.split
        own = [i for r in range(1, device.round + 1) for i in self.picks(device, r)]
        own_x, own_y = dataset.train_x[own], dataset.train_y[own]
        test_x, test_y = dataset.test_x[split.test_idx], dataset.test_y[split.test_idx]
        previous, state = device.state or {}, {}
        seed = derive_seed(device.seed, "share-train", device.round, device.device_id)  # the same for every form: paired
        for form in self.options.forms():
            new = shared.get(form, [])
            x = torch.cat([previous.get(f"{form}.x", own_x[:0]), *(image_tensor(dataset, d).unsqueeze(0) for d, _ in new)])
            y = torch.cat([previous.get(f"{form}.y", own_y[:0]), torch.tensor([int(dataset.train_y[i]) for _, i in new], dtype=own_y.dtype)])
            state[f"{form}.x"], state[f"{form}.y"] = x, y
            model = initial_model(build({"strategy": "raw"}), self.config.model, dataset.input_shape, dataset.num_classes, device.seed)
            weights = {k.split(".", 2)[2]: v for k, v in previous.items() if k.startswith(f"{form}.model.")}
            if weights:
                model.load_state_dict(weights)
            train_x, train_y = torch.cat([own_x, x]), torch.cat([own_y, y])
            suffix = FORMS[form][1]
            costs = device.world.memo(("share-model-flops",), lambda: (
                train_flops(model, dataset.train_x[0], dataset.train_y[0]), forward_flops(model, dataset.train_x[0])))
            if len(train_x) >= 2:  # BatchNorm trains on batches of two or more
                started = time.perf_counter()
                train_local(model, train_x, train_y, self.options.local, seed)
                device.measure(**{f"train_s{suffix}": time.perf_counter() - started})
                device.compute(costs[0] * len(train_x) * self.options.local.epochs)
            device.measure(**{f"accuracy{suffix}": evaluate(model, test_x, test_y)[0]})
            device.compute(costs[1] * len(test_y))
            if form == "inr":
                device.measure(train_images=len(train_x))
            state.update({f"{form}.model.{k}": v.detach().clone() for k, v in model.state_dict().items()})
        device.state = state


# ---- the report's figure --------------------------------------------------------------------

from testbed.report.figures import figure  # noqa: E402  (imports neither matplotlib nor pandas)

FORM_STYLES = {"inr": ("-", "INR"), "jpeg": ("--", "JPEG forwarded"), "jpeg_matched": (":", "JPEG at the INR's bytes")}


@figure("datasharing", "Data sharing: quality and on-device accuracy per form",
        "Left: mean PSNR of the shared images a device decoded against the downlink bytes per image, one point per "
        "strategy and form (INR by the strategy: filled; JPEG forwarded: open; JPEG at the INR's bytes: cross). "
        "Right: the devices' mean accuracy per round of the model trained on their own images plus the shared ones "
        "in each form (INR solid, JPEG forwarded dashed, JPEG at the INR's bytes dotted).",
        needs=("psnr_inr_db",), size=(9.0, 4.0))
def sharing_figure(view, fig) -> None:
    left, right = fig.subplots(1, 2)
    for s in view.series:
        rows = s.measurements
        for form, (style, name) in FORM_STYLES.items():
            tag = "_inr" if form == "inr" else f"_{form}"
            if f"psnr{tag}_db" not in rows or rows[f"psnr{tag}_db"].isna().all():
                continue
            x, y = rows[f"{form}_bytes_per_image"].mean(), rows[f"psnr{tag}_db"].mean()
            if form == "jpeg_matched":
                left.scatter([x], [y], marker="x", color=s.color, label=f"{s.label}: {name}")
            else:
                left.scatter([x], [y], marker=s.marker, edgecolors=s.color, label=f"{s.label}: {name}",
                             facecolors=s.color if form == "inr" else "none")
            column = "accuracy" if form == "inr" else f"accuracy{tag}"
            if column in rows and rows[column].notna().any():
                acc = rows.groupby("round")[column].mean()
                right.plot(acc.index, acc.to_numpy(), color=s.color, linestyle=style, marker=s.marker,
                           markersize=3, label=f"{s.label}: {name}")
    left.set_xscale("log")
    left.set_xlabel("downlink bytes per shared image")
    left.set_ylabel("PSNR of the decoded images (dB)")
    right.set_xlabel("round")
    right.set_ylabel("on-device accuracy (mean over devices)")
    for ax in (left, right):
        if ax.has_data():
            ax.legend(fontsize=6)
