"""Device-local data: disjoint partitions of a label column, and each device's split.

``dirichlet`` and ``shards`` reuse flwr-datasets' partitioners on a two-column
``datasets.Dataset`` (label, original index), so only the labels are touched.
``iid`` is a seeded shuffle cut into contiguous parts, the cut flwr-datasets'
IidPartitioner makes (``datasets.Dataset.shard(contiguous=True)``; a test checks
they agree), done here with numpy: importing flwr-datasets brings in seaborn,
scipy and Hugging Face datasets, seconds in every Ray worker of every run
(``python -X importtime -c "import flwr_datasets.partitioner"`` shows them).
Partition lists are cached per process: computing one device's split in a Ray
worker costs one partitioning of the labels, then a lookup.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from functools import cached_property
from typing import Literal

import numpy as np

from testbed.data.base import Dataset, DatasetError

Scheme = Literal["iid", "dirichlet", "shards"]

_partitioners: dict[tuple, tuple] = {}


def _partitioner(labels: np.ndarray, num_partitions: int, scheme: str, seed: int, alpha: float, shards: int):
    """The flwr-datasets partitioner over (label, idx) rows, cached per process."""
    n = len(labels)
    if not 1 <= num_partitions <= n:
        raise DatasetError(f"cannot split {n} items into {num_partitions} partitions")
    key = (labels.tobytes(), num_partitions, scheme, seed, alpha, shards)
    if key in _partitioners:
        return _partitioners[key]
    if scheme == "iid":
        _partitioners[key] = (IidCut(np.random.default_rng(seed).permutation(n), num_partitions), {})
        return _partitioners[key]

    from datasets import Dataset as HFDataset
    from flwr_datasets.partitioner import DirichletPartitioner, ShardPartitioner

    order = np.arange(n)
    if scheme == "dirichlet":
        min_size = min(10, n // num_partitions)
        partitioner = DirichletPartitioner(
            num_partitions, "label", alpha, min_partition_size=min_size, self_balancing=False, seed=seed
        )
    elif scheme == "shards":
        if num_partitions * shards > n:
            raise DatasetError(f"shards: {num_partitions} partitions x {shards} shards exceed {n} items")
        partitioner = ShardPartitioner(num_partitions, "label", num_shards_per_partition=shards, seed=seed)
    else:
        raise DatasetError(f"unknown partition scheme {scheme!r}; known: iid, dirichlet, shards")
    partitioner.dataset = HFDataset.from_dict({"label": labels[order], "idx": order})
    _partitioners[key] = (partitioner, {})
    return _partitioners[key]


class IidCut:
    """A shuffled order cut into ``parts`` contiguous parts, the first ``len % parts`` one longer:
    the cut of flwr-datasets' IidPartitioner, with its ``load_partition`` (rows with an ``idx``)."""

    def __init__(self, order: np.ndarray, parts: int):
        self.order, self.parts = order, parts

    def load_partition(self, index: int) -> dict:
        size, longer = divmod(len(self.order), self.parts)
        start = size * index + min(index, longer)
        return {"idx": self.order[start : start + size + (1 if index < longer else 0)]}


def _load_partition(labels, num_partitions, scheme, seed, alpha, shards, index: int) -> np.ndarray:
    partitioner, loaded = _partitioner(labels, num_partitions, scheme, seed, alpha, shards)
    if index not in loaded:
        try:
            with warnings.catch_warnings():  # pyarrow deprecation noise, resampling notices
                warnings.simplefilter("ignore", FutureWarning)
                warnings.simplefilter("ignore", UserWarning)  # dirichlet resampling notices
                loaded[index] = np.asarray(partitioner.load_partition(index)["idx"], dtype=np.int64)
        except ValueError as exc:
            raise DatasetError(
                f"{scheme} partitioning of {len(labels)} items into {num_partitions} parts failed: {exc}"
            ) from None
    return loaded[index]


def partition_indices(
    labels: np.ndarray,
    num_partitions: int,
    scheme: Scheme = "iid",
    seed: int = 0,
    alpha: float = 0.5,
    shards_per_device: int = 2,
) -> list[np.ndarray]:
    """Split ``range(len(labels))`` into ``num_partitions`` disjoint, seeded index arrays.

    ``iid``: a seeded shuffle cut into equal parts. ``dirichlet``: per-class
    proportions drawn from Dir(alpha). ``shards``: label-sorted shards, each
    partition gets ``shards_per_device`` of them.
    """
    labels = np.asarray(labels).reshape(-1)
    return [
        _load_partition(labels, num_partitions, scheme, seed, alpha, shards_per_device, i)
        for i in range(num_partitions)
    ]


class DeviceSplit:
    """A device's indices into ``dataset.test_x`` and ``dataset.train_x``. The training split is
    partitioned on first use: a broadcast fleet never touches it, and may have more devices than
    the training set has images."""

    def __init__(self, test_idx: np.ndarray, train_idx: Callable[[], np.ndarray]):
        self.test_idx = test_idx
        self._train_idx = train_idx

    @cached_property
    def train_idx(self) -> np.ndarray:
        return self._train_idx()


def _share(labels, num_devices: int, per_device: int | None, index: int, cfg, seed: int) -> np.ndarray:
    """This device's part of one labelled set.

    With more devices than the set can give ``per_device`` items each, devices
    share partitions: there are ``len // per_device`` of them and device i uses
    partition ``i mod P`` (our choice; with a fleet that size, disjointness
    cannot hold).
    """
    labels = np.asarray(labels)
    p = cfg.partition
    num_parts = num_devices if per_device is None else max(1, min(num_devices, len(labels) // per_device))
    part = _load_partition(labels, num_parts, p.scheme, seed, p.alpha, p.shards_per_device, index % num_parts)
    # a seeded shuffle of the partition, so a cap takes a fair sample of it
    part = part[np.random.default_rng([seed, index % num_parts]).permutation(len(part))]
    return part if per_device is None else part[:per_device]


def device_split(dataset: Dataset, data_cfg, num_devices: int, partition_index: int, seed: int) -> DeviceSplit:
    """Device ``partition_index``'s local test split (``data_cfg.test_per_device`` images of its
    partition of the test set) and training split (its partition of the training set, capped
    by ``data_cfg.train_per_device``)."""
    if not 0 <= partition_index < num_devices:
        raise DatasetError(f"device index {partition_index} outside a fleet of {num_devices}")
    test_idx = _share(dataset.test_y.numpy(), num_devices, data_cfg.test_per_device, partition_index, data_cfg, seed)
    return DeviceSplit(test_idx, lambda: _share(
        dataset.train_y.numpy(), num_devices, data_cfg.train_per_device, partition_index, data_cfg, seed + 1
    ))
