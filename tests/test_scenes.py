"""The scenes dataset: deterministic generation, masks, COCO boxes, read-back, overwrite rules."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cnnzoo.data.fashion_mnist import FASHION_MNIST_CLASSES
from cnnzoo.data.scenes import SCENE_CLASSES, generate_scenes, scenes_dataset
from cnnzoo.errors import CnnzooError

SETTINGS = dict(n_train=6, n_test=3, size=64, max_items=4, source="fashion-mnist-mini")


@pytest.fixture(scope="module")
def scenes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_scenes(tmp_path_factory.mktemp("scenes") / "s", seed=0, **SETTINGS)


def _files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def test_layout_and_classes(scenes: Path) -> None:
    assert SCENE_CLASSES[0] == "background" and len(SCENE_CLASSES) == 11
    for split, n in (("train", 6), ("test", 3)):
        assert len(list((scenes / "images" / split).glob("*.png"))) == n
        assert len(list((scenes / "masks" / split).glob("*.png"))) == n
        assert (scenes / "annotations" / f"instances_{split}.json").is_file()
    meta = json.loads((scenes / "meta.json").read_text())
    assert meta["settings"]["seed"] == 0 and meta["settings"]["size"] == 64
    assert (scenes / "README.txt").is_file()


def test_deterministic_from_seed(scenes: Path, tmp_path: Path) -> None:
    again = generate_scenes(tmp_path / "again", seed=0, **SETTINGS)
    other = generate_scenes(tmp_path / "other", seed=1, **SETTINGS)
    name = Path("images/train/00000.png")
    mask = Path("masks/train/00000.png")
    assert (again / name).read_bytes() == (scenes / name).read_bytes()
    assert (again / mask).read_bytes() == (scenes / mask).read_bytes()
    assert _files(again) == _files(scenes)
    assert (other / name).read_bytes() != (scenes / name).read_bytes()


def test_masks_have_valid_labels_and_items(scenes: Path) -> None:
    for split in ("train", "test"):
        for path in sorted((scenes / "masks" / split).glob("*.png")):
            with Image.open(path) as im:
                assert im.mode == "L" and im.size == (64, 64)
                mask = np.asarray(im)
            assert mask.max() <= 10
            assert (mask > 0).any(), f"{path} has no item pixel"
            assert (mask == 0).any(), f"{path} has no background"
        with Image.open(scenes / "images" / split / "00000.png") as im:
            assert im.mode == "RGB" and im.size == (64, 64)


def test_coco_boxes_match_masks(scenes: Path) -> None:
    for split in ("train", "test"):
        coco = json.loads((scenes / "annotations" / f"instances_{split}.json").read_text())
        assert [c["name"] for c in coco["categories"]] == list(FASHION_MNIST_CLASSES)
        assert [c["id"] for c in coco["categories"]] == list(range(1, 11))
        assert len({a["id"] for a in coco["annotations"]}) == len(coco["annotations"])
        by_image: dict[int, list[dict]] = {}
        for ann in coco["annotations"]:
            by_image.setdefault(ann["image_id"], []).append(ann)
        assert {img["id"] for img in coco["images"]} == set(by_image)
        for img in coco["images"]:
            mask = np.asarray(Image.open(scenes / "masks" / split / img["file_name"]))
            labelled = set(np.unique(mask[mask > 0]).tolist())
            boxed = set()
            for ann in by_image[img["id"]]:
                x, y, w, h = ann["bbox"]
                assert ann["iscrowd"] == 0 and 1 <= ann["category_id"] <= 10
                assert w > 0 and h > 0 and x >= 0 and y >= 0
                assert x + w <= img["width"] and y + h <= img["height"]
                region = mask[y : y + h, x : x + w]
                cat = ann["category_id"]
                assert 0 < ann["area"] <= int((region == cat).sum())
                # the box is tight: each of its edges touches a pixel of its category
                assert (region[0] == cat).any() and (region[-1] == cat).any()
                assert (region[:, 0] == cat).any() and (region[:, -1] == cat).any()
                boxed.add(cat)
            assert boxed == labelled


def test_read_back_through_dataset(scenes: Path) -> None:
    ds = scenes_dataset(scenes, "train")
    assert len(ds) == 6 and ds.num_classes == 11 and ds.class_names == SCENE_CLASSES
    image, mask = ds[2]
    assert image.dtype == torch.uint8 and image.shape == (3, 64, 64)
    assert mask.dtype == torch.int64 and mask.shape == (64, 64)
    rgb = np.asarray(Image.open(scenes / "images" / "train" / "00002.png"))
    labels = np.asarray(Image.open(scenes / "masks" / "train" / "00002.png"))
    assert torch.equal(image, torch.from_numpy(rgb.copy()).permute(2, 0, 1))
    assert torch.equal(mask, torch.from_numpy(labels.astype(np.int64)))
    assert len(scenes_dataset(scenes, "test")) == 3
    with pytest.raises(CnnzooError, match="split"):
        scenes_dataset(scenes, "val")


def test_idempotent_and_refuses_overwrite(scenes: Path, tmp_path: Path) -> None:
    before = _files(scenes)
    stamps = {p: p.stat().st_mtime_ns for p in scenes.rglob("*") if p.is_file()}
    assert generate_scenes(scenes, seed=0, **SETTINGS) == scenes
    assert _files(scenes) == before
    assert {p: p.stat().st_mtime_ns for p in scenes.rglob("*") if p.is_file()} == stamps
    with pytest.raises(CnnzooError, match="not empty"):
        generate_scenes(scenes, seed=1, **SETTINGS)
    assert _files(scenes) == before
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(CnnzooError, match="not empty"):
        generate_scenes(other, seed=0, **SETTINGS)
    assert (other / "notes.txt").read_text() == "mine"


def test_rejects_bad_settings(tmp_path: Path) -> None:
    with pytest.raises(CnnzooError, match="source"):
        generate_scenes(tmp_path / "x", n_train=1, n_test=0, source="mnist")
    with pytest.raises(CnnzooError, match="max_items"):
        generate_scenes(tmp_path / "y", n_train=1, n_test=0, max_items=0)


def _fake_fashion(folder: Path) -> Path:
    """Four small Fashion-MNIST files: every train image is a bright square of its class."""
    from cnnzoo.data.fashion_mnist import SPLIT_FILES, write_idx

    folder.mkdir(parents=True)
    for split, n in (("train", 30), ("test", 10)):
        images = np.zeros((n, 28, 28), np.uint8)
        images[:, 6:22, 6:22] = 250
        images_stem, labels_stem = SPLIT_FILES[split]
        write_idx(folder / images_stem, images)
        write_idx(folder / labels_stem, (np.arange(n) % 10).astype(np.uint8))
    return folder


def test_full_source_takes_items_from_the_given_fashion_mnist(tmp_path: Path) -> None:
    fake = _fake_fashion(tmp_path / "fm")
    root = generate_scenes(tmp_path / "full", 4, 0, 48, 3, 0, "fashion-mnist", fake)
    meta = json.loads((root / "meta.json").read_text())
    assert meta["settings"]["source"] == "fashion-mnist" and meta["settings"]["n_train"] == 4
    coco = json.loads((root / "annotations" / "instances_train.json").read_text())
    assert coco["annotations"] and all(a["source_index"] < 30 for a in coco["annotations"])
    for i in range(4):
        labels = np.asarray(Image.open(root / "masks" / "train" / f"{i:05d}.png"))
        assert labels.any() and set(np.unique(labels)) <= set(range(11))
    with pytest.raises(CnnzooError, match="does not hold Fashion-MNIST"):
        generate_scenes(tmp_path / "x", 2, 0, 48, 3, 0, "fashion-mnist", tmp_path / "nothing")


def test_cli_data_scenes_and_training_data_from_its_folder(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from cnnzoo.cli import app
    from cnnzoo.data.seg_datamodule import SegmentationData

    out = tmp_path / "mine"
    args = ["data", "scenes", "--out", str(out), "--train", "5", "--test", "2", "--size", "48"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "5 train and 2 test scenes" in result.output and f"scenes:{out}" in result.output
    assert len(list((out / "images" / "train").glob("*.png"))) == 5
    expected = generate_scenes(tmp_path / "same", 5, 2, 48, 6, 0)
    assert _files(out) == _files(expected)
    before = _files(out)
    result = CliRunner().invoke(app, [*args[:5], "6", *args[6:]])  # other settings, same folder
    assert result.exit_code == 2 and "not empty" in result.output
    assert _files(out) == before
    data = SegmentationData(f"scenes:{out}", val_fraction=0.2, seed=0)
    assert data.spec.class_names == SCENE_CLASSES
    assert len(data.splits["train"]) + len(data.splits["val"]) == 5
    assert len(data.splits["test"]) == 2
    image, mask = data.splits["test"][1]
    assert image.shape == (3, 48, 48) and mask.shape == (48, 48)
    (tmp_path / "plain").mkdir()
    with pytest.raises(CnnzooError, match=r"plain has no meta.json.*masks:"):
        SegmentationData(f"scenes:{tmp_path / 'plain'}")
