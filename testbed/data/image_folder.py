"""Format ``image-folder`` of the files dataset: one subfolder of PNG or JPEG images per class.

Either ``<path>/<class>/*.png|jpg|jpeg``, split here into training and test
images, or ``<path>/train/<class>/...`` and ``<path>/test/<class>/...``. Class
labels are the class folders' names in sorted order (from ``train/`` when
split). Hidden files (``.DS_Store``...) and files directly in ``<path>`` are
ignored; anything else that is not a PNG or JPEG image is an error naming it.
Images are grey when all of them are (modes ``1``, ``L``, ``I``, ``F``...), else
all are read as RGB (alpha dropped); all must have the same size.

Object boxes (what the data-sharing scenario fits its object INRs to) may be given in
``<path>/boxes.csv``: a header ``file,top,left,bottom,right`` and one row per image,
``file`` relative to ``<path>`` with ``/`` (``cat/001.png``, ``train/cat/001.png``),
the box in pixels (top and left inclusive, bottom and right exclusive, within the
image). Images without a row have no box. A bad row is refused in one line naming the
file and line.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from testbed.data.base import DatasetError
from testbed.rng import derive_rng

SUFFIXES = (".png", ".jpg", ".jpeg")
PIL_FORMATS = ("PNG", "JPEG")
GREY_MODES = ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F")
DEFAULT_TEST_FRACTION = 0.2  # of each class, when the folder is not split into train/ and test/
SPLIT_SEED = 0  # fixed, like mnist-sample's: the split is part of what the dataset is


@dataclass
class ImageFolder:
    arrays: list[np.ndarray]  # training images, labels, test images, labels
    sources: list[str]  # what error messages name for each array
    classes: list[str]
    split: str  # how the test images were chosen
    train_boxes: np.ndarray | None = None  # int32 [N, 4] per training image (-1: none), from boxes.csv


BOXES_FILE = "boxes.csv"
BOX_COLUMNS = ("file", "top", "left", "bottom", "right")


def read_boxes(path: Path, files: list[Path], size: tuple[int, int]) -> np.ndarray | None:
    """The boxes of ``files`` (images of ``size``) from ``path/boxes.csv``, or None without one."""
    import csv

    csv_path = path / BOXES_FILE
    if not csv_path.is_file():
        return None
    where = {f.relative_to(path).as_posix(): k for k, f in enumerate(files)}
    boxes = np.full((len(files), 4), -1, dtype=np.int32)
    with csv_path.open(newline="", encoding="utf-8-sig") as handle:
        rows = csv.reader(handle)
        header = [c.strip() for c in next(rows, [])]
        if tuple(header) != BOX_COLUMNS:
            raise DatasetError(f"{csv_path} line 1: header {','.join(header)!r}, expected {','.join(BOX_COLUMNS)}")
        seen: set[str] = set()
        for line, row in enumerate(rows, 2):
            if not row or all(not c.strip() for c in row):
                continue
            if len(row) != len(BOX_COLUMNS):
                raise DatasetError(f"{csv_path} line {line}: {len(row)} fields, expected {len(BOX_COLUMNS)} ({','.join(BOX_COLUMNS)})")
            name = row[0].strip()
            try:
                top, left, bottom, right = (int(c) for c in row[1:])
            except ValueError:
                raise DatasetError(f"{csv_path} line {line}: top, left, bottom, right must be integers, got {','.join(row[1:])}") from None
            if not (0 <= top < bottom <= size[0] and 0 <= left < right <= size[1]):
                raise DatasetError(f"{csv_path} line {line}: box ({top}, {left}, {bottom}, {right}) is not inside the "
                                   f"{size[0]}x{size[1]} image with top < bottom and left < right")
            if name in seen:
                raise DatasetError(f"{csv_path} line {line}: {name} has a box already")
            seen.add(name)
            if name in where:
                boxes[where[name]] = (top, left, bottom, right)
            elif not (path / name).is_file():
                raise DatasetError(f"{csv_path} line {line}: no image {name} in {path}")
    return boxes


def _subfolders(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _image_files(class_dir: Path) -> list[Path]:
    files = []
    for entry in sorted(class_dir.iterdir()):
        if entry.name.startswith("."):
            continue
        if entry.is_dir():
            raise DatasetError(f"{entry}: a folder inside a class folder; a class folder holds only images")
        if entry.suffix.lower() not in SUFFIXES:
            raise DatasetError(f"{entry}: not a PNG or JPEG file (a class folder holds only images)")
        files.append(entry)
    if not files:
        raise DatasetError(f"{class_dir}: an empty class folder (no PNG or JPEG images)")
    return files


def _read(path: Path) -> tuple[np.ndarray, bool]:
    """(H x W or H x W x 3 uint8, is grey) of one image."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            if image.format not in PIL_FORMATS:
                raise DatasetError(f"{path}: a {image.format} image, not PNG or JPEG")
            grey = image.mode in GREY_MODES
            return np.asarray(image.convert("L" if grey else "RGB")), grey
    except DatasetError:
        raise
    except Exception as exc:  # noqa: BLE001 - Pillow raises many types for a damaged file
        raise DatasetError(f"{path}: unreadable image ({exc})") from None


