"""Segmentation data loaders: mask folders, VOC, Cityscapes, joint transforms, data specs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cnnzoo.data.formats.cityscapes import (
    CITYSCAPES_CLASSES,
    CITYSCAPES_ID_TO_TRAIN_ID,
    CityscapesSegmentation,
)
from cnnzoo.data.formats.voc import VOC_CLASSES, VOCSegmentation
from cnnzoo.data.segmentation import (
    IGNORE_INDEX,
    MaskFolderDataset,
    joint_transform,
    load_mask,
    parse_seg_data,
)
from cnnzoo.errors import CnnzooError


def _rgb(path: Path, h: int, w: int, value: int = 100) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((h, w, 3), value, np.uint8)).save(path)


def _gray(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array.astype(np.uint8), mode="L").save(path)


def _palette(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.fromarray(array.astype(np.uint8), mode="P")
    palette = [(i * 37) % 256 for i in range(256 * 3)]  # colours unrelated to the indices
    img.putpalette(palette)
    img.save(path)


# --------------------------------------------------------------------------------------------
# Cityscapes
# --------------------------------------------------------------------------------------------


def test_cityscapes_label_ids_to_train_ids(tmp_path: Path) -> None:
    ids = np.array([[7, 26, 0, 33], [8, 1, 255, 24]], np.uint8)
    for city, name in (("aachen", "aachen_000000_000019"), ("bremen", "bremen_000001_000019")):
        _rgb(tmp_path / "leftImg8bit" / "train" / city / f"{name}_leftImg8bit.png", 2, 4)
        _gray(tmp_path / "gtFine" / "train" / city / f"{name}_gtFine_labelIds.png", ids)
    ds = CityscapesSegmentation(tmp_path, "train")
    assert len(ds) == 2
    assert ds.class_names == list(CITYSCAPES_CLASSES) and len(ds.class_names) == 19
    assert ds.ignore_index == 255
    image, mask = ds[1]
    assert image.dtype == torch.uint8 and image.shape == (3, 2, 4)
    assert mask.dtype == torch.int64
    assert mask.tolist() == [[0, 13, 255, 18], [1, 255, 255, 11]]
    lut = CITYSCAPES_ID_TO_TRAIN_ID
    assert lut.shape == (256,) and int((lut != 255).sum()) == 19
    assert sorted(lut[lut != 255].tolist()) == list(range(19))


def test_cityscapes_errors(tmp_path: Path) -> None:
    with pytest.raises(CnnzooError, match="leftImg8bit"):
        CityscapesSegmentation(tmp_path)
    _rgb(tmp_path / "leftImg8bit" / "val" / "lindau" / "lindau_1_leftImg8bit.png", 2, 2)
    (tmp_path / "gtFine").mkdir()
    with pytest.raises(CnnzooError, match=r"split .*\['val'\]"):
        CityscapesSegmentation(tmp_path, "train")
    with pytest.raises(CnnzooError, match="lindau_1_gtFine_labelIds.png"):
        CityscapesSegmentation(tmp_path, "val")


# --------------------------------------------------------------------------------------------
# VOC
# --------------------------------------------------------------------------------------------


def _voc_tree(devkit: Path) -> Path:
    root = devkit / "VOC2012"
    seg = root / "ImageSets" / "Segmentation"
    seg.mkdir(parents=True)
    (seg / "train.txt").write_text("2007_000032\n2007_000039\n")
    (seg / "val.txt").write_text("2007_000033\n")
    labels = np.array([[0, 1, 20, 255], [15, 255, 7, 0]], np.uint8)
    for image_id in ("2007_000032", "2007_000039", "2007_000033"):
        _rgb(root / "JPEGImages" / f"{image_id}.jpg", 2, 4)
        _palette(root / "SegmentationClass" / f"{image_id}.png", labels)
    return root


def test_voc_palette_masks(tmp_path: Path) -> None:
    root = _voc_tree(tmp_path / "VOCdevkit")
    for given in (root, tmp_path / "VOCdevkit"):
        ds = VOCSegmentation(given, "train")
        assert len(ds) == 2
        assert ds.class_names == list(VOC_CLASSES) and len(ds.class_names) == 21
        image, mask = ds[0]
        assert image.dtype == torch.uint8 and image.shape == (3, 2, 4)
        assert mask.dtype == torch.int64
        assert mask.tolist() == [[0, 1, 20, 255], [15, 255, 7, 0]]
    assert len(VOCSegmentation(root, "val")) == 1


def test_voc_errors(tmp_path: Path) -> None:
    with pytest.raises(CnnzooError, match="ImageSets/Segmentation"):
        VOCSegmentation(tmp_path)
    root = _voc_tree(tmp_path / "VOCdevkit")
    with pytest.raises(CnnzooError, match=r"trainval\.txt.*\['train', 'val'\]"):
        VOCSegmentation(root, "trainval")
    (root / "JPEGImages" / "2007_000033.jpg").unlink()
    with pytest.raises(CnnzooError, match="2007_000033.jpg"):
        VOCSegmentation(root, "val")


# --------------------------------------------------------------------------------------------
# Mask folders
# --------------------------------------------------------------------------------------------


def test_mask_folder_pairs_by_stem(tmp_path: Path) -> None:
    _rgb(tmp_path / "images" / "a.jpg", 3, 5)
    _rgb(tmp_path / "images" / "b.webp", 3, 5)
    _gray(tmp_path / "masks" / "a.png", np.full((3, 5), 2))
    _palette(tmp_path / "masks" / "b.png", np.array([[0, 1, 2, 255, 1]] * 3))
    ds = MaskFolderDataset(tmp_path / "images", tmp_path / "masks", channels=1, num_classes=3)
    assert [p[0].name for p in ds.pairs] == ["a.jpg", "b.webp"]
    assert ds.class_names == ["0", "1", "2"] and ds.ignore_index == IGNORE_INDEX
    image, mask = ds[1]
    assert image.shape == (1, 3, 5) and image.dtype == torch.uint8
    assert mask.dtype == torch.int64 and mask[0].tolist() == [0, 1, 2, 255, 1]
    ds2 = MaskFolderDataset(tmp_path / "images", tmp_path / "masks")
    assert ds2.class_names == [] and ds2.infer_num_classes() == 3
    assert ds2.class_names == ["0", "1", "2"]


def test_mask_folder_errors(tmp_path: Path) -> None:
    images, masks = tmp_path / "images", tmp_path / "masks"
    images.mkdir()
    masks.mkdir()
    with pytest.raises(CnnzooError, match="empty"):
        MaskFolderDataset(images, masks)
    _rgb(images / "a.png", 3, 5)
    _rgb(images / "b.png", 3, 5)
    _gray(masks / "a.png", np.zeros((3, 5)))
    with pytest.raises(CnnzooError, match=r"b\.png has no mask"):
        MaskFolderDataset(images, masks)
    _gray(masks / "b.png", np.zeros((4, 5)))  # wrong size
    _gray(masks / "c.png", np.zeros((3, 5)))
    with pytest.raises(CnnzooError, match=r"c\.png has no image"):
        MaskFolderDataset(images, masks)
    (masks / "c.png").unlink()
    ds = MaskFolderDataset(images, masks, num_classes=2)
    with pytest.raises(CnnzooError, match=r"b\.png is 5x4 .* 5x3"):
        ds[1]
    _gray(masks / "a.png", np.array([[0, 1, 255, 7, 1]] * 3))
    with pytest.raises(CnnzooError, match=r"a\.png has label 7: expected 0\.\.1"):
        ds[0]
    _rgb(masks / "a.png", 3, 5)
    with pytest.raises(CnnzooError, match=r"a\.png has mode RGB.*convert"):
        ds[0]
    with pytest.raises(CnnzooError, match="does not exist"):
        load_mask(masks / "zzz.png")


# --------------------------------------------------------------------------------------------
# Joint transform
# --------------------------------------------------------------------------------------------


def _position_sample(h: int = 20, w: int = 30) -> tuple[torch.Tensor, torch.Tensor]:
    rows = torch.arange(h).view(h, 1).expand(h, w)
    cols = torch.arange(w).view(1, w).expand(h, w)
    image = torch.stack([rows, cols, torch.full_like(rows, 200)]).to(torch.uint8)
    return image, _label_of(image)


def _label_of(image: torch.Tensor) -> torch.Tensor:
    return (image[0].long() * 7 + image[1].long()) % 21


def test_joint_transform_keeps_alignment() -> None:
    image, mask = _position_sample()
    flipped = set()
    for seed in range(8):
        out_img, out_mask = joint_transform(image, mask, crop=(11, 13), hflip=True, seed=seed)
        assert out_img.dtype == torch.uint8 and out_img.shape == (3, 11, 13)
        assert out_mask.dtype == torch.int64 and out_mask.shape == (11, 13)
        assert not (out_mask == 255).any()
        assert torch.equal(out_mask, _label_of(out_img))
        flipped.add(bool(out_img[1, 0, 0] > out_img[1, 0, -1]))
        again = joint_transform(image, mask, crop=(11, 13), hflip=True, seed=seed)
        assert torch.equal(again[0], out_img) and torch.equal(again[1], out_mask)
    assert flipped == {True, False}


def test_joint_transform_resize_and_pad() -> None:
    image, mask = _position_sample(8, 8)
    img, msk = joint_transform(image, mask, size=(4, 6))
    assert img.shape == (3, 4, 6) and msk.shape == (4, 6)
    assert set(msk.unique().tolist()) <= set(mask.unique().tolist())  # nearest: no new labels
    img, msk = joint_transform(image, mask, crop=12, generator=torch.Generator().manual_seed(0))
    assert img.shape == (3, 12, 12) and msk.shape == (12, 12)
    assert (msk == 255).sum() == 12 * 12 - 8 * 8
    assert torch.equal(msk[:8, :8], mask) and torch.equal(img[:, :8, :8], image)
    assert (img[:, 8:, :] == 0).all()
    with pytest.raises(CnnzooError, match="crop"):
        joint_transform(image, mask, crop=0)
    with pytest.raises(CnnzooError, match="do not match"):
        joint_transform(image, mask[:4])


# --------------------------------------------------------------------------------------------
# Specs
# --------------------------------------------------------------------------------------------


def test_parse_seg_data() -> None:
    assert parse_seg_data("voc:/data/VOCdevkit") == ("voc", "/data/VOCdevkit")
    assert parse_seg_data("Cityscapes:/d/cs") == ("cityscapes", "/d/cs")
    assert parse_seg_data("masks:rel/dir") == ("masks", "rel/dir")
    for bad in ("coco:/x", "/just/a/path", "ade20k:"):
        with pytest.raises(CnnzooError, match="voc:PATH, cityscapes:PATH, masks:PATH"):
            parse_seg_data(bad)
    with pytest.raises(CnnzooError, match="no path"):
        parse_seg_data("voc:")
