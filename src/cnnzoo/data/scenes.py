"""*Scenes*: synthetic multi-object images built from real Fashion-MNIST items.

Each scene is an RGB canvas (``size x size``) with a textured, noisy gray or coloured
background on which 1..``max_items`` Fashion-MNIST items are pasted at random positions and
scales (later items occlude earlier ones). An item's pixels are those of the resized 28x28
image brighter than :data:`ITEM_THRESHOLD`; they are tinted with a random colour.

The generator writes, once, in ordinary formats::

    out_dir/images/{split}/{id:05d}.png          RGB scene
    out_dir/masks/{split}/{id:05d}.png           mode "L" label map (0 background, 1..10 items)
    out_dir/annotations/instances_{split}.json   COCO boxes of the visible part of each item
    out_dir/classes.txt                          class names, one per line (label = line number)
    out_dir/meta.json                            seed and settings (written last)
    out_dir/README.txt                           a human-readable summary

Labels are the Fashion-MNIST class + 1, so a segmentation model sees 11 classes
(:data:`SCENE_CLASSES`); COCO ``category_id`` uses the same numbering (1..10). Train scenes
use items from the Fashion-MNIST train split, test scenes items from the test split.
Everything is a deterministic function of the seed and settings.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from cnnzoo.data.fashion_mnist import (
    FASHION_MNIST_CLASSES,
    load_fashion_mnist,
    load_fashion_mnist_mini,
)
from cnnzoo.data.segmentation import JointTransform, MaskFolderDataset
from cnnzoo.errors import CnnzooError
from cnnzoo.files import atomic_write_bytes, atomic_write_text

SCENE_CLASSES: list[str] = ["background", *FASHION_MNIST_CLASSES]
"""Segmentation class names: index 0 is background, 1..10 the Fashion-MNIST classes."""

SCENE_SPLITS: tuple[str, ...] = ("train", "test")
SCENE_SOURCES: tuple[str, ...] = ("fashion-mnist-mini", "fashion-mnist")
ITEM_THRESHOLD = 30
"""A resized item pixel belongs to the item when its intensity is above this value."""
ITEM_SCALE = (20, 48)
"""Smallest and largest pasted item side in pixels (clipped to the canvas size)."""
FORMAT_VERSION = 1
META_FILE = "meta.json"


def _settings(
    n_train: int, n_test: int, size: int, max_items: int, seed: int, source: str
) -> dict[str, Any]:
    for name, value, low in (
        ("n_train", n_train, 0),
        ("n_test", n_test, 0),
        ("size", size, 8),
        ("max_items", max_items, 1),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise CnnzooError(f"{name}={value!r} is invalid: expected an int >= {low}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise CnnzooError(f"seed={seed!r} is invalid: expected an int >= 0")
    if source not in SCENE_SOURCES:
        raise CnnzooError(
            f"scene source {source!r} is unknown: expected one of {', '.join(SCENE_SOURCES)}"
        )
    return {
        "format_version": FORMAT_VERSION,
        "n_train": n_train,
        "n_test": n_test,
        "size": size,
        "max_items": max_items,
        "seed": seed,
        "source": source,
        "item_threshold": ITEM_THRESHOLD,
        "item_scale": list(ITEM_SCALE),
    }


def _png_bytes(array: np.ndarray, mode: str) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array, mode=mode).save(buffer, format="PNG")
    return buffer.getvalue()


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A gray or coloured canvas with a smooth gradient, stripes and pixel noise (uint8 HxWx3)."""
    gray = rng.random() < 0.5
    base = np.full(3, rng.uniform(40, 215)) if gray else rng.uniform(30, 225, size=3)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64) / size
    angle = rng.uniform(0, 2 * np.pi)
    gradient = (np.cos(angle) * xx + np.sin(angle) * yy) * rng.uniform(-40, 40)
    freq = rng.uniform(2, 8)
    phase = rng.uniform(0, 2 * np.pi)
    stripes = np.sin(2 * np.pi * freq * (xx * np.cos(angle) - yy * np.sin(angle)) + phase)
    texture = gradient + stripes * rng.uniform(0, 20)
    noise = rng.normal(0.0, rng.uniform(3, 15), size=(size, size, 3))
    canvas = base[None, None, :] + texture[:, :, None] + noise
    return np.clip(np.rint(canvas), 0, 255).astype(np.uint8)


