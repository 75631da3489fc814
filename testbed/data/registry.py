"""Datasets by name: the built-in ones, registered ones, and installed packages' entry points.

A dataset is a loader, ``load(source: DataSource) -> Dataset``, registered under
a name: in this module's table, with ``@register_dataset("name")``, or by a
package declaring::

    [project.entry-points."testbed.datasets"]
    mydata = "mypackage.data:load_mydata"

A config names it in ``data.dataset``. Loaded datasets are cached per process
(a Ray worker loads each once), keyed by their :class:`DataSource`: the name
and the resolved data folder, path, format and test fraction.
"""

from __future__ import annotations

from pathlib import Path

from testbed.data.base import Dataset, DatasetError, DatasetInfo, DataSource, resolve_data_dir
from testbed.plugins import Registry

DATASETS = Registry(
    "dataset",
    "testbed.datasets",
    {
        "mnist": "testbed.data.mnist:load_mnist",
        "mnist-sample": "testbed.data.sample:load_mnist_sample",
        "cifar10": "testbed.data.cifar:load_cifar10",
        "files": "testbed.data.files:load_files",
    },
    DatasetError,
)
register_dataset = DATASETS.register

_cache: dict[DataSource, Dataset] = {}


def data_source(data_cfg, base_dir: str | Path | None = None, download: bool = True) -> DataSource:
    """The DataSource of a DataConfig; a relative ``data.path`` is under ``base_dir`` (the config's folder)."""
    path = None
    if data_cfg.path is not None:
        path = Path(data_cfg.path).expanduser()
        if not path.is_absolute():
            path = Path(base_dir if base_dir is not None else Path.cwd()) / path
        path = path.resolve()
    return DataSource(
        dataset=data_cfg.dataset,
        data_dir=resolve_data_dir(data_cfg.dir).resolve(),
        path=path,
        format=data_cfg.format,
        test_fraction=data_cfg.test_fraction,
        download=download,
    )


def _load(source: DataSource) -> Dataset:
    if source not in _cache:
        dataset = DATASETS.get(source.dataset)(source)
        if not isinstance(dataset, Dataset):
            raise DatasetError(f"dataset {source.dataset!r}: its loader returned a {type(dataset).__name__}, not a Dataset")
        _cache[source] = dataset
    return _cache[source]


def _info(source: DataSource) -> DatasetInfo:
    info = getattr(DATASETS.get(source.dataset), "info", None)  # declared with @fixed_shape
    if info is None:
        dataset = _load(source)
        info = DatasetInfo(dataset.input_shape, dataset.num_classes)
    return info


def load_data(data_cfg, base_dir: str | Path | None = None, download: bool = True) -> Dataset:
    """The dataset a DataConfig (the config's ``data`` section) names; ``base_dir``: the config file's folder."""
    return _load(data_source(data_cfg, base_dir, download))


def data_info(data_cfg, base_dir: str | Path | None = None) -> DatasetInfo:
    """Input shape and classes of a DataConfig's dataset: declared by its loader, else from loading it."""
    return _info(data_source(data_cfg, base_dir))


def _named(name: str, data_dir: str | Path | None = None, download: bool = True) -> DataSource:
    return DataSource(name, resolve_data_dir(data_dir).resolve(), download=download)


def load_dataset(name: str, data_dir: str | Path | None = None, download: bool = True) -> Dataset:
    """A dataset that needs no options but its data folder (``data_dir``, else $TESTBED_DATA_DIR, else the cache)."""
    return _load(_named(name, data_dir, download))


def dataset_info(name: str) -> DatasetInfo:
    """Input shape and classes of a dataset that needs no options (see :func:`data_info`)."""
    return _info(_named(name))


def clear_cache() -> None:
    _cache.clear()
