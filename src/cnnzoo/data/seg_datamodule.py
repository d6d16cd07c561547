"""Segmentation data for Lightning: any source (scenes, VOC, Cityscapes, your own image and
mask folders) becomes batches of uint8 images and int64 masks, aligned through the joint
transforms of :mod:`cnnzoo.data.segmentation`, padded to a common size, and normalised on the
device.

``--data`` names the source:

- ``scenes``: the synthetic scenes (:mod:`cnnzoo.data.scenes`), generated once into the data
  cache and read back as image and mask folders;
- ``voc:PATH``: Pascal VOC 2012 (``train`` list for training, ``val`` for validation and test);
- ``cityscapes:PATH``: Cityscapes (``train`` / ``val``; its ``test`` masks are not public);
- ``masks:PATH``: ``PATH/images`` + ``PATH/masks``, either with ``train/``, ``val/``, ``test/``
  sub-folders or as one pool split by ``val_fraction``. Class names come from
  ``PATH/classes.txt`` (one per line) if present, else from the largest label in the masks.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import Dataset

from cnnzoo.data.datamodule import IMAGENET_MEAN, IMAGENET_STD, DatasetSpec
from cnnzoo.data.segmentation import (
    IGNORE_INDEX,
    SEG_DATA_SCHEMES,
    JointTransform,
    MaskFolderDataset,
    SegmentationDataset,
    SegSample,
    joint_transform,
    parse_seg_data,
)
from cnnzoo.data.splits import SplitDataModule
from cnnzoo.data.transforms import normalize_batch
from cnnzoo.documents import read_text
from cnnzoo.errors import CnnzooError

SCENES = "scenes"
SCENES_DEFAULTS: dict[str, Any] = {"n_train": 2000, "n_test": 400, "size": 96, "max_items": 6}
"""Settings of the ``scenes`` dataset that ``--data scenes`` generates (seed 0)."""
SCALE_RANGE = (0.75, 1.25)
"""Random rescaling of training images before the crop back to the input size."""
CACHE_LIMIT_BYTES = 2 * 1024**3
"""Decoded images and masks are kept in memory when the whole split fits in this."""


def seg_data_help() -> str:
    """Return the accepted ``--data`` forms, for messages and help texts."""
    return ", ".join([SCENES, *(f"{s}:PATH" for s in SEG_DATA_SCHEMES)])


def scenes_root(data_dir: str | os.PathLike[str] | None = None) -> Path:
    """Return where ``--data scenes`` lives: ``data_dir``, ``$CNNZOO_DATA`` or the user cache.

    The folder name carries the settings, so other settings never collide with it.
    """
    base = data_dir or os.environ.get("CNNZOO_DATA") or "~/.cache/cnnzoo"
    s = SCENES_DEFAULTS
    name = f"scenes-{s['size']}px-{s['n_train']}-{s['n_test']}-seed0"
    return Path(base).expanduser() / name


def default_scenes(data_dir: str | os.PathLike[str] | None = None) -> Path:
    """Return the folder of ``--data scenes`` (:func:`scenes_root`), generating it first if
    needed (seed 0, :data:`SCENES_DEFAULTS`).

    Raises:
        CnnzooError: if the folder holds something else or cannot be written.
    """
    from cnnzoo.data.scenes import generate_scenes

    return generate_scenes(scenes_root(data_dir), seed=0, **SCENES_DEFAULTS)


def _scenes_folder(path: Path) -> Path:
    """Return ``path`` if it holds generated scenes (their ``meta.json``).

    Raises:
        CnnzooError: naming the folder otherwise.
    """
    from cnnzoo.data.scenes import META_FILE

    path = path.expanduser()
    if not (path / META_FILE).is_file():
        raise CnnzooError(
            f"scenes folder {path} has no {META_FILE}: generate one with `cnnzoo data scenes "
            f"--out {path}`, or read your own images and masks with masks:{path}"
        )
    return path


class PairView(Dataset[SegSample]):
    """Items ``indices`` of a segmentation dataset, through ``transform``, decoded once.

    Args:
        base: a dataset returning untransformed ``(image, mask)`` pairs.
        indices: which of its items to serve (default: all).
        transform: joint transform applied at every access (random ones differ per epoch).
        cache: keep the decoded pairs in memory (masks as uint8).
    """

    def __init__(
        self,
        base: Dataset[SegSample],
        indices: Sequence[int] | None = None,
        transform: JointTransform | None = None,
        cache: bool = False,
    ) -> None:
        self.base = base
        self.indices = list(range(len(base))) if indices is None else list(indices)  # type: ignore[arg-type]
        self.transform = transform
        self.cache: dict[int, tuple[Tensor, Tensor]] | None = {} if cache else None

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> SegSample:
        key = self.indices[index]
        if self.cache is not None and key in self.cache:
            image, mask = self.cache[key]
        else:
            image, mask = self.base[key]
            mask = mask.to(torch.uint8)
            if self.cache is not None:
                self.cache[key] = (image, mask)
        mask = mask.to(torch.int64)
        if self.transform is not None:
            image, mask = self.transform(image, mask)
        return image, mask


def pad_collate(samples: list[SegSample]) -> tuple[Tensor, Tensor]:
    """Stack ``(image, mask)`` pairs, padding smaller ones at the bottom/right.

    Images are padded with 0, masks with :data:`IGNORE_INDEX`, so padding never counts in
    the loss or the metrics.

    Returns:
        ``(uint8 (N, C, H, W), int64 (N, H, W))`` with H, W the largest in the batch.
    """
    height = max(image.shape[-2] for image, _ in samples)
    width = max(image.shape[-1] for image, _ in samples)
    channels = samples[0][0].shape[0]
    images = torch.zeros((len(samples), channels, height, width), dtype=torch.uint8)
    masks = torch.full((len(samples), height, width), IGNORE_INDEX, dtype=torch.int64)
    for i, (image, mask) in enumerate(samples):
        h, w = image.shape[-2:]
        images[i, :, :h, :w] = image
        masks[i, :h, :w] = mask
    return images, masks


def train_transform(
    image: Tensor,
    mask: Tensor,
    size: tuple[int, int] | None,
    augment: bool,
    scale: tuple[float, float] = SCALE_RANGE,
) -> SegSample:
    """Training transform: resize to ``size``; with ``augment``, random rescale + crop, flip.

    The random rescale draws a factor in ``scale``, resizes the image and mask by it and
    crops (or pads, masks with 255) back to the base size; then a horizontal flip with
    probability 1/2. Image and mask stay aligned throughout.

    Returns:
        ``(image uint8 (C, h, w), mask int64 (h, w))``.
    """
    if size is not None:
        image, mask = joint_transform(image, mask, size=size)
    if not augment:
        return image, mask
    h, w = image.shape[-2:]
    factor = float(torch.empty(()).uniform_(*scale))
    scaled = (max(1, round(h * factor)), max(1, round(w * factor)))
    return joint_transform(image, mask, size=scaled, crop=(h, w), hflip=True)


def eval_transform(image: Tensor, mask: Tensor, size: tuple[int, int] | None) -> SegSample:
    """Evaluation transform: resize to ``size`` (masks by nearest neighbour), or nothing.

    Returns:
        ``(image uint8 (C, h, w), mask int64 (h, w))``.
    """
    return joint_transform(image, mask, size=size) if size is not None else (image, mask)


def _read_class_names(root: Path) -> list[str] | None:
    path = root / "classes.txt"
    if not path.is_file():
        return None
    names = [line.strip() for line in read_text(path, "class list").splitlines() if line.strip()]
    if not names:
        raise CnnzooError(f"{path} lists no class names: expected one name per line")
    return names


class SegmentationData(SplitDataModule):
    """Train/val/test loaders for a segmentation dataset named by ``data``.

    Args:
        data: ``"scenes"``, ``"voc:PATH"``, ``"cityscapes:PATH"`` or ``"masks:PATH"``.
        data_dir: where ``scenes`` is generated (default ``$CNNZOO_DATA`` or ``~/.cache/cnnzoo``).
        batch_size: global batch size (split across DDP processes).
        input_size: resize every image and mask to ``(height, width)``; None keeps each
            image's size (batches are padded to the largest).
        augment: random rescale (x0.75..1.25) + crop back, and horizontal flip, in training.
        val_fraction: share of the training set held out for validation when the source
            has no validation split (0: none).
        subset: keep only the first N training images (quick runs, tests).
        seed: seed of the split, the shuffling and the augmentation.
        num_workers: DataLoader worker processes (decoding, transforms).
        channels: image channels (3, or 1 for gray data).
        cache: keep decoded images in memory (default: when a split fits in 2 GiB).

    Attributes:
        spec: a :class:`~cnnzoo.data.datamodule.DatasetSpec` (class names, channels, the
            input size, normalisation).
        eval_split: the split ``test_dataloader`` serves.

    Raises:
        CnnzooError: for an unknown ``data`` form (listing the valid ones), missing folders or
            files, and bad options.
    """

    collate_fn = staticmethod(pad_collate)

    def __init__(
        self,
        data: str,
        data_dir: str | None = None,
        batch_size: int = 16,
        input_size: Sequence[int] | None = None,
        augment: bool = True,
        val_fraction: float = 0.1,
        subset: int | None = None,
        seed: int = 0,
        num_workers: int = 0,
        channels: int = 3,
        cache: bool | None = None,
    ) -> None:
        super().__init__()
        self.data = data
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
        self.splits: dict[str, PairView] = {}
        self.spec = self._load()

    # -- sources -----------------------------------------------------------------------
    def _load(self) -> DatasetSpec:
        if self.data == SCENES:
            root = default_scenes(self.data_dir)
            bases, names = self._mask_folders(root)
        else:
            if ":" not in self.data and Path(self.data).expanduser().is_dir():
                raise CnnzooError(
                    f"--data {self.data!r} is a folder: for segmentation say which format it "
                    f"is, one of {seg_data_help()} (e.g. masks:{self.data})"
                )
            if self.data.partition(":")[0].strip().lower() not in SEG_DATA_SCHEMES:
                raise CnnzooError(
                    f"segmentation data {self.data!r} is not understood: expected one of "
                    f"{seg_data_help()}"
                )
            scheme, path = parse_seg_data(self.data)
            if scheme == "voc":
                bases, names = self._voc(Path(path))
            elif scheme == "cityscapes":
                bases, names = self._cityscapes(Path(path))
            elif scheme == SCENES:
                bases, names = self._mask_folders(_scenes_folder(Path(path)))
            else:
                bases, names = self._mask_folders(Path(path))
        self._make_splits(bases)
        size = self.input_size or _first_size(self.splits["train"])
        mean, std = (IMAGENET_MEAN, IMAGENET_STD) if self.channels == 3 else ((0.5,), (0.5,))
        return DatasetSpec(
            name=self.data,
            class_names=names,
            in_channels=self.channels,
            image_size=size,
            mean=mean,
            std=std,
            sizes={k: len(v) for k, v in self.splits.items()},
        )

    def _voc(self, root: Path) -> tuple[dict[str, SegmentationDataset], list[str]]:
        from cnnzoo.data.formats.voc import VOC_CLASSES, VOCSegmentation

        train = VOCSegmentation(root, "train", channels=self.channels)
        val = VOCSegmentation(root, "val", channels=self.channels)
        return {"train": train, "val": val, "test": val}, list(VOC_CLASSES)

    def _cityscapes(self, root: Path) -> tuple[dict[str, SegmentationDataset], list[str]]:
        from cnnzoo.data.formats.cityscapes import CITYSCAPES_CLASSES, CityscapesSegmentation

        train = CityscapesSegmentation(root, "train", channels=self.channels)
        val = CityscapesSegmentation(root, "val", channels=self.channels)
        return {"train": train, "val": val, "test": val}, list(CITYSCAPES_CLASSES)

    def _mask_folders(self, root: Path) -> tuple[dict[str, SegmentationDataset], list[str]]:
        root = root.expanduser()
        images, masks = root / "images", root / "masks"
        if not images.is_dir() or not masks.is_dir():
            raise CnnzooError(
                f"mask dataset {root} needs an images/ and a masks/ folder (optionally with "
                "train/, val/, test/ sub-folders), paired by file name"
            )
        names = _read_class_names(root)
        split_names = [s for s in ("train", "val", "test") if (images / s).is_dir()]
        bases: dict[str, SegmentationDataset] = {}
        if "train" in split_names:
            for split in split_names:
                bases[split] = MaskFolderDataset(
                    images / split, masks / split, self.channels, class_names=names
                )
        else:
            bases["train"] = MaskFolderDataset(images, masks, self.channels, class_names=names)
        if names is None:
            top = max(b.infer_num_classes() for b in bases.values())  # type: ignore[attr-defined]
            names = [str(i) for i in range(top)]
            for b in bases.values():
                b.num_classes, b.class_names = top, names
        return bases, names

    def _make_splits(self, bases: dict[str, SegmentationDataset]) -> None:
        train = bases["train"]
        indices = list(range(len(train)))
        val_base, val_indices = bases.get("val"), None
        if val_base is None and self.val_fraction > 0:
            if not 0 < self.val_fraction < 1:
                raise CnnzooError(f"--val-fraction must be in [0, 1), got {self.val_fraction}")
            order = torch.randperm(len(indices), generator=torch.Generator().manual_seed(self.seed))
            n_val = max(1, round(self.val_fraction * len(indices)))
            val_indices = sorted(order[:n_val].tolist())
            indices = sorted(order[n_val:].tolist())
            val_base = train
        if self.subset:
            indices = indices[: self.subset]
        size = self.input_size
        train_tf = functools.partial(train_transform, size=size, augment=self.augment)
        eval_tf = functools.partial(eval_transform, size=size)
        self.splits["train"] = PairView(train, indices, train_tf, self._cache(train))
        if val_base is not None:
            self.splits["val"] = PairView(val_base, val_indices, eval_tf, self._cache(val_base))
        test = bases.get("test", val_base)
        if test is not None:
            self.splits["test"] = PairView(
                test, val_indices if test is train else None, eval_tf, self._cache(test)
            )

    def _cache(self, dataset: SegmentationDataset) -> bool:
        if self.cache is not None:
            return self.cache
        if len(dataset) == 0:
            return False
        image, _ = dataset[0]
        return len(dataset) * image.numel() * (1 + 1 / image.shape[0]) < CACHE_LIMIT_BYTES

    # -- batches on the device ----------------------------------------------------------
    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        x, y = batch
        return normalize_batch(x, self.spec.mean, self.spec.std), y


def _input_size(value: Sequence[int] | int | None) -> tuple[int, int] | None:
    if value is None:
        return None
    pair = [value, value] if isinstance(value, int) else list(value)
    if len(pair) == 1:
        pair = pair * 2
    if len(pair) != 2 or not all(isinstance(v, int) and v > 0 for v in pair):
        raise CnnzooError(
            f"--input-size {value!r} is invalid: expected one or two positive ints (H [W])"
        )
    return pair[0], pair[1]


def _first_size(view: PairView) -> tuple[int, int]:
    if len(view) == 0:
        raise CnnzooError("the training split is empty")
    image, _ = view.base[view.indices[0]]
    return int(image.shape[-2]), int(image.shape[-1])
