from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from testbed.rng import derive_rng, derive_seed, derive_torch_generator


def draws(*args, n=8):
    return derive_rng(*args).random(n)


def test_same_keys_same_stream():
    assert np.array_equal(draws(7, "link", 3, 12, "down"), draws(7, "link", 3, 12, "down"))


@pytest.mark.parametrize(
    "a, b",
    [
        ((7, "link", 3, 12, "down"), (7, "link", 3, 12, "up")),  # direction
        ((7, "link", 3, 12, "down"), (7, "link", 3, 13, "down")),  # device
        ((7, "link", 3, 12, "down"), (7, "link", 4, 12, "down")),  # round
        ((7, "link", 3, 12, "down"), (8, "link", 3, 12, "down")),  # seed
        ((7, 1), (7, "1")),  # an int and its string
        ((7, "a", 1), (7, 1, "a")),  # order of keys
        ((7, "ab"), (7, "a", "b")),  # how keys are split
        ((7,), (7, 0)),  # a key added
        ((3, 0), (-3, 0)),  # negative seed
        ((0, -1), (0, 1)),  # negative key
    ],
)
def test_different_keys_different_streams(a, b):
    assert not np.array_equal(draws(*a), draws(*b))


def test_numpy_ints_are_keys_like_python_ints():
    assert np.array_equal(draws(np.int64(5), np.int32(2), "x"), draws(5, 2, "x"))


def test_bad_key_is_an_error():
    with pytest.raises(TypeError, match="ints or strings"):
        derive_rng(0, 1.5)


def test_derive_seed_is_63_bit_and_stable():
    seeds = [derive_seed(0, "model", i) for i in range(200)]
    assert all(0 <= s < 2**63 for s in seeds)
    assert len(set(seeds)) == 200
    assert max(seeds) > 2**61  # uses the high bits too
    assert derive_seed(0, "model", 5) == seeds[5]


def test_string_keys_do_not_depend_on_python_hash_seed():
    code = "from testbed.rng import derive_seed; print(derive_seed(1, 'fleet', 'link.snr_db', 3))"
    outputs = set()
    for hash_seed in ("1", "2"):
        env = dict(os.environ, PYTHONHASHSEED=hash_seed)
        outputs.add(subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout)
    assert outputs == {f"{derive_seed(1, 'fleet', 'link.snr_db', 3)}\n"}


def test_torch_generator_reproducible_and_keyed():
    a = torch.rand(5, generator=derive_torch_generator(1, "init"))
    b = torch.rand(5, generator=derive_torch_generator(1, "init"))
    c = torch.rand(5, generator=derive_torch_generator(1, "other"))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
