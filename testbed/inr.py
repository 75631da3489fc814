"""Images as implicit neural representations: SIRENs fitted many at once, and the Residual-INR pair.

A SIREN ("Implicit Neural Representations with Periodic Activation Functions",
arXiv 2006.09661) maps a pixel's coordinates in [-1, 1]^2 to its colour through
linear layers with sine activations, ``sin(w0 * (x W + b))`` with w0 = 30. The
image is its weights. Residual-INR ("Residual-INR: Communication Efficient
On-Device Learning Using Implicit Neural Representation", arXiv 2408.05617)
encodes an image as a small background SIREN for the whole image plus an object
SIREN for the residual of the object region (the image minus the background's
decode there, scaled by its largest magnitude while fitting).

Fitting is batched: B SIRENs of one shape are one model with stacked weights
(``[B, in, out]``, applied with ``torch.bmm``); images of different sizes are
padded and masked, so an image's gradient, and with Adam (elementwise) its
whole trajectory, is the one it has when fitted alone. Each SIREN's initial
weights come from ``derive_torch_generator(seed, *its keys)``, so batched and
one-by-one fitting give the same weights (within float tolerance). An image
that reaches the target PSNR keeps the weights of that check while the others
train on.

Weights are a plain state_dict (``layers.<i>.weight``, ``layers.<i>.bias``), so
any compression strategy can encode them; the Residual-INR pair adds an
``object.box`` int tensor (top, left, bottom, right), which strategies send as is.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from testbed.rng import derive_torch_generator

State = dict[str, torch.Tensor]
Box = tuple[int, int, int, int]  # top, left, bottom, right (bottom and right exclusive)


@dataclass(frozen=True)
class SirenShape:
    hidden: int = 28
    layers: int = 10  # linear layers, the output layer included
    out_features: int = 1
    in_features: int = 2
    w0: float = 30.0


@dataclass(frozen=True)
class FitOptions:
    iterations: int = 2000
    lr: float = 2e-4  # Adam, cosine-annealed to 0 over the iterations (the authors' defaults)
    target_psnr: float | None = None  # stop an image's fit at the first check at or above it
    check_every: int = 50


@dataclass
class FitStats:
    iterations: list[int] = field(default_factory=list)  # per SIREN: the iterations its weights had
    psnr: list[float] = field(default_factory=list)  # per SIREN, on its own pixels
    seconds: float = 0.0  # the whole batch


# ---- coordinates and quality -------------------------------------------------------------


def pixel_grid(height: int, width: int) -> torch.Tensor:
    """The pixel centres of an image as [height*width, 2] coordinates in [-1, 1] (row, column)."""
    rows = (torch.arange(height, dtype=torch.float32) + 0.5) / height * 2 - 1
    cols = (torch.arange(width, dtype=torch.float32) + 0.5) / width * 2 - 1
    return torch.stack(torch.meshgrid(rows, cols, indexing="ij"), dim=-1).reshape(-1, 2)


def psnr(a, b, peak: float = 1.0) -> float:
    mse = float(np.mean((np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(peak * peak / mse)


def _box_mean(x: np.ndarray, size: int) -> np.ndarray:
    """Means over every size x size window of the first two axes (valid windows only)."""
    c = np.cumsum(np.cumsum(np.pad(x, [(1, 0), (1, 0)] + [(0, 0)] * (x.ndim - 2)), axis=0), axis=1)
    return (c[size:, size:] - c[:-size, size:] - c[size:, :-size] + c[:-size, :-size]) / (size * size)


def ssim(a, b, peak: float = 1.0, window: int = 7) -> float:
    """Structural similarity (Wang et al. 2004) with a uniform window, averaged over windows and channels."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    window = min(window, a.shape[0], a.shape[1])
    c1, c2 = (0.01 * peak) ** 2, (0.03 * peak) ** 2
    n = window * window
    mu_a, mu_b = _box_mean(a, window), _box_mean(b, window)
    # sample (co)variances, as the reference implementation
    var_a = (_box_mean(a * a, window) - mu_a ** 2) * n / (n - 1) if n > 1 else 0 * mu_a
    var_b = (_box_mean(b * b, window) - mu_b ** 2) * n / (n - 1) if n > 1 else 0 * mu_b
    cov = (_box_mean(a * b, window) - mu_a * mu_b) * n / (n - 1) if n > 1 else 0 * mu_a
    s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a ** 2 + mu_b ** 2 + c1) * (var_a + var_b + c2))
    return float(s.mean())


