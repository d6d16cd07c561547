"""Classification data for Lightning: any source (Fashion-MNIST, the bundled mini set, an
image folder) becomes uint8 batches that are resized, augmented and normalised *as batches*
after transfer to the device — no per-image PIL round trip on the critical path.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import Dataset, default_collate

from cnnzoo.data.splits import SplitDataModule
from cnnzoo.data.transforms import BatchAugment, prepare_batch
from cnnzoo.errors import CnnzooError

FASHION_MNIST_NAMES = ("fashion-mnist", "fashion-mnist-mini")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class DatasetSpec:
    """What a model needs to know about its data (saved in the run's ``model.json``)."""

    name: str
    class_names: list[str]
    in_channels: int
    image_size: tuple[int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    sizes: dict[str, int] = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        """Number of classes."""
        return len(self.class_names)

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON/YAML-friendly dict."""
        d = asdict(self)
        d["image_size"] = list(self.image_size)
        return d


class InMemoryImages(Dataset):
    """uint8 images (N, C, H, W) and int64 labels held in memory, fetched a batch at a time."""

    def __init__(self, images: Tensor, labels: Tensor) -> None:
        self.images = images
        self.labels = labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        return self.images[index], self.labels[index]

    def __getitems__(self, indices: list[int]) -> tuple[Tensor, Tensor]:
        idx = torch.as_tensor(indices)
        return self.images[idx], self.labels[idx]


def collate(batch: Any) -> Any:
    """Pass through batches fetched whole (``__getitems__``); stack lists of samples."""
    return batch if isinstance(batch, tuple) else default_collate(batch)


def _split_off(
    images: Tensor, labels: Tensor, fraction: float, seed: int
) -> tuple[InMemoryImages, InMemoryImages | None]:
    if fraction <= 0:
        return InMemoryImages(images, labels), None
    if not 0 < fraction < 1:
        raise CnnzooError(f"--val-fraction must be in [0, 1), got {fraction}")
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))
    n_val = max(1, round(fraction * len(labels)))
    val, train = order[:n_val], order[n_val:]
    return InMemoryImages(images[train], labels[train]), InMemoryImages(images[val], labels[val])


def select_classes(
    images: Tensor,
    labels: Tensor,
    classes: list[int] | None = None,
    per_class: int | None = None,
    seed: int = 0,
) -> tuple[Tensor, Tensor]:
    """Keep only ``classes`` (relabelled 0..k-1 in the given order) and ``per_class`` samples each.

    The ``per_class`` samples are drawn with ``seed``, so a labelled subset is reproducible.

    Returns:
        The selected images and their new labels.

    Raises:
        CnnzooError: for a class index that is not in the labels, or too few samples.
    """
    if classes is not None:
        present = set(labels.unique().tolist())
        missing = [c for c in classes if c not in present]
        if missing:
            raise CnnzooError(f"classes {missing} are not in the data (it has {sorted(present)})")
        remap = torch.full((int(labels.max()) + 1,), -1, dtype=torch.long)
        remap[torch.as_tensor(classes)] = torch.arange(len(classes))
        keep = remap[labels] >= 0
        images, labels = images[keep], remap[labels[keep]]
    if per_class is not None:
        g = torch.Generator().manual_seed(seed)
        chosen = []
        for c in labels.unique().tolist():
            idx = (labels == c).nonzero().flatten()
            if len(idx) < per_class:
                raise CnnzooError(f"class {c} has {len(idx)} samples, fewer than {per_class}")
            chosen.append(idx[torch.randperm(len(idx), generator=g)[:per_class]])
        order = torch.cat(chosen).sort().values
        images, labels = images[order], labels[order]
    return images, labels


class ClassificationData(SplitDataModule):
    """Train/val/test loaders for a classification dataset named by ``data``.

    Args:
        data: ``"fashion-mnist"``, ``"fashion-mnist-mini"`` (bundled, offline) or a path to an
            image folder (one sub-folder per class; optional ``train/``, ``val/``, ``test/``).
        data_dir: where to look for Fashion-MNIST first.
        batch_size: global batch size (split across DDP processes).
        val_fraction: share of the training set held out for validation (0: no validation).
        augment: random crop (zero padding) + horizontal flip on training batches.
        crop_padding: pixels of zero padding of the random crop (default: an eighth of the
            image side, at least 1; 3 for 28x28).
        resize_to: resize every batch to this square size (models with a minimum input size).
        image_size: image-folder images are resized to this size when loaded (default 224).
        channels: image-folder channel count (default: 3).
        subset: keep only the first N training samples (quick runs, tests).
        classes: keep only these class indices, relabelled 0..k-1 (in-memory datasets).
        per_class: keep this many labelled training images per class, drawn with ``seed``.
        seed: seed of the split and of the shuffling.
        num_workers: DataLoader worker processes for image folders (decoding).

    Raises:
        CnnzooError: for an unknown dataset, a missing/empty folder or unreadable files.
    """

    collate_fn = staticmethod(collate)

    def __init__(
        self,
        data: str,
        data_dir: str | None = None,
        batch_size: int = 128,
        val_fraction: float = 0.1,
        augment: bool = True,
        resize_to: int | None = None,
        image_size: int | None = None,
        channels: int | None = None,
        subset: int | None = None,
        seed: int = 0,
        num_workers: int = 0,
        download: bool = True,
        classes: list[int] | None = None,
        per_class: int | None = None,
        crop_padding: int | None = None,
    ) -> None:
        super().__init__()
        if crop_padding is not None and crop_padding < 0:
            raise CnnzooError(f"--crop-padding {crop_padding} is negative: expected 0 or more")
        self.classes = classes
        self.per_class = per_class
        self.data = data
        self.data_dir = data_dir
        self.batch_size = batch_size
        self.val_fraction = val_fraction
        self.resize_to = resize_to
        self.subset = subset
        self.seed = seed
        self.num_workers = num_workers
        self.download = download
        self.splits: dict[str, Dataset] = {}
        self.eval_split = "test"  # the split test_dataloader serves (`cnnzoo eval --split`)
        self.spec = self._load(image_size, channels)
        pad = max(1, self.spec.image_size[0] // 8) if crop_padding is None else crop_padding
        pad = pad if augment else 0
        self.augment = BatchAugment(crop_padding=pad, hflip=True) if augment else None

    # -- sources -----------------------------------------------------------------------
    def _load(self, image_size: int | None, channels: int | None) -> DatasetSpec:
        if self.data in FASHION_MNIST_NAMES:
            return self._load_fashion_mnist()
        if self.classes is not None or self.per_class is not None:
            raise CnnzooError(
                "--classes/--per-class apply to fashion-mnist; for an image folder, "
                "arrange the class sub-folders you want instead"
            )
        root = Path(self.data).expanduser()
        if not root.exists():
            raise CnnzooError(
                f"unknown dataset {self.data!r}: not one of {', '.join(FASHION_MNIST_NAMES)} "
                "and no such folder"
            )
        return self._load_folder(root, image_size or 224, channels or 3)

    def _load_fashion_mnist(self) -> DatasetSpec:
        from cnnzoo.data.fashion_mnist import (
            FASHION_MNIST_CLASSES,
            load_fashion_mnist,
            load_fashion_mnist_mini,
        )

        if self.data == "fashion-mnist-mini":
            train = load_fashion_mnist_mini("train")
            test = load_fashion_mnist_mini("test")
        else:
            train = load_fashion_mnist("train", self.data_dir, download=self.download)
            test = load_fashion_mnist("test", self.data_dir, download=self.download)
        images, labels = select_classes(*train, self.classes, self.per_class, self.seed)
        if self.subset:
            images, labels = images[: self.subset], labels[: self.subset]
        self.splits["train"], val = _split_off(images, labels, self.val_fraction, self.seed)
        if val is not None:
            self.splits["val"] = val
        self.splits["test"] = InMemoryImages(*select_classes(*test, self.classes))
        names = list(FASHION_MNIST_CLASSES)
        return DatasetSpec(
            name=self.data,
            class_names=[names[c] for c in self.classes] if self.classes else names,
            in_channels=1,
            image_size=(28, 28),
            mean=(0.2860,),
            std=(0.3530,),
            sizes={k: len(v) for k, v in self.splits.items()},
        )

    def _load_folder(self, root: Path, image_size: int, channels: int) -> DatasetSpec:
        from cnnzoo.data.folder import ImageFolderDataset, image_folder_splits

        splits, classes = image_folder_splits(root, self.val_fraction, self.seed)
        for name, samples in splits.items():
            if name == "train" and self.subset:
                samples = samples[: self.subset]
            self.splits[name] = ImageFolderDataset(samples, image_size, channels)
        if "test" not in self.splits and "val" in self.splits:
            self.splits["test"] = self.splits["val"]
        mean, std = (IMAGENET_MEAN, IMAGENET_STD) if channels == 3 else ((0.5,), (0.5,))
        return DatasetSpec(
            name=str(root),
            class_names=list(classes),
            in_channels=channels,
            image_size=(image_size, image_size),
            mean=mean,
            std=std,
            sizes={k: len(v) for k, v in self.splits.items()},
        )

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        x, y = batch
        training = self.trainer is not None and self.trainer.training
        x = prepare_batch(
            x, self.spec.mean, self.spec.std, self.resize_to, self.augment if training else None
        )
        return x, y