def _read_split(class_dirs: list[Path], labels: list[int], size: tuple[int, int] | None, which: str):
    """Images and labels of class folders; every image must have ``size`` (H, W), else the first one's."""
    images, targets, greys, paths = [], [], [], []
    for class_dir, label in zip(class_dirs, labels):
        for path in _image_files(class_dir):
            paths.append(path)
            array, grey = _read(path)
            if size is None:
                size = array.shape[:2]
            elif array.shape[:2] != size:
                h, w = array.shape[:2]
                raise DatasetError(f"{path}: {h}x{w} pixels, the {which} images are {size[0]}x{size[1]}")
            images.append(array)
            targets.append(label)
            greys.append(grey)
    return images, np.asarray(targets, dtype=np.int64), greys, size, paths


def _stack(images: list[np.ndarray], colour: bool) -> np.ndarray:
    if colour:
        images = [np.repeat(a[:, :, None], 3, axis=2) if a.ndim == 2 else a for a in images]
    return np.stack(images)


def _test_split(labels: np.ndarray, fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """(training, test) indices: per class round(fraction * n) test images, at least 1 and at most n - 1."""
    rng = derive_rng(SPLIT_SEED, "image-folder", "test-split")
    train, test = [], []
    for c in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == c))
        k = min(max(round(fraction * len(members)), 1), len(members) - 1)
        test.append(np.sort(members[:k]))
        train.append(members[k:])
    # shuffled, so that the first N training images (model.train.train_subset) cover every class
    return rng.permutation(np.concatenate(train)), np.concatenate(test)


def read_image_folder(path: Path, test_fraction: float | None) -> ImageFolder:
    if not path.is_dir():
        raise DatasetError(f"{path}: not a folder (format image-folder reads one subfolder of images per class)")
    subfolders = _subfolders(path)
    names = [p.name for p in subfolders]
    if "train" in names or "test" in names:
        if not ("train" in names and "test" in names):
            have, lack = ("train", "test") if "train" in names else ("test", "train")
            raise DatasetError(f"{path}: has a {have}/ folder but no {lack}/ folder")
        if test_fraction is not None:
            raise DatasetError(f"{path}: split into train/ and test/ already; data.test_fraction does not apply")
        train_dirs = _subfolders(path / "train")
        classes = [p.name for p in train_dirs]
        if not classes:
            raise DatasetError(f"{path / 'train'}: no class folders (one subfolder of images per class)")
        test_dirs = _subfolders(path / "test")
        for d in test_dirs:
            if d.name not in classes:
                raise DatasetError(f"{d}: class {d.name!r} has no folder in {path / 'train'}")
        train_x, train_y, train_grey, size, train_files = _read_split(train_dirs, list(range(len(classes))), None, "training")
        test_x, test_y, test_grey, _, _ = _read_split(
            test_dirs, [classes.index(d.name) for d in test_dirs], size, "training"
        )
        colour = not all(train_grey + test_grey)
        arrays = [_stack(train_x, colour), train_y, _stack(test_x, colour), test_y]
        split = "test images from test/"
        where = [path / "train", path / "test"]
    else:
        if not subfolders:
            raise DatasetError(f"{path}: no class folders (one subfolder of PNG or JPEG images per class)")
        classes = names
        images, labels, greys, size, files = _read_split(subfolders, list(range(len(classes))), None, "other")
        fraction = DEFAULT_TEST_FRACTION if test_fraction is None else test_fraction
        train_idx, test_idx = _test_split(labels, fraction)
        x = _stack(images, not all(greys))
        arrays = [x[train_idx], labels[train_idx], x[test_idx], labels[test_idx]]
        train_files = [files[k] for k in train_idx]
        split = f"test fraction {fraction} of each class, seed {SPLIT_SEED}"
        where = [path, path]
    sources = [f"{where[0]} (training images)", f"{where[0]} (labels)", f"{where[1]} (test images)", f"{where[1]} (labels)"]
    return ImageFolder(arrays, sources, classes, split, read_boxes(path, train_files, size))