# ---- one SIREN shape, many at once --------------------------------------------------------


def init_siren(shape: SirenShape, seed: int, *keys: int | str) -> State:
    """A SIREN's initial weights (the SIREN paper's init), from the rng keyed by ``keys``."""
    gen = derive_torch_generator(seed, "inr", *keys)
    state: State = {}
    width_in = shape.in_features
    for i in range(shape.layers):
        width_out = shape.out_features if i == shape.layers - 1 else shape.hidden
        bound = 1 / width_in if i == 0 else math.sqrt(6 / width_in) / shape.w0
        state[f"layers.{i}.weight"] = (torch.rand(width_in, width_out, generator=gen) * 2 - 1) * bound
        state[f"layers.{i}.bias"] = (torch.rand(width_out, generator=gen) * 2 - 1) / math.sqrt(width_in)
        width_in = width_out
    return state


def _forward(weights: list[torch.Tensor], biases: list[torch.Tensor], coords: torch.Tensor, w0: float) -> torch.Tensor:
    """Stacked SIRENs: weights [B, in, out], biases [B, out], coords [B, N, in] -> [B, N, out]."""
    x = coords
    last = len(weights) - 1
    for i, (w, b) in enumerate(zip(weights, biases)):
        if i < last:  # w0 (x W + b) in the one matrix op (alpha, beta): one op fewer per layer, forward and back
            x = torch.sin(torch.baddbmm(b.unsqueeze(1), x, w, beta=w0, alpha=w0))
        else:
            x = torch.baddbmm(b.unsqueeze(1), x, w)
    return x


def evaluate_siren(state: State, shape: SirenShape, coords: torch.Tensor) -> torch.Tensor:
    """A SIREN's output at ``coords`` [N, in] -> [N, out] (the decoder a receiver runs)."""
    n = shape.layers
    with torch.no_grad():
        out = _forward([state[f"layers.{i}.weight"].unsqueeze(0) for i in range(n)],
                       [state[f"layers.{i}.bias"].unsqueeze(0) for i in range(n)], coords.unsqueeze(0), shape.w0)
    return out[0]


def fit_sirens(shape: SirenShape, coords: Sequence[torch.Tensor], targets: Sequence[torch.Tensor],
               seed: int, keys: Sequence[tuple], options: FitOptions = FitOptions()) -> tuple[list[State], FitStats]:
    """Fit one SIREN per (coords [N_i, in], target [N_i, out] in [-1, 1]) pair, all at once.

    ``keys[i]`` names SIREN i's initial weights (with ``seed``). PSNR is on the [-1, 1]
    targets mapped back to [0, 1]."""
    started = time.perf_counter()
    count = len(coords)
    n_max = max(len(c) for c in coords)
    x = torch.zeros(count, n_max, shape.in_features)
    y = torch.zeros(count, n_max, shape.out_features)
    mask = torch.zeros(count, n_max, 1)
    for i, (c, t) in enumerate(zip(coords, targets)):
        x[i, : len(c)], y[i, : len(c)], mask[i, : len(c)] = c, t, 1
    # Per image: the mean over its own pixels and channels, so padding changes nothing.
    norm = mask.sum(dim=(1, 2)) * shape.out_features
    inits = [init_siren(shape, seed, *k) for k in keys]
    weights = [torch.stack([s[f"layers.{i}.weight"] for s in inits]).requires_grad_() for i in range(shape.layers)]
    biases = [torch.stack([s[f"layers.{i}.bias"] for s in inits]).requires_grad_() for i in range(shape.layers)]
    optimiser = torch.optim.Adam(weights + biases, lr=options.lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, T_max=max(options.iterations, 1))
    kept: list[State | None] = [None] * count
    stats = FitStats(iterations=[options.iterations] * count, psnr=[0.0] * count)

    def per_image_mse() -> torch.Tensor:
        return (((_forward(weights, biases, x, shape.w0) - y) ** 2) * mask).sum(dim=(1, 2)) / norm

    def snapshot(i: int) -> State:
        return {**{f"layers.{j}.weight": w[i].detach().clone() for j, w in enumerate(weights)},
                **{f"layers.{j}.bias": b[i].detach().clone() for j, b in enumerate(biases)}}

    def image_psnr(mse: float) -> float:  # targets in [-1, 1]: the [0, 1] image's MSE is a quarter
        return math.inf if mse <= 0 else 10 * math.log10(4 / mse)

    for step in range(options.iterations):
        if options.target_psnr is not None and step % options.check_every == 0:
            with torch.no_grad():
                mse = per_image_mse()
            for i in range(count):
                if kept[i] is None and image_psnr(float(mse[i])) >= options.target_psnr:
                    kept[i], stats.iterations[i] = snapshot(i), step
            if all(k is not None for k in kept):
                break
        optimiser.zero_grad()
        per_image_mse().sum().backward()
        optimiser.step()
        schedule.step()
    with torch.no_grad():
        final = per_image_mse()
    states = []
    for i in range(count):
        state = kept[i] if kept[i] is not None else snapshot(i)
        states.append(state)
    # The PSNR of the weights each image keeps.
    for i, state in enumerate(states):
        if kept[i] is None:
            stats.psnr[i] = image_psnr(float(final[i]))
        else:
            pred = evaluate_siren(state, shape, coords[i])
            stats.psnr[i] = image_psnr(float(((pred - targets[i]) ** 2).mean()))
    stats.seconds = time.perf_counter() - started
    return states, stats


