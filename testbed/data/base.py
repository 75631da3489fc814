"""What a loaded dataset is, what a loader is told, where files live, and how missing ones are fetched.

A loader takes a :class:`DataSource` and returns a :class:`Dataset` of
normalised float32 tensors. Any problem with the files (missing while offline,
truncated, wrong checksum, unreadable) is one :class:`DatasetError` line naming
the file and what is wrong.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import torch

ENV_DATA_DIR = "TESTBED_DATA_DIR"
DEFAULT_DATA_DIR = Path("~/.cache/testbed/data")


class DatasetError(RuntimeError):
    """A dataset that cannot be loaded; the message is one line naming the file."""


@dataclass(frozen=True)
class DataSource:
    """What a loader is told: the config's data options, paths resolved (also the per-process cache key)."""

    dataset: str
    data_dir: Path  # data.dir, else $TESTBED_DATA_DIR, else ~/.cache/testbed/data; absolute
    path: Path | None = None  # data.path (dataset files), absolute
    format: str | None = None  # data.format (dataset files)
    test_fraction: float | None = None  # data.test_fraction (dataset files, format image-folder)
    download: bool = field(default=True, compare=False)  # fetch missing files; never changes what loads


@dataclass(frozen=True)
class DatasetInfo:
    """What a model needs to know of a dataset without loading it."""

    input_shape: tuple[int, int, int]
    num_classes: int


def fixed_shape(input_shape: tuple[int, int, int], num_classes: int):
    """Decorator: a loader whose input shape and classes are known without loading (its ``info``)."""

    def mark(loader):
        loader.info = DatasetInfo(tuple(input_shape), num_classes)
        return loader

    return mark


@dataclass
class Dataset:
    name: str
    description: str
    train_x: torch.Tensor  # float32, N x C x H x W, normalised
    train_y: torch.Tensor  # int64
    test_x: torch.Tensor
    test_y: torch.Tensor
    num_classes: int
    mean: tuple[float, ...] = ()  # the per-channel normalisation: x = (value - mean) / std
    std: tuple[float, ...] = ()
    # Object boxes of the training images where the dataset has them (an image folder's boxes.csv):
    # int32 [N, 4] (top, left, bottom, right; bottom and right exclusive), -1 rows where an image has none.
    train_boxes: torch.Tensor | None = None
    _fingerprint: str | None = field(default=None, repr=False)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(self.train_x.shape[1:])

    def fingerprint(self) -> str:
        """A hash of the dataset's content (for checkpoint keys); computed once."""
        if self._fingerprint is None:
            h = hashlib.blake2b(digest_size=16)
            h.update(self.name.encode())
            for t in (self.train_x, self.train_y, self.test_x, self.test_y):
                h.update(str(tuple(t.shape)).encode())
                h.update(t.contiguous().numpy().tobytes())
            self._fingerprint = h.hexdigest()
        return self._fingerprint


def resolve_data_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """The data folder: the argument (e.g. the config's ``data.dir``), else $TESTBED_DATA_DIR, else the cache."""
    chosen = data_dir or os.environ.get(ENV_DATA_DIR) or DEFAULT_DATA_DIR
    return Path(chosen).expanduser()


def md5sum(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def check_md5(path: Path, expected: str, hint: str) -> None:
    actual = md5sum(path)
    if actual != expected:
        raise DatasetError(
            f"{path}: checksum mismatch (md5 {actual}, expected {expected}): the file is truncated or "
            f"corrupt; delete it and {hint}"
        )


def download(url: str, dest: Path, md5: str, hint: str) -> None:
    """Fetch ``url`` to ``dest`` atomically and check its md5; any failure is one DatasetError."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=60) as response:
            shutil.copyfileobj(response, out)
        check_md5(Path(tmp), md5, hint)
        os.replace(tmp, dest)
    except DatasetError:
        raise
    except OSError as exc:  # URLError, timeouts and disk errors are all OSErrors
        reason = getattr(exc, "reason", None) or exc.strerror or exc
        raise DatasetError(f"{dest}: missing and the download from {url} failed ({reason}); {hint}") from None
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
