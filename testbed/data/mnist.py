"""MNIST from the canonical IDX gzip files in ``<data dir>/mnist/``."""

from __future__ import annotations

from pathlib import Path

from testbed.data.arrays import dataset_from_arrays
from testbed.data.base import Dataset, DatasetError, DataSource, check_md5, download, fixed_shape
from testbed.data.idx import read_idx

MIRROR = "https://ossci-datasets.s3.amazonaws.com/mnist/"
FILES = {
    "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
}
MEAN, STD = (0.1307,), (0.3081,)  # over the MNIST training set


def ensure_files(root: Path, download_missing: bool) -> Path:
    folder = root / "mnist"
    for name, md5 in FILES.items():
        path = folder / name
        hint = f"place the canonical MNIST file there (md5 {md5}) or allow downloading"
        if not path.exists():
            if not download_missing:
                raise DatasetError(f"{path}: missing and downloading is off; {hint}")
            download(MIRROR + name, path, md5, hint)
        else:
            check_md5(path, md5, "download it again (or let the loader do it)")
    return folder


@fixed_shape((1, 28, 28), 10)
def load_mnist(source: DataSource) -> Dataset:
    folder = ensure_files(source.data_dir, source.download)
    paths = [folder / name for name in FILES]
    return dataset_from_arrays(
        "mnist",
        "MNIST: 60,000 training and 10,000 test images of handwritten digits, 28x28 grey",
        *(read_idx(path) for path in paths),
        num_classes=10,
        mean=MEAN,
        std=STD,
        sources=[str(path) for path in paths],
    )
