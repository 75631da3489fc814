"""SIREN fitting: a fitted INR reproduces its image; batched fitting is one-by-one fitting; states are codable."""

import numpy as np
import pytest
import torch

from strategies.registry import build
from testbed.inr import (FitOptions, ResidualOptions, SirenShape, decode_residual_inr, fit_residual_inrs, fit_sirens,
                         otsu_box, pixel_grid, psnr, ssim)

SMALL = ResidualOptions(background=SirenShape(hidden=16, layers=4), object_layers=3, object_hidden=(8, 8),
                        fit=FitOptions(iterations=150, lr=1e-3))


def image(key: int, height: int = 16, width: int = 16) -> np.ndarray:
    """A smooth background with one bright square (the object)."""
    rng = np.random.default_rng(key)
    yy, xx = np.mgrid[0:height, 0:width] / max(height, width)
    im = 0.3 + 0.2 * np.sin(3 * xx + rng.uniform(0, 3)) * np.cos(2 * yy)
    top, left = rng.integers(2, 6, 2)
    im[top:top + 6, left:left + 6] = 0.9
    return im.astype(np.float32)


@pytest.fixture(scope="module")
def fitted():
    states, seconds = fit_residual_inrs([image(k) for k in range(3)], [None] * 3, 0, [(k,) for k in range(3)], SMALL)
    assert seconds > 0
    return states


def test_a_fitted_inr_reproduces_its_image(fitted):
    for state, im in zip(fitted, [image(k) for k in range(3)]):
        assert psnr(decode_residual_inr(state, *im.shape), im) > 30


def test_the_object_residual_improves_the_object_region():
    im = image(1)
    bg_only = ResidualOptions(**{**SMALL.__dict__, "with_object": False})
    (plain,), _ = fit_residual_inrs([im], [None], 0, [(0,)], bg_only)
    (residual,), _ = fit_residual_inrs([im], [None], 0, [(0,)], SMALL)
    top, left, bottom, right = otsu_box(im)
    region = (slice(top, bottom), slice(left, right))
    assert psnr(decode_residual_inr(residual, 16, 16)[region], im[region]) > psnr(decode_residual_inr(plain, 16, 16)[region], im[region]) + 3


def test_batched_fitting_equals_one_by_one():
    shape = SirenShape(hidden=12, layers=3)
    sizes = [(16, 16), (10, 14), (16, 16)]  # padding and masking must not change an image's fit
    coords = [pixel_grid(h, w) for h, w in sizes]
    targets = [torch.from_numpy(image(k, h, w)).reshape(-1, 1) * 2 - 1 for k, (h, w) in enumerate(sizes)]
    options = FitOptions(iterations=60, lr=1e-3, target_psnr=28, check_every=10)
    batched, stats = fit_sirens(shape, coords, targets, 5, [(k,) for k in range(3)], options)
    for k in range(3):
        (alone,), alone_stats = fit_sirens(shape, [coords[k]], [targets[k]], 5, [(k,)], options)
        assert alone_stats.iterations[0] == stats.iterations[k]
        for name, tensor in alone.items():
            torch.testing.assert_close(batched[k][name], tensor, rtol=1e-4, atol=1e-5)


def test_the_target_psnr_stops_an_image_early():
    coords, target = pixel_grid(16, 16), torch.from_numpy(image(0)).reshape(-1, 1) * 2 - 1
    _, stats = fit_sirens(SirenShape(hidden=16, layers=3), [coords], [target], 0, [(0,)],
                          FitOptions(iterations=400, lr=1e-3, target_psnr=25, check_every=10))
    assert stats.iterations[0] < 400 and stats.psnr[0] >= 25


def test_otsu_box_finds_the_bright_square():
    im = np.zeros((20, 20), dtype=np.float32)
    im[3:9, 11:18] = 1.0
    assert otsu_box(im) == (3, 11, 9, 18)
    assert otsu_box(np.full((5, 7), 0.5, dtype=np.float32)) == (0, 0, 5, 7)


@pytest.mark.parametrize("spec", [{"strategy": "raw"}, {"strategy": "quantise", "bits": 8}, {"strategy": "quantise", "bits": 16, "entropy": True}])
def test_a_strategy_encodes_an_inr_state_with_its_box_exact(spec, fitted):
    state = fitted[2]
    strategy = build(spec)
    payload = strategy.encode(state)
    decoded = strategy.decode(strategy.read(payload.to_bytes(), state), state)
    assert len(payload.to_bytes()) == payload.nbytes
    assert torch.equal(decoded["object.box"], state["object.box"])
    im = image(2)
    assert psnr(decode_residual_inr(decoded, 16, 16), im) > (30 if spec.get("bits", 32) > 8 else 20)


def test_ssim_is_one_for_equal_images_and_falls_with_noise():
    im = image(3)
    noisy = np.clip(im + np.random.default_rng(0).normal(0, 0.1, im.shape), 0, 1)
    assert ssim(im, im) == pytest.approx(1.0)
    assert ssim(noisy, im) < 0.9
    rgb = np.stack([im, im, im], axis=-1)
    assert ssim(rgb, rgb) == pytest.approx(1.0)
