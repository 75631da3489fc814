"""Object boxes for data sharing: an image folder's boxes.csv, refused in one line when wrong, sent up exactly."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from testbed.config import DataConfig
from testbed.data import DatasetError, load_data


def folder(root, boxes_csv: str | None):
    """Two classes of three 12 x 16 grey images each (a bright square on each), and a boxes.csv."""
    rng = np.random.default_rng(0)
    for c in ("a", "b"):
        (root / c).mkdir(parents=True)
        for k in range(3):
            image = (rng.uniform(0, 60, (12, 16))).astype(np.uint8)
            image[2 + k:6 + k, 3:9] = 250
            Image.fromarray(image).save(root / c / f"{k}.png")
    if boxes_csv is not None:
        (root / "boxes.csv").write_text(boxes_csv)
    return DataConfig(dataset="files", path=str(root), format="image-folder", test_fraction=0.34)


def test_boxes_csv_gives_each_training_image_its_box(tmp_path):
    rows = "file,top,left,bottom,right\n" + "".join(f"{c}/{k}.png,{2 + k},3,{6 + k},9\n" for c in "ab" for k in range(3) if (c, k) != ("b", 2))
    data = load_data(folder(tmp_path / "imgs", rows))
    assert data.train_boxes is not None and data.train_boxes.shape == (len(data.train_y), 4)
    pixels = data.train_x[:, 0] * data.std[0] + data.mean[0]
    for image, box in zip(pixels, data.train_boxes.tolist()):
        if box[0] < 0:
            continue  # b/2.png has no row (or is a test image)
        top, left, bottom, right = box
        assert (image[top:bottom, left:right] > 0.9).all()  # the box is the image's own square
        assert image[bottom:, left:right].numel() == 0 or (image[bottom:, left:right] < 0.9).all()
    assert (data.train_boxes < 0).all(dim=1).sum() <= 1
    assert load_data(folder(tmp_path / "plain", None)).train_boxes is None


@pytest.mark.parametrize("rows, says", [
    ("file,top,left\n", "line 1: header"),
    ("file,top,left,bottom,right\na/0.png,1,2,3\n", "line 2: 4 fields"),
    ("file,top,left,bottom,right\na/0.png,1,2,3,4\na/1.png,1,x,3,4\n", "line 3: top, left, bottom, right must be integers"),
    ("file,top,left,bottom,right\na/0.png,1,2,13,4\n", "line 2: box (1, 2, 13, 4) is not inside the 12x16 image"),
    ("file,top,left,bottom,right\na/0.png,5,2,3,4\n", "line 2: box (5, 2, 3, 4)"),
    ("file,top,left,bottom,right\na/0.png,1,2,3,4\n\na/0.png,1,2,3,4\n", "line 4: a/0.png has a box already"),
    ("file,top,left,bottom,right\nc/9.png,1,2,3,4\n", "line 2: no image c/9.png"),
])
def test_a_bad_boxes_row_is_one_line_naming_file_and_line(tmp_path, rows, says):
    with pytest.raises(DatasetError) as err:
        load_data(folder(tmp_path / "imgs", rows))
    message = str(err.value)
    assert "\n" not in message and "boxes.csv" in message and says in message, message


def test_an_upload_carries_its_boxes_in_16_bytes_each_exactly():
    from testbed.payload import Payload
    from testbed.scenarios.datasharing import jpeg_payload, jpeg_schema, read_boxes

    files = [b"\xff\xd8one", b"\xff\xd8second"]
    plain, boxed = jpeg_payload(files), jpeg_payload(files, [(1, 2, 3, 4), (-1, -1, -1, -1)])
    assert 32 <= boxed.nbytes - plain.nbytes <= 34  # the boxes, plus at most their segment's framing
    assert len(boxed.to_bytes()) == boxed.nbytes
    back = Payload.from_bytes(boxed.to_bytes(), jpeg_schema(2, boxes=True))
    assert read_boxes(back) == [(1, 2, 3, 4), None]
    assert read_boxes(Payload.from_bytes(plain.to_bytes(), jpeg_schema(2))) is None


def test_a_given_box_is_the_object_inr_region():
    from testbed.inr import FitOptions, ResidualOptions, SirenShape, fit_residual_inrs

    image = np.zeros((12, 16), dtype=np.float32)
    image[2:6, 3:9] = 1
    options = ResidualOptions(background=SirenShape(hidden=8, layers=2), object_layers=2, object_hidden=(4, 4),
                              fit=FitOptions(iterations=2))
    given, otsu = fit_residual_inrs([image, image], [(1, 1, 10, 12), None], 0, [(0,), (1,)], options)[0]
    assert given["object.box"].tolist() == [1, 1, 10, 12] and otsu["object.box"].tolist() == [2, 3, 6, 9]
    assert given["object.box"].dtype == torch.int32
