"""MNIST from the canonical IDX gzip files in ``<data dir>/mnist/``."""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np
import torch

from testbed.data.base import Dataset, DatasetError, check_md5, download

MIRROR = "https://ossci-datasets.s3.amazonaws.com/mnist/"
FILES = {
    "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
}
MEAN, STD = 0.1307, 0.3081  # over the MNIST training set


def normalise(images: np.ndarray) -> torch.Tensor:
    """uint8 N x 28 x 28 (or float in 0..255) -> float32 N x 1 x 28 x 28, standardised."""
    x = torch.from_numpy(np.asarray(images, dtype=np.float32).reshape(-1, 1, 28, 28))
    return (x / 255.0 - MEAN) / STD


def read_idx(path: Path) -> np.ndarray:
    """Decode one gzipped IDX file (unsigned-byte data, big-endian dimensions)."""
    try:
        with gzip.open(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError, zlib.error) as exc:
        raise DatasetError(f"{path}: not a readable gzip file ({exc}); delete it and download it again") from None
    if len(raw) < 4 or raw[:2] != b"\x00\x00" or raw[2] != 0x08:
        raise DatasetError(f"{path}: not an unsigned-byte IDX file; delete it and download it again")
    ndim = raw[3]
    header = 4 + 4 * ndim
    dims = tuple(int(d) for d in np.frombuffer(raw[4:header], dtype=">u4"))
    if len(raw) != header + int(np.prod(dims)):
        raise DatasetError(f"{path}: holds {len(raw) - header} values, its header says {int(np.prod(dims))}")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


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


def load_mnist(root: Path, download_missing: bool = True) -> Dataset:
    folder = ensure_files(root, download_missing)
    train_x = read_idx(folder / "train-images-idx3-ubyte.gz")
    train_y = read_idx(folder / "train-labels-idx1-ubyte.gz")
    test_x = read_idx(folder / "t10k-images-idx3-ubyte.gz")
    test_y = read_idx(folder / "t10k-labels-idx1-ubyte.gz")
    return Dataset(
        name="mnist",
        description="MNIST: 60,000 training and 10,000 test images of handwritten digits, 28x28 grey",
        train_x=normalise(train_x),
        train_y=torch.from_numpy(train_y.astype(np.int64)),
        test_x=normalise(test_x),
        test_y=torch.from_numpy(test_y.astype(np.int64)),
        num_classes=10,
    )