def _scene(
    rng: np.random.Generator, images: np.ndarray, labels: np.ndarray, size: int, max_items: int
) -> tuple[np.ndarray, np.ndarray, list[dict[str, Any]]]:
    """One scene: ``(rgb HxWx3 uint8, label map HxW uint8, visible instances)``."""
    canvas = _background(rng, size)
    label_map = np.zeros((size, size), dtype=np.uint8)
    instance_map = np.zeros((size, size), dtype=np.int32)
    low, high = min(ITEM_SCALE[0], size), min(ITEM_SCALE[1], size)
    n_items = int(rng.integers(1, max_items + 1))
    placed: list[tuple[int, int]] = []  # (source index, class) per instance number - 1
    for _ in range(n_items):
        while True:  # an item whose resized image keeps at least one pixel above threshold
            index = int(rng.integers(len(images)))
            side = int(rng.integers(low, high + 1))
            small = Image.fromarray(images[index]).resize((side, side), Image.BILINEAR)
            item = np.asarray(small)
            pixels = item > ITEM_THRESHOLD
            if pixels.any():
                break
        top = int(rng.integers(0, size - side + 1))
        left = int(rng.integers(0, size - side + 1))
        tint = rng.uniform(0, 255, size=3)
        shade = 0.35 + 0.65 * item.astype(np.float64) / 255.0
        colour = np.clip(np.rint(shade[:, :, None] * tint[None, None, :]), 0, 255)
        window = (slice(top, top + side), slice(left, left + side))
        canvas[window][pixels] = colour[pixels].astype(np.uint8)
        label_map[window][pixels] = int(labels[index]) + 1
        placed.append((index, int(labels[index])))
        instance_map[window][pixels] = len(placed)
    instances = []
    for number, (index, label) in enumerate(placed, start=1):
        ys, xs = np.nonzero(instance_map == number)
        if len(ys) == 0:  # fully occluded by later items
            continue
        x0, y0, x1, y1 = int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())
        instances.append(
            {
                "bbox": [x0, y0, x1 - x0 + 1, y1 - y0 + 1],
                "category_id": label + 1,
                "area": len(ys),
                "source_index": index,
            }
        )
    return canvas, label_map, instances


def _load_items(
    source: str, split: str, data_dir: str | os.PathLike[str] | None
) -> tuple[np.ndarray, np.ndarray]:
    if source == "fashion-mnist-mini":
        images, labels = load_fashion_mnist_mini(split)
    else:
        images, labels = load_fashion_mnist(split, data_dir=data_dir)
    return images[:, 0].numpy(), labels.numpy()


def _expected_files(root: Path, settings: dict[str, Any]) -> list[Path]:
    files = [root / META_FILE, root / "README.txt", root / "classes.txt"]
    for split in SCENE_SPLITS:
        files.append(root / "annotations" / f"instances_{split}.json")
        for i in range(settings[f"n_{split}"]):
            files += [
                root / "images" / split / f"{i:05d}.png",
                root / "masks" / split / f"{i:05d}.png",
            ]
    return files


def _existing_matches(root: Path, settings: dict[str, Any]) -> bool:
    try:
        meta = json.loads((root / META_FILE).read_text())
    except (OSError, ValueError, RecursionError):
        return False
    if not isinstance(meta, dict) or meta.get("settings") != settings:
        return False
    return all(path.is_file() for path in _expected_files(root, settings))


