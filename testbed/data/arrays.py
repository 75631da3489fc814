"""Image and label arrays to a :class:`Dataset`: layout and label checks, then normalisation.

Every loader ends here, the built-in ones and a user's. Images are N x H x W
(one channel) or N x H x W x C; uint8 values are scaled to 0..1, float values
are taken as they are. Each channel is then standardised with a mean and std:
the ones given (the built-in datasets' published values) or those of the
training split. Labels are integers 0..K-1, K the number of classes (given, or
one more than the largest training label). Each problem is one
:class:`DatasetError` line naming the array's source.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from testbed.data.base import Dataset, DatasetError


def _images(array: np.ndarray, where: str) -> np.ndarray:
    """float32 N x C x H x W from N x H x W or N x H x W x C."""
    a = np.asarray(array)
    if a.ndim == 3:
        a = a[:, None]
    elif a.ndim == 4:
        if a.shape[3] > 4 and a.shape[1] <= 4:
            raise DatasetError(f"{where}: shape {a.shape} looks channels-first; images are N x H x W x C")
        a = a.transpose(0, 3, 1, 2)
    else:
        raise DatasetError(f"{where}: shape {a.shape}; images are N x H x W or N x H x W x C")
    if len(a) == 0:
        raise DatasetError(f"{where}: holds no images")
    if a.dtype != np.uint8 and not np.issubdtype(a.dtype, np.floating):
        raise DatasetError(f"{where}: dtype {a.dtype}; images are uint8 (0..255) or float")
    x = np.array(a, dtype=np.float32, order="C")  # a copy: standardised in place, the caller's array untouched
    if a.dtype == np.uint8:
        x /= np.float32(255)
    elif not np.isfinite(x).all():
        raise DatasetError(f"{where}: holds NaN or infinite values")
    return x


def _labels(array: np.ndarray, count: int, where: str) -> np.ndarray:
    y = np.asarray(array)
    if y.ndim != 1:
        raise DatasetError(f"{where}: shape {y.shape}; labels are one integer per image")
    if not np.issubdtype(y.dtype, np.integer):
        raise DatasetError(f"{where}: dtype {y.dtype}; labels are integers 0..K-1")
    if len(y) != count:
        raise DatasetError(f"{where}: {len(y)} labels for {count} images")
    if y.min() < 0:
        raise DatasetError(f"{where}: label {int(y.min())} out of range; labels are 0..K-1")
    return y.astype(np.int64)


def hwc(shape: Sequence[int]) -> str:
    """C x H x W as a reader of the files sees it: H x W x C."""
    c, h, w = shape
    return f"{h}x{w}x{c}"


def channel_stats(x: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of N x C x H x W values (a constant channel gets std 1, our choice)."""
    means, stds = [], []
    for channel in x.transpose(1, 0, 2, 3):  # one channel at a time: no float64 copy of the whole set
        mean = float(channel.mean(dtype=np.float64))
        std = float(np.sqrt(np.square(channel - np.float32(mean)).mean(dtype=np.float64)))
        means.append(mean)
        stds.append(std if std > 0 else 1.0)
    return tuple(means), tuple(stds)


def _standardise(x: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    shape = (1, len(mean), 1, 1)
    x -= np.asarray(mean, dtype=np.float32).reshape(shape)
    x /= np.asarray(std, dtype=np.float32).reshape(shape)
    return torch.from_numpy(x)


def dataset_from_arrays(
    name: str,
    description: str,
    train_images,
    train_labels,
    test_images,
    test_labels,
    *,
    num_classes: int | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    sources: Sequence[str] = ("training images", "training labels", "test images", "test labels"),
) -> Dataset:
    """A Dataset from image and label arrays; ``sources`` name the four arrays in error messages."""
    train_src, train_label_src, test_src, test_label_src = sources
    train_x, test_x = _images(train_images, train_src), _images(test_images, test_src)
    if train_x.shape[1:] != test_x.shape[1:]:
        raise DatasetError(
            f"{test_src}: images are {hwc(test_x.shape[1:])}, the training images {hwc(train_x.shape[1:])}"
        )
    train_y = _labels(train_labels, len(train_x), train_label_src)
    test_y = _labels(test_labels, len(test_x), test_label_src)
    classes = num_classes if num_classes is not None else int(train_y.max()) + 1
    for labels, where in ((train_y, train_label_src), (test_y, test_label_src)):
        if labels.max() >= classes:
            raise DatasetError(
                f"{where}: label {int(labels.max())} out of range; the classes are 0..{classes - 1}"
                + ("" if num_classes is not None else " (from the training labels)")
            )
    channels = train_x.shape[1]
    if mean is None or std is None:
        mean, std = channel_stats(train_x)
    if len(mean) != channels or len(std) != channels:
        raise DatasetError(f"{name}: {len(mean)} means and {len(std)} stds given for {channels} channels")
    return Dataset(
        name=name,
        description=description,
        train_x=_standardise(train_x, mean, std),
        train_y=torch.from_numpy(train_y),
        test_x=_standardise(test_x, mean, std),
        test_y=torch.from_numpy(test_y),
        num_classes=classes,
        mean=tuple(float(m) for m in mean),
        std=tuple(float(s) for s in std),
    )
