"""The ``files`` dataset: a user's own data, from ``data.path`` in ``data.format``.

- ``idx``: a folder with the four files of the MNIST layout (``FILES``), gzipped or not;
  any image size, any number of classes, no checksum;
- ``npz``: one ``.npz`` archive with arrays ``x_train``, ``y_train``, ``x_test``, ``y_test``;
- ``image-folder``: one subfolder of PNG/JPEG files per class (``testbed.data.image_folder``).

Shape, channels and classes come from the files; each channel is standardised
with the training split's mean and std.
"""

from __future__ import annotations

import zipfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from testbed.data.arrays import dataset_from_arrays, hwc
from testbed.data.base import Dataset, DatasetError, DataSource
from testbed.data.idx import read_idx

FORMATS = ("idx", "npz", "image-folder")
IDX_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
NPZ_ARRAYS = ("x_train", "y_train", "x_test", "y_test")


def _idx_arrays(folder: Path) -> tuple[list[np.ndarray], list[str]]:
    if not folder.is_dir():
        raise DatasetError(f"{folder}: not a folder (format idx reads the four MNIST-layout files in one)")
    paths = []
    for name in IDX_FILES:
        found = [p for p in (folder / f"{name}.gz", folder / name) if p.is_file()]
        if not found:
            raise DatasetError(f"{folder / name}.gz: missing (the file may also be uncompressed, without .gz)")
        paths.append(found[0])
    return [read_idx(p) for p in paths], [str(p) for p in paths]


def _npz_arrays(path: Path) -> tuple[list[np.ndarray], list[str]]:
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise DatasetError(f"{path}: not a readable .npz archive ({exc})") from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise DatasetError(f"{path}: a single .npy array, not an .npz archive of {', '.join(NPZ_ARRAYS)}")
    with archive:
        arrays = []
        for name in NPZ_ARRAYS:
            if name not in archive.files:
                raise DatasetError(f"{path}: no array {name!r} (it holds: {', '.join(archive.files) or 'nothing'})")
            try:
                arrays.append(archive[name])
            except ValueError:  # an object array: numpy refuses to unpickle it
                raise DatasetError(
                    f"{path}: {name} is an object array (ragged shapes?); save one N x H x W (x C) array"
                ) from None
            except (OSError, EOFError, zipfile.BadZipFile) as exc:
                raise DatasetError(f"{path}: {name} cannot be read ({exc})") from None
    return arrays, [f"{path}: {name}" for name in NPZ_ARRAYS]


def load_files(source: DataSource) -> Dataset:
    if source.path is None or source.format is None:
        raise DatasetError(
            "dataset 'files' needs data.path and data.format; load it from its config with "
            "testbed.data.load_data(data_config, base_dir)"
        )
    path = source.path
    if not path.exists():
        raise DatasetError(f"{path}: not found (data.path of dataset files)")
    num_classes, extra, boxes = None, "", None
    if source.format == "idx":
        arrays, sources = _idx_arrays(path)
    elif source.format == "npz":
        arrays, sources = _npz_arrays(path)
    elif source.format == "image-folder":
        from testbed.data.image_folder import read_image_folder

        folder = read_image_folder(path, source.test_fraction)
        arrays, sources = folder.arrays, folder.sources
        num_classes = len(folder.classes)
        extra = f" ({folder.split})"
        boxes = folder.train_boxes
    else:
        raise DatasetError(f"{path}: unknown format {source.format!r}; known: {', '.join(FORMATS)}")
    dataset = dataset_from_arrays("files", "", *arrays, num_classes=num_classes, sources=sources)
    description = (
        f"{source.format} data {path}: {len(dataset.train_y):,} training and {len(dataset.test_y):,} test images"
        f"{extra}, {hwc(dataset.input_shape)}, {dataset.num_classes} classes, standardised per channel "
        "with the training split's mean and std"
    )
    return replace(dataset, description=description, train_boxes=None if boxes is None else torch.from_numpy(boxes))
