"""Segmentation data module: sources, splits, batches, transforms, bad --data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from cnnzoo.data import seg_datamodule
from cnnzoo.data.scenes import SCENE_CLASSES, generate_scenes
from cnnzoo.data.seg_datamodule import SegmentationData, pad_collate, train_transform
from cnnzoo.errors import CnnzooError


@pytest.fixture(scope="module")
def scenes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_scenes(tmp_path_factory.mktemp("s") / "scenes", n_train=20, n_test=6, size=32)


def _write_pair(root: Path, stem: str, mask: np.ndarray, image_size: tuple[int, int] | None = None):
    h, w = image_size or mask.shape
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((h, w, 3), 90, np.uint8)).save(root / "images" / f"{stem}.png")
    Image.fromarray(mask.astype(np.uint8), mode="L").save(root / "masks" / f"{stem}.png")


def test_scene_folder_splits_and_batches(scenes: Path) -> None:
    dm = SegmentationData(f"masks:{scenes}", batch_size=4, val_fraction=0.25, augment=False)
    assert dm.spec.class_names == SCENE_CLASSES  # from classes.txt
    assert dm.spec.sizes == {"train": 15, "val": 5, "test": 6}
    assert dm.spec.image_size == (32, 32) and dm.spec.in_channels == 3
    x, y = next(iter(dm.train_dataloader()))
    assert x.dtype == torch.uint8 and x.shape == (4, 3, 32, 32)
    assert y.dtype == torch.int64 and y.shape == (4, 32, 32)
    assert int(y.max()) < len(SCENE_CLASSES)
    xn, yn = dm.on_after_batch_transfer((x, y), 0)
    mean = torch.tensor(dm.spec.mean).view(1, 3, 1, 1)
    std = torch.tensor(dm.spec.std).view(1, 3, 1, 1)
    torch.testing.assert_close(xn, (x.float() / 255 - mean) / std)
    assert yn is y


def test_train_and_val_do_not_overlap(scenes: Path) -> None:
    dm = SegmentationData(f"masks:{scenes}", val_fraction=0.25)
    train, val = dm.splits["train"], dm.splits["val"]
    assert set(train.indices).isdisjoint(val.indices)
    assert len(set(train.indices) | set(val.indices)) == 20


def test_input_size_resizes_images_and_masks(scenes: Path) -> None:
    dm = SegmentationData(f"masks:{scenes}", input_size=[24, 40], augment=False)
    image, mask = dm.splits["test"][0]
    assert image.shape == (3, 24, 40) and mask.shape == (24, 40)
    assert dm.spec.image_size == (24, 40)


def test_scenes_are_generated_once_into_the_data_dir(tmp_path: Path, monkeypatch) -> None:
    tiny = {"n_train": 6, "n_test": 2, "size": 24, "max_items": 2}
    monkeypatch.setattr(seg_datamodule, "SCENES_DEFAULTS", tiny)
    dm = SegmentationData("scenes", data_dir=str(tmp_path), val_fraction=0.5)
    root = seg_datamodule.scenes_root(str(tmp_path))
    assert root.parent == tmp_path and (root / "masks" / "train" / "00005.png").is_file()
    assert dm.spec.sizes == {"train": 3, "val": 3, "test": 2}
    stamp = (root / "meta.json").stat().st_mtime_ns
    SegmentationData("scenes", data_dir=str(tmp_path))
    assert (root / "meta.json").stat().st_mtime_ns == stamp  # not regenerated


def test_pad_collate_pads_images_with_zero_and_masks_with_ignore() -> None:
    a = (torch.full((3, 2, 3), 7, dtype=torch.uint8), torch.ones(2, 3, dtype=torch.int64))
    b = (torch.full((3, 4, 2), 9, dtype=torch.uint8), torch.full((4, 2), 2, dtype=torch.int64))
    x, y = pad_collate([a, b])
    assert x.shape == (2, 3, 4, 3) and y.shape == (2, 4, 3)
    assert (x[0, :, :2, :3] == 7).all() and (x[0, :, 2:] == 0).all()
    assert (y[0, :2, :3] == 1).all() and (y[0, 2:] == 255).all()
    assert (y[1, :, :2] == 2).all() and (y[1, :, 2] == 255).all()


def test_random_rescale_crop_flip_keeps_image_and_mask_aligned() -> None:
    # Blocks of 16x16 pixels: the image's red channel encodes the block's label.
    labels = (torch.arange(6).view(6, 1) * 3 + torch.arange(8).view(1, 8)) % 11
    mask = labels.repeat_interleave(16, 0).repeat_interleave(16, 1)
    image = torch.stack([mask * 20, torch.zeros_like(mask), torch.zeros_like(mask)]).to(torch.uint8)
    torch.manual_seed(0)
    flips = set()
    for _ in range(10):
        out_image, out_mask = train_transform(image, mask, size=None, augment=True)
        assert out_image.shape == (3, 96, 128) and out_mask.shape == (96, 128)
        # Inside a block (5x5 neighbourhood of one label) bilinear resizing cannot blend.
        m = out_mask.float()[None, None]
        uniform = (F.max_pool2d(m, 5, 1, 2) == -F.max_pool2d(-m, 5, 1, 2))[0, 0]
        inside = uniform & (out_mask != 255)
        assert inside.sum() > 2000
        decoded = (out_image[0].float() / 20).round().long()
        assert torch.equal(decoded[inside], out_mask[inside])
        flips.add(bool(out_mask[0, 0] != mask[0, 0]))
    assert len(flips) == 2  # both flipped and unflipped (or shifted) crops occurred


def test_label_out_of_range_names_the_mask(tmp_path: Path) -> None:
    root = tmp_path / "d"
    _write_pair(root, "a", np.array([[0, 1], [1, 0]]))
    _write_pair(root, "b", np.array([[0, 3], [1, 0]]))
    (root / "classes.txt").write_text("bg\nthing\n")
    dm = SegmentationData(f"masks:{root}", val_fraction=0)
    with pytest.raises(CnnzooError, match=r"b\.png has label 3: expected 0\.\.1 or 255"):
        next(iter(dm.train_dataloader()))


def test_mask_of_another_size_names_the_file(tmp_path: Path) -> None:
    root = tmp_path / "d"
    _write_pair(root, "a", np.zeros((4, 4)), image_size=(4, 5))
    with pytest.raises(CnnzooError, match=r"a\.png is 4x4 but its image .*a\.png is 5x4"):
        dm = SegmentationData(f"masks:{root}", val_fraction=0)
        next(iter(dm.train_dataloader()))


def test_classes_are_inferred_without_classes_txt(tmp_path: Path) -> None:
    root = tmp_path / "d"
    _write_pair(root, "a", np.array([[0, 4], [255, 0]]))
    _write_pair(root, "b", np.array([[2, 2], [1, 0]]))
    dm = SegmentationData(f"masks:{root}", val_fraction=0.5)
    assert dm.spec.class_names == ["0", "1", "2", "3", "4"]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ("coco:/x", r"not understood: expected one of scenes, voc:PATH, cityscapes:PATH"),
        ("pascal", r"not understood: expected one of scenes, voc:PATH"),
        ("voc:", r"has no path"),
        ("masks:/no/such/folder", r"needs an images/ and a masks/ folder"),
    ],
)
def test_bad_data_specs_are_explained(data: str, message: str) -> None:
    with pytest.raises(CnnzooError, match=message):
        SegmentationData(data)


def test_a_bare_folder_asks_for_its_format(scenes: Path) -> None:
    with pytest.raises(CnnzooError, match=r"is a folder: .*\(e\.g\. masks:"):
        SegmentationData(str(scenes))


def test_input_size_must_be_positive(scenes: Path) -> None:
    with pytest.raises(CnnzooError, match="--input-size"):
        SegmentationData(f"masks:{scenes}", input_size=[0, 5])
