"""Detection data for Lightning: any source (COCO JSON, Pascal VOC, YOLO, the synthetic scenes)
becomes batches of uint8 images (padded to a common size) and lists of targets, resized and
flipped together with their boxes by :func:`cnnzoo.data.detection.detection_transform`, and
normalised on the device.

``--data`` names the source (see :func:`cnnzoo.data.det_sources.parse_det_data`):

- ``scenes`` or ``scenes:PATH``: the synthetic scenes (``train`` / ``test``; the validation
  split is held out of ``train``);
- ``coco:ANN.json``: one COCO ``instances`` file is one split; if its name contains ``train``,
  the files with ``val`` and ``test`` in its place (same folder) are the other splits when they
  exist (``instances_train.json`` -> ``instances_val.json``, ``instances_test.json``);
- ``voc:PATH``: Pascal VOC image sets ``train``, ``val`` and ``test`` (VOC2007) when listed;
  ``difficult`` objects are kept and marked;
- ``yolo:DATA.yaml``: the yaml's ``train``, ``val`` and ``test`` entries.

Without a validation split, ``val_fraction`` of the training images are held out (seeded);
without a test split, the validation images are the test images.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import Dataset

from cnnzoo.data.datamodule import IMAGENET_MEAN, IMAGENET_STD, DatasetSpec
from cnnzoo.data.det_augment import MosaicAugment
from cnnzoo.data.det_sources import open_det_dataset, parse_det_data
from cnnzoo.data.detection import (
    DetectionDataset,
    DetSample,
    DetTarget,
    DetTransform,
    detection_collate,
    detection_transform,
)
from cnnzoo.data.splits import SplitDataModule
from cnnzoo.data.transforms import normalize_batch
from cnnzoo.errors import CnnzooError

SPLITS = ("train", "val", "test")
CACHE_LIMIT_BYTES = 2 * 1024**3
"""Decoded images are kept in memory when the whole split fits in this."""


class DetView(Dataset[DetSample]):
    """Items ``indices`` of a detection dataset, through ``transform``, optionally decoded once.

    Args:
        base: a dataset returning untransformed ``(image, target)`` samples.
        indices: which of its items to serve (default: all).
        transform: function of ``(image, target)`` applied at every access (random ones
            differ per epoch).
        cache: keep the decoded, untransformed samples in memory.
    """

    def __init__(
        self,
        base: DetectionDataset,
        indices: Sequence[int] | None = None,
        transform: DetTransform | None = None,
        cache: bool = False,
    ) -> None:
        self.base = base
        self.indices = list(range(len(base))) if indices is None else list(indices)
        self.transform = transform
        self.cache: dict[int, DetSample] | None = {} if cache else None

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> DetSample:
        key = self.indices[index]
        if self.cache is not None and key in self.cache:
            image, target = self.cache[key]
        else:
            image, target = self.base[key]
            if self.cache is not None:
                self.cache[key] = (image, target)
        target = {k: v.clone() if isinstance(v, Tensor) else v for k, v in target.items()}
        if self.transform is not None:
            image, target = self.transform(image, target)
        return image, target


def _coco_sibling(path: Path | None, split: str, folder: bool = False) -> Path | None:
    """``instances_train.json`` -> ``instances_{split}.json`` next to it (or, with ``folder``,
    the folder ``.../train2017`` -> ``.../{split}2017``), if it exists."""
    if path is None or "train" not in path.name:
        return None
    other = path.with_name(path.name.replace("train", split))
    return other if (other.is_dir() if folder else other.is_file()) else None


class DetectionData(SplitDataModule):
    """Train/val/test loaders for a detection dataset named by ``data``.

    Batches are ``(images uint8 (N, C, H, W), [target, ...])`` from the loaders and
    ``(images float (N, C, H, W) normalised, [target, ...])`` after the transfer to the device;
    a target is ``{"boxes": float32 (K, 4) xyxy pixels of the (resized) image, "labels": int64
    (K,)}`` (VOC adds ``"difficult"``).

    Args:
        data: ``"scenes"``, ``"scenes:PATH"``, ``"coco:ANN.json"``, ``"voc:PATH"`` or
            ``"yolo:DATA.yaml"``.
        data_dir: where a bare ``scenes`` is generated (default ``$CNNZOO_DATA`` or
            ``~/.cache/cnnzoo``).
        batch_size: global batch size (split across DDP processes).
        input_size: resize every image and its boxes to ``(height, width)`` (aspect ratio not
            kept); None keeps each image's size (batches are padded at the bottom/right).
        augment: random horizontal flip (with the boxes) in training.
        val_fraction: share of the training set held out for validation when the source has
            no validation split (0: none).
        subset: keep only the first N training images (quick runs, tests).
        seed: seed of the split and the shuffling.
        num_workers: DataLoader worker processes (decoding, transforms).
        channels: image channels (3, or 1 for gray data).
        cache: keep decoded images in memory (default: when a split fits in 2 GiB).
        images_dir: ``coco:`` only: the folder the train JSON's ``file_name`` entries are
            relative to (default: found next to the JSON). The val/test JSONs use the same
            folder with ``train`` in its name replaced by the split, when that exists.
        batch_augment: applied to the uint8 training batches on the device before they are
            normalised (the modern recipe's :class:`~cnnzoo.data.det_augment.MosaicAugment`),
            or None.

    Attributes:
        spec: a :class:`~cnnzoo.data.datamodule.DatasetSpec` (class names, channels, the input
            size, normalisation, split sizes).
        splits: ``{"train": DetView, "val": ..., "test": ...}`` (the splits that exist).
        eval_split: the split ``test_dataloader`` serves.

    Raises:
        CnnzooError: for an unknown ``data`` form (listing the valid ones), missing files, and
            bad options.
    """

    collate_fn = staticmethod(detection_collate)

    def __init__(
        self,
        data: str,
        data_dir: str | None = None,
        batch_size: int = 16,
        input_size: Sequence[int] | int | None = None,
        augment: bool = True,
        val_fraction: float = 0.1,
        subset: int | None = None,
        seed: int = 0,
        num_workers: int = 0,
        channels: int = 3,
        cache: bool | None = None,
        images_dir: str | None = None,
        batch_augment: MosaicAugment | None = None,
    ) -> None:
        super().__init__()
        self.batch_augment = batch_augment
        self.data = data
        self.images_dir = images_dir
        self.data_dir = data_dir
        self.batch_size = batch_size
        self.input_size = _input_size(input_size)
        self.augment = augment
        self.val_fraction = val_fraction
        self.subset = subset
        self.seed = seed
        self.num_workers = num_workers
        self.channels = channels
        self.cache = cache
        self.eval_split = "test"
        self.splits: dict[str, DetView] = {}
        self.spec = self._load()

    # -- sources -----------------------------------------------------------------------
    def _load(self) -> DatasetSpec:
        bare = ":" not in self.data and self.data.strip().lower() != "scenes"
        if bare and Path(self.data).expanduser().exists():
            raise CnnzooError(
                f"--data {self.data!r} is a path: for detection say which format it is "
                "(coco:ANN.json, voc:PATH, yolo:DATA.yaml or scenes:PATH)"
            )
        bases = self._open_bases()
        self._make_splits(bases)
        size = self.input_size or _first_size(self.splits["train"])
        mean, std = (IMAGENET_MEAN, IMAGENET_STD) if self.channels == 3 else ((0.5,), (0.5,))
        return DatasetSpec(
            name=self.data,
            class_names=list(bases["train"].class_names),
            in_channels=self.channels,
            image_size=size,
            mean=mean,
            std=std,
            sizes={k: len(v) for k, v in self.splits.items()},
        )

    def _open(self, split: str) -> DetectionDataset:
        return open_det_dataset(self.data, split, self.channels, data_dir=self.data_dir)

    def _open_bases(self) -> dict[str, DetectionDataset]:
        """Open the splits the source has (``train`` always; ``val``/``test`` if present)."""
        scheme, path = parse_det_data(self.data)
        bases: dict[str, DetectionDataset] = {}
        if scheme == "scenes":
            bases["train"] = self._open("train")
            bases["test"] = self._open("test")
        elif scheme == "coco":
            from cnnzoo.data.formats.coco import COCODetection

            ann = Path(path)
            images = Path(self.images_dir).expanduser() if self.images_dir else None
            bases["train"] = COCODetection(ann, images, channels=self.channels)
            for split in ("val", "test"):
                other = _coco_sibling(ann, split)
                if other is not None:
                    bases[split] = COCODetection(
                        other, _coco_sibling(images, split, folder=True), channels=self.channels
                    )
        elif scheme == "voc":
            from cnnzoo.data.formats.voc import VOCDetection

            bases["train"] = VOCDetection(path, "train", channels=self.channels)
            lists = bases["train"].root / "ImageSets" / "Main"  # type: ignore[attr-defined]
            for split in ("val", "test"):
                if (lists / f"{split}.txt").is_file():
                    bases[split] = VOCDetection(path, split, channels=self.channels)
        else:
            from cnnzoo.data.formats.yolo import read_data_yaml

            entries = read_data_yaml(Path(path))
            bases["train"] = self._open("train")
            for split in ("val", "test"):
                if entries.get(split):
                    bases[split] = self._open(split)
        names = bases["train"].class_names
        for split, base in bases.items():
            if base.class_names != names:
                raise CnnzooError(
                    f"detection data {self.data!r}: the {split} split's classes "
                    f"{base.class_names} differ from the train split's {names}"
                )
        return bases

    def _make_splits(self, bases: dict[str, DetectionDataset]) -> None:
        train = bases["train"]
        indices = list(range(len(train)))
        val_base, val_indices = bases.get("val"), None
        if val_base is None and self.val_fraction > 0:
            if not 0 < self.val_fraction < 1:
                raise CnnzooError(f"--val-fraction must be in [0, 1), got {self.val_fraction}")
            if len(indices) < 2:
                raise CnnzooError(
                    f"detection data {self.data!r} has {len(indices)} training image(s): too "
                    "few to hold out a validation split (set val_fraction=0)"
                )
            order = torch.randperm(len(indices), generator=torch.Generator().manual_seed(self.seed))
            n_val = max(1, round(self.val_fraction * len(indices)))
            val_indices = sorted(order[:n_val].tolist())
            indices = sorted(order[n_val:].tolist())
            val_base = train
        if self.subset:
            indices = indices[: self.subset]
        size = self.input_size
        train_tf = functools.partial(detection_transform, size=size, hflip=self.augment)
        eval_tf = functools.partial(detection_transform, size=size)
        self.splits["train"] = DetView(train, indices, train_tf, self._cache(train))
        if val_base is not None:
            self.splits["val"] = DetView(val_base, val_indices, eval_tf, self._cache(val_base))
        test = bases.get("test", val_base)
        if test is not None:
            self.splits["test"] = DetView(
                test, val_indices if test is train else None, eval_tf, self._cache(test)
            )

    def _cache(self, dataset: DetectionDataset) -> bool:
        if self.cache is not None:
            return self.cache
        records = getattr(dataset, "records", None)
        if not records:
            return False
        pixels = sum(r.width * r.height for r in records)
        return pixels * self.channels < CACHE_LIMIT_BYTES

    # -- batches on the device ----------------------------------------------------------
    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        x, targets = batch
        targets = move_targets(targets, x.device)
        trainer = getattr(self, "trainer", None)
        if self.batch_augment is not None and trainer is not None and trainer.training:
            x, targets = self.batch_augment(x, targets)
        return normalize_batch(x, self.spec.mean, self.spec.std), targets


def training_box_sizes(data: DetectionData) -> torch.Tensor:
    """Return the ``(N, 2)`` widths and heights (pixels of the model's input) of every
    non-empty training box.

    Raises:
        CnnzooError: if the training split has no boxes.
    """
    view = data.splits["train"]
    sizes = []
    for index in view.indices:
        boxes = view.base.target(index)["boxes"]
        if data.input_size is not None:  # boxes as the model sees them after the resize
            rec = view.base.records[index]
            h, w = data.input_size
            boxes = boxes * torch.tensor([w / rec.width, h / rec.height] * 2)
        sizes.append(boxes[:, 2:] - boxes[:, :2])
    wh = torch.cat(sizes) if sizes else torch.zeros(0, 2)
    wh = wh[(wh > 0).all(1)]
    if len(wh) == 0:
        raise CnnzooError(f"detection data {data.data!r} has no boxes in its training split")
    return wh


def move_targets(targets: Sequence[DetTarget], device: torch.device) -> list[DetTarget]:
    """Return the targets with every tensor on ``device``."""
    return [
        {k: v.to(device) if isinstance(v, Tensor) else v for k, v in t.items()} for t in targets
    ]


def _input_size(value: Sequence[int] | int | None) -> tuple[int, int] | None:
    if value is None:
        return None
    pair = [value, value] if isinstance(value, int) else list(value)
    if len(pair) == 1:
        pair = pair * 2
    if len(pair) != 2 or not all(
        isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in pair
    ):
        raise CnnzooError(
            f"--input-size {value!r} is invalid: expected one or two positive ints (H [W])"
        )
    return pair[0], pair[1]


def _first_size(view: DetView) -> tuple[int, int]:
    if len(view) == 0:
        raise CnnzooError("the training split is empty")
    records = getattr(view.base, "records", None)
    if records:
        rec = records[view.indices[0]]
        return int(rec.height), int(rec.width)
    image, _ = view.base[view.indices[0]]
    return int(image.shape[-2]), int(image.shape[-1])


__all__ = ["DetView", "DetectionData", "move_targets", "training_box_sizes"]