def generate_scenes(
    out_dir: str | os.PathLike[str],
    n_train: int = 1000,
    n_test: int = 200,
    size: int = 96,
    max_items: int = 6,
    seed: int = 0,
    source: str = "fashion-mnist-mini",
    data_dir: str | os.PathLike[str] | None = None,
) -> Path:
    """Generate the *scenes* dataset into ``out_dir`` (see the module docstring for the layout).

    Args:
        out_dir: destination folder; created if missing, must be empty otherwise.
        n_train: number of train scenes (items from the Fashion-MNIST train split).
        n_test: number of test scenes (items from the Fashion-MNIST test split).
        size: canvas side in pixels (>= 8).
        max_items: the most items per scene (each scene has 1..max_items).
        seed: seed of the numpy generators; the output is a deterministic function of it.
        source: ``"fashion-mnist-mini"`` (bundled subset) or ``"fashion-mnist"`` (full set).
        data_dir: where the full set lives (``source="fashion-mnist"`` only; see
            :func:`~cnnzoo.data.fashion_mnist.load_fashion_mnist`).

    Returns:
        ``out_dir`` as a Path. If it already holds scenes generated with the same settings it is
        returned unchanged.

    Raises:
        CnnzooError: for invalid settings, an ``out_dir`` that is a file or a non-empty folder
            not holding scenes of the same settings, or Fashion-MNIST that cannot be loaded.
    """
    settings = _settings(n_train, n_test, size, max_items, seed, source)
    root = Path(out_dir).expanduser()
    if root.exists():
        if not root.is_dir():
            raise CnnzooError(f"scenes output {root} is a file: expected a folder or a new path")
        if any(root.iterdir()):
            if _existing_matches(root, settings):
                return root
            raise CnnzooError(
                f"scenes output folder {root} is not empty and does not hold scenes generated "
                "with the same settings: choose a new folder or delete it first"
            )
    root.mkdir(parents=True, exist_ok=True)
    categories = [
        {"id": c + 1, "name": name, "supercategory": "clothing"}
        for c, name in enumerate(FASHION_MNIST_CLASSES)
    ]
    for split_index, split in enumerate(SCENE_SPLITS):
        count = settings[f"n_{split}"]
        images, labels = _load_items(source, split, data_dir) if count else (None, None)
        rng = np.random.default_rng([seed, split_index])
        coco_images: list[dict[str, Any]] = []
        annotations: list[dict[str, Any]] = []
        for i in range(count):
            assert images is not None and labels is not None
            rgb, label_map, instances = _scene(rng, images, labels, size, max_items)
            name = f"{i:05d}.png"
            atomic_write_bytes(root / "images" / split / name, _png_bytes(rgb, "RGB"))
            atomic_write_bytes(root / "masks" / split / name, _png_bytes(label_map, "L"))
            coco_images.append({"id": i, "file_name": name, "width": size, "height": size})
            for inst in instances:
                annotations.append(
                    {"id": len(annotations) + 1, "image_id": i, "iscrowd": 0, **inst}
                )
        (root / "images" / split).mkdir(parents=True, exist_ok=True)
        (root / "masks" / split).mkdir(parents=True, exist_ok=True)
        coco = {
            "info": {"description": f"cnnzoo scenes ({split})", "version": FORMAT_VERSION},
            "images": coco_images,
            "annotations": annotations,
            "categories": categories,
        }
        atomic_write_text(
            root / "annotations" / f"instances_{split}.json", json.dumps(coco, indent=1) + "\n"
        )
    readme = (
        "cnnzoo scenes: Fashion-MNIST items pasted on textured backgrounds.\n\n"
        "images/{split}/NNNNN.png          RGB scenes\n"
        "masks/{split}/NNNNN.png           label maps (mode L): 0 background, 1..10 classes\n"
        "annotations/instances_{split}.json COCO boxes [x, y, w, h] of visible item pixels\n\n"
        f"classes: {', '.join(f'{i}={n}' for i, n in enumerate(SCENE_CLASSES))}\n"
        f"settings: {json.dumps(settings, sort_keys=True)}\n"
    )
    atomic_write_text(root / "README.txt", readme)
    atomic_write_text(root / "classes.txt", "\n".join(SCENE_CLASSES) + "\n")
    meta = {"dataset": "cnnzoo-scenes", "classes": SCENE_CLASSES, "settings": settings}
    atomic_write_text(root / META_FILE, json.dumps(meta, indent=1, sort_keys=True) + "\n")
    return root


def scenes_dataset(
    root: str | os.PathLike[str], split: str = "train", transform: JointTransform | None = None
) -> MaskFolderDataset:
    """Read a generated scenes split back as a segmentation dataset.

    Args:
        root: the folder written by :func:`generate_scenes`.
        split: ``"train"`` or ``"test"``.
        transform: optional joint transform of ``(image, mask)``.

    Returns:
        A :class:`~cnnzoo.data.segmentation.MaskFolderDataset` of ``(uint8 (3, H, W),
        int64 (H, W))`` items with 11 classes named :data:`SCENE_CLASSES`.

    Raises:
        CnnzooError: for an unknown split or a folder without that split's images and masks.
    """
    if split not in SCENE_SPLITS:
        raise CnnzooError(f"unknown scenes split {split!r}: expected 'train' or 'test'")
    path = Path(root).expanduser()
    return MaskFolderDataset(
        path / "images" / split,
        path / "masks" / split,
        channels=3,
        num_classes=len(SCENE_CLASSES),
        class_names=SCENE_CLASSES,
        transform=transform,
    )
