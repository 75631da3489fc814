"""CIFAR-10 from the python batches in ``<data dir>/cifar-10-batches-py/``.

The batches are pickles; they are read with an unpickler that only accepts the
few numpy and builtin types the official files contain, after their md5 matched.
"""

from __future__ import annotations

import pickle
import tarfile
from pathlib import Path

import numpy as np

from testbed.data.arrays import dataset_from_arrays
from testbed.data.base import Dataset, DatasetError, DataSource, check_md5, download, fixed_shape

URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
ARCHIVE = "cifar-10-python.tar.gz"
ARCHIVE_MD5 = "c58f30108f718f92721af3b95e74349a"
FOLDER = "cifar-10-batches-py"
TRAIN_BATCHES = {
    "data_batch_1": "c99cafc152244af753f735de768cd75f",
    "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
    "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
    "data_batch_4": "634d18415352ddfa80567beed471001a",
    "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
}
TEST_BATCHES = {"test_batch": "40351d587109b95175f43aff81a1287e"}
MEAN = (0.4914, 0.4822, 0.4465)  # per channel over the training set
STD = (0.2470, 0.2435, 0.2616)

_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
}


class _BatchUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) in _ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"unexpected type {module}.{name}")


def _read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(images N x 32 x 32 x 3 uint8, labels) of one batch."""
    try:
        with open(path, "rb") as f:
            entry = _BatchUnpickler(f, encoding="bytes").load()
        data = np.asarray(entry[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
        labels = np.asarray(entry[b"labels"], dtype=np.int64)
    except (pickle.UnpicklingError, KeyError, ValueError, EOFError, TypeError) as exc:
        raise DatasetError(f"{path}: not a CIFAR-10 python batch ({exc}); delete it and download it again") from None
    return data, labels


def ensure_files(root: Path, download_missing: bool) -> Path:
    folder = root / FOLDER
    batches = {**TRAIN_BATCHES, **TEST_BATCHES}
    missing = [name for name in batches if not (folder / name).exists()]
    if missing:
        hint = f"extract {URL} (md5 {ARCHIVE_MD5}) into {root} or allow downloading"
        if not download_missing:
            raise DatasetError(f"{folder / missing[0]}: missing and downloading is off; {hint}")
        archive = root / ARCHIVE
        if not archive.exists():
            download(URL, archive, ARCHIVE_MD5, hint)
        else:
            check_md5(archive, ARCHIVE_MD5, "download it again (or let the loader do it)")
        with tarfile.open(archive, "r:gz") as tar:
            members = [m for m in tar.getmembers() if m.isfile() and m.name.startswith(FOLDER + "/")]
            tar.extractall(root, members=members, filter="data")
    for name, md5 in batches.items():
        check_md5(folder / name, md5, f"extract it again from {ARCHIVE}")
    return folder


@fixed_shape((3, 32, 32), 10)
def load_cifar10(source: DataSource) -> Dataset:
    folder = ensure_files(source.data_dir, source.download)
    train = [_read_batch(folder / name) for name in TRAIN_BATCHES]
    test_x, test_y = _read_batch(folder / "test_batch")
    return dataset_from_arrays(
        "cifar10",
        "CIFAR-10: 50,000 training and 10,000 test colour images, 32x32, 10 classes",
        np.concatenate([x for x, _ in train]),
        np.concatenate([y for _, y in train]),
        test_x,
        test_y,
        num_classes=10,
        mean=MEAN,
        std=STD,
        sources=[str(folder / "data_batch_*")] * 2 + [str(folder / "test_batch")] * 2,
    )