# ---- Residual-INR: background plus object residual ----------------------------------------


@dataclass(frozen=True)
class ResidualOptions:
    background: SirenShape = SirenShape()  # the authors' background: 10 layers x 28 hidden
    object_layers: int = 4
    # Object SIREN width from the object's area (**our choice**): sqrt(area)/2, within these bounds.
    object_hidden: tuple[int, int] = (8, 64)
    fit: FitOptions = FitOptions()
    with_object: bool = True


def object_hidden(box: Box, bounds: tuple[int, int]) -> int:
    area = (box[2] - box[0]) * (box[3] - box[1])
    return int(min(max(round(math.sqrt(area) / 2), bounds[0]), bounds[1]))


def otsu_box(image: np.ndarray) -> Box:
    """The bounding box of the foreground by Otsu's threshold (**our choice** of object region).

    The foreground is the side of the threshold with fewer pixels; an image with one
    grey level is all object."""
    grey = image.mean(axis=-1) if image.ndim == 3 else image
    levels = np.clip((grey * 255).round(), 0, 255).astype(np.int64)
    hist = np.bincount(levels.ravel(), minlength=256).astype(np.float64)
    total, weighted = hist.sum(), np.cumsum(hist * np.arange(256))
    below = np.cumsum(hist)
    above = total - below
    with np.errstate(divide="ignore", invalid="ignore"):
        between = (weighted[-1] * below / total - weighted) ** 2 / (below * above)
    between[~np.isfinite(between)] = -1
    threshold = int(np.argmax(between))
    if between[threshold] < 0:
        return (0, 0, grey.shape[0], grey.shape[1])
    bright = levels > threshold
    foreground = bright if bright.sum() <= bright.size / 2 else ~bright
    rows, cols = np.nonzero(foreground)
    return (int(rows.min()), int(cols.min()), int(rows.max()) + 1, int(cols.max()) + 1)


def image_targets(image: np.ndarray) -> torch.Tensor:
    """An [H, W] or [H, W, C] image in [0, 1] as [H*W, C] targets in [-1, 1]."""
    pixels = image.reshape(image.shape[0] * image.shape[1], -1)
    return torch.from_numpy(np.ascontiguousarray(pixels, dtype=np.float32)) * 2 - 1


def _fit_grouped(shapes: list[SirenShape], coords, targets, seed: int, keys, options: FitOptions):
    """fit_sirens per distinct shape (one batch each), results back in input order."""
    states: list[State | None] = [None] * len(shapes)
    stats = FitStats(iterations=[0] * len(shapes), psnr=[0.0] * len(shapes))
    for shape in sorted(set(shapes), key=lambda s: (s.hidden, s.layers)):
        idx = [i for i, s in enumerate(shapes) if s == shape]
        got, st = fit_sirens(shape, [coords[i] for i in idx], [targets[i] for i in idx], seed, [keys[i] for i in idx], options)
        for j, i in enumerate(idx):
            states[i], stats.iterations[i], stats.psnr[i] = got[j], st.iterations[j], st.psnr[j]
        stats.seconds += st.seconds
    return states, stats


def fit_residual_inrs(images: Sequence[np.ndarray], boxes: Sequence[Box | None], seed: int,
                      keys: Sequence[tuple], options: ResidualOptions = ResidualOptions()) -> tuple[list[State], float]:
    """Fit every image's Residual-INR; a box of None is found by :func:`otsu_box`.

    Returns the states (background ``background.layers.*``; object ``object.layers.*`` and
    ``object.box``) and the fitting seconds of the whole batch."""
    channels = [1 if im.ndim == 2 else im.shape[2] for im in images]
    bg_shapes = [SirenShape(**{**options.background.__dict__, "out_features": c}) for c in channels]
    coords = [pixel_grid(im.shape[0], im.shape[1]) for im in images]
    targets = [image_targets(im) for im in images]
    bg, bg_stats = _fit_grouped(bg_shapes, coords, targets, seed, [("background", *k) for k in keys], options.fit)
    states = [{f"background.{k}": v for k, v in s.items()} for s in bg]
    seconds = bg_stats.seconds
    if not options.with_object:
        return states, seconds
    boxes = [b if b is not None else otsu_box(im) for im, b in zip(images, boxes)]
    ob_shapes, ob_coords, ob_targets, scales = [], [], [], []
    for im, box, shape, grid, target, state in zip(images, boxes, bg_shapes, coords, targets, bg):
        top, left, bottom, right = box
        inside = _box_mask(im.shape[0], im.shape[1], box)
        residual = (target - evaluate_siren(state, shape, grid))[inside]
        scale = float(residual.abs().max()) or 1.0
        ob_shapes.append(SirenShape(hidden=object_hidden(box, options.object_hidden), layers=options.object_layers,
                                    out_features=shape.out_features, w0=shape.w0))
        ob_coords.append(pixel_grid(bottom - top, right - left))
        ob_targets.append(residual / scale)
        scales.append(scale)
    ob, ob_stats = _fit_grouped(ob_shapes, ob_coords, ob_targets, seed, [("object", *k) for k in keys], options.fit)
    for state, obj, shape, scale, box in zip(states, ob, ob_shapes, scales, boxes):
        last = shape.layers - 1
        # The residual's scale folded into the output layer: the receiver needs no extra value.
        obj[f"layers.{last}.weight"] = obj[f"layers.{last}.weight"] * scale
        obj[f"layers.{last}.bias"] = obj[f"layers.{last}.bias"] * scale
        state.update({f"object.{k}": v for k, v in obj.items()})
        state["object.box"] = torch.tensor(box, dtype=torch.int32)
    return states, seconds + ob_stats.seconds


def _box_mask(height: int, width: int, box: Box) -> torch.Tensor:
    top, left, bottom, right = box
    inside = torch.zeros(height, width, dtype=torch.bool)
    inside[top:bottom, left:right] = True
    return inside.reshape(-1)


def _shape_of(state: State, prefix: str, w0: float) -> SirenShape:
    layers = sum(1 for k in state if k.startswith(prefix) and k.endswith(".weight"))
    first, last = state[f"{prefix}layers.0.weight"], state[f"{prefix}layers.{layers - 1}.weight"]
    return SirenShape(hidden=first.shape[1], layers=layers, out_features=last.shape[1], in_features=first.shape[0], w0=w0)


def decode_residual_inr(state: State, height: int, width: int, w0: float = 30.0) -> np.ndarray:
    """The image a Residual-INR state encodes, [H, W] or [H, W, C] in [0, 1]."""
    bg = {k.removeprefix("background."): v for k, v in state.items() if k.startswith("background.")}
    shape = _shape_of(bg, "", w0)
    out = evaluate_siren(bg, shape, pixel_grid(height, width))
    if "object.box" in state:
        top, left, bottom, right = (int(v) for v in state["object.box"])
        top, left = max(top, 0), max(left, 0)
        bottom, right = min(max(bottom, top), height), min(max(right, left), width)
        if bottom > top and right > left:
            obj = {k.removeprefix("object."): v for k, v in state.items() if k.startswith("object.layers.")}
            residual = evaluate_siren(obj, _shape_of(obj, "", w0), pixel_grid(bottom - top, right - left))
            out[_box_mask(height, width, (top, left, bottom, right))] += residual
    image = ((out + 1) / 2).clamp(0, 1).reshape(height, width, -1).numpy()
    return image[..., 0] if image.shape[-1] == 1 else image
