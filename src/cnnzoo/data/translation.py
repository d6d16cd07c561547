"""Image-to-image translation data: unpaired domains (CycleGAN, UNIT) and aligned pairs
(pix2pix, pix2pixHD), from folders or built from Fashion-MNIST.

Every dataset yields ``{"A": uint8 (C, H, W) or int64 (H, W) label map, "B": uint8 (C, H, W)}``
and has ``channels_a``, ``channels_b``, ``label_nc`` (> 0 when "A" is a label map), ``paired``
(whether item ``i``'s B is the true target of its A) and ``domain_sizes`` (A and B images).

``--data`` forms (:func:`parse_translation_data`):

- ``unpaired:PATH``: ``PATH/trainA``, ``PATH/trainB`` (+ ``testA``, ``testB``), the CycleGAN
  layout; the two domains need not have the same number of images and nothing pairs them:
  item ``i`` is A image ``i`` with a B image drawn at random (seeded, different each epoch);
- ``paired:PATH``: ``PATH/train_A`` + ``PATH/train_B`` (+ ``test_A``, ``test_B``) matched by file
  name, or ``PATH/train_label`` (single-channel label PNGs, pix2pixHD's semantic input) instead
  of ``train_A``, or ``PATH/train`` (+ ``test``) holding side-by-side ``A|B`` images (pix2pix's
  layout: the left half is A, the right half B);
- built-in tasks from Fashion-MNIST (so everything runs out of the box): ``fmnist-edges``
  (paired: A = the item's edges (Sobel magnitude, thresholded), B = the item),
  ``fmnist-invert`` (unpaired: A = items, B = *other* items inverted and tinted orange, RGB),
  ``fmnist-shoes`` (unpaired: A = sneakers, B = ankle boots).

Bad pairs are clear errors: a file in one folder without its partner (named), two images of a
pair with different sizes (both named), a side-by-side image of odd width.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset, default_collate

from cnnzoo.data.datamodule import DatasetSpec
from cnnzoo.data.folder import IMAGE_EXTENSIONS, load_image
from cnnzoo.data.splits import SplitDataModule
from cnnzoo.errors import CnnzooError

TRANSLATION_SCHEMES: tuple[str, ...] = ("unpaired", "paired")
BUILTIN_TASKS: dict[str, str] = {
    "fmnist-edges": "paired: edges -> item (pix2pix, pix2pixhd)",
    "fmnist-invert": "unpaired: item <-> inverted orange item (cyclegan, unit)",
    "fmnist-shoes": "unpaired: sneaker <-> ankle boot (cyclegan, unit)",
}
TINT = (1.0, 0.55, 0.1)
"""The colour of ``fmnist-invert``'s B domain (RGB multipliers of the inverted item)."""
SHOES_CLASSES = (7, 9)
"""The Fashion-MNIST classes of ``fmnist-shoes``' A (Sneaker) and B (Ankle boot) domains."""

Pair = dict[str, Tensor]


def parse_translation_data(spec: str) -> tuple[str, str]:
    """Split a translation data spec into ``(scheme, path)``.

    Returns:
        ``("unpaired" | "paired", path)`` or ``(builtin task name, "")``.

    Raises:
        CnnzooError: for an unknown form (listing the valid ones) or a missing path.
    """
    text = spec.strip()
    if text.lower() in BUILTIN_TASKS:
        return text.lower(), ""
    scheme, sep, path = text.partition(":")
    scheme = scheme.strip().lower()
    valid = "unpaired:PATH, paired:PATH, " + ", ".join(BUILTIN_TASKS)
    if scheme not in TRANSLATION_SCHEMES:
        raise CnnzooError(f"translation data {spec!r} is not understood: expected one of {valid}")
    if not sep or not path.strip():
        raise CnnzooError(f"translation data {spec!r} has no path: expected {scheme}:PATH")
    return scheme, os.path.expanduser(path.strip())


def _images(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise CnnzooError(f"image folder {folder} does not exist")
    files = sorted(
        p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
    )
    if not files:
        raise CnnzooError(f"image folder {folder} holds no images")
    return files


class UnpairedFolders(Dataset[Pair]):
    """Two folders of images, A and B, not paired (the CycleGAN layout).

    Item ``i`` is A image ``i`` with B image ``perm[i mod len(B)]`` where ``perm`` is a seeded
    permutation redrawn by :meth:`set_epoch`; ``len`` is ``max(len(A), len(B))`` so every
    image of the larger domain is seen each epoch.

    Args:
        folder_a, folder_b: the two domains (sub-folders allowed).
        channels: 1 or 3 for both domains; image_size: resize to ``(H, W)`` (None: as is;
            then every image must have the same size for batching).

    Raises:
        CnnzooError: for a missing or empty folder, naming it.
    """

    paired = False

    def __init__(
        self,
        folder_a: str | os.PathLike[str],
        folder_b: str | os.PathLike[str],
        channels: int = 3,
        image_size: Sequence[int] | None = None,
        seed: int = 0,
    ) -> None:
        self.files_a = _images(Path(folder_a))
        self.files_b = _images(Path(folder_b))
        self.channels_a = self.channels_b = channels
        self.label_nc = 0
        self.image_size = tuple(image_size) if image_size else None
        self.seed = seed
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        """Redraw which B image goes with which A image."""
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        self.perm = torch.randperm(len(self.files_b), generator=gen).tolist()

    @property
    def domain_sizes(self) -> tuple[int, int]:
        """Return the number of A and of B images."""
        return len(self.files_a), len(self.files_b)

    def __len__(self) -> int:
        return max(len(self.files_a), len(self.files_b))

    def __getitem__(self, index: int) -> Pair:
        a = self.files_a[index % len(self.files_a)]
        b = self.files_b[self.perm[index % len(self.files_b)]]
        return {
            "A": load_image(a, self.channels_a, self.image_size),
            "B": load_image(b, self.channels_b, self.image_size),
        }


def _load_label_map(path: Path, size: tuple[int, int] | None) -> Tensor:
    from cnnzoo.data.segmentation import load_mask

    labels = load_mask(path)  # names the file if it is undecodable or not single-channel
    if size is not None and tuple(labels.shape) != size:
        labels = F.interpolate(labels[None, None].float(), size=size, mode="nearest")[0, 0].long()
    return labels


class PairedFolders(Dataset[Pair]):
    """Aligned pairs: ``folder_a/NAME`` with ``folder_b/NAME`` (same file stem), A optionally a
    label map, or one folder of side-by-side ``A|B`` images.

    Args:
        folder_a: A images or label maps (None with ``side_by_side``).
        folder_b: B images, or the side-by-side images.
        channels_a, channels_b: 1 or 3.
        label_nc: > 0: A is a label map with this many classes (values >= label_nc are errors).
        side_by_side: ``folder_b`` holds ``A|B`` images (left half A).
        image_size: resize both to ``(H, W)``.

    Raises:
        CnnzooError: for missing/empty folders, an A without a B or a B without an A (named),
            pairs of different sizes (both named), odd-width side-by-side images, or label
            values outside ``0..label_nc-1`` (named).
    """

    paired = True

    def __init__(
        self,
        folder_a: str | os.PathLike[str] | None,
        folder_b: str | os.PathLike[str],
        channels_a: int = 3,
        channels_b: int = 3,
        label_nc: int = 0,
        side_by_side: bool = False,
        image_size: Sequence[int] | None = None,
    ) -> None:
        self.channels_a, self.channels_b = channels_a, channels_b
        self.label_nc = label_nc
        self.side_by_side = side_by_side
        self.image_size = tuple(image_size) if image_size else None
        files_b = _images(Path(folder_b))
        if side_by_side:
            self.pairs: list[tuple[Path | None, Path]] = [(None, f) for f in files_b]
            return
        if folder_a is None:
            raise CnnzooError("paired data needs the A folder (or side-by-side images)")
        files_a = _images(Path(folder_a))
        by_stem_b = {f.relative_to(folder_b).with_suffix("").as_posix(): f for f in files_b}
        by_stem_a = {f.relative_to(folder_a).with_suffix("").as_posix(): f for f in files_a}
        only_a = sorted(set(by_stem_a) - set(by_stem_b))
        only_b = sorted(set(by_stem_b) - set(by_stem_a))
        if only_a or only_b:
            lone = by_stem_a[only_a[0]] if only_a else by_stem_b[only_b[0]]
            other = folder_b if only_a else folder_a
            raise CnnzooError(
                f"{lone} has no partner in {other} ({len(only_a)} A and {len(only_b)} B "
                "images without a partner): paired images must have the same file name"
            )
        self.pairs = [(by_stem_a[k], by_stem_b[k]) for k in sorted(by_stem_a)]

    @property
    def domain_sizes(self) -> tuple[int, int]:
        """Return the number of A and of B images (both the number of pairs)."""
        return len(self.pairs), len(self.pairs)

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> Pair:
        path_a, path_b = self.pairs[index]
        if path_a is None:
            both = load_image(path_b, self.channels_b)
            width = both.shape[-1]
            if width % 2:
                raise CnnzooError(
                    f"side-by-side image {path_b} is {width} pixels wide: expected an even "
                    "width (A on the left half, B on the right)"
                )
            a, b = both[..., : width // 2], both[..., width // 2 :]
            if self.channels_a != self.channels_b:
                a = load_image(path_b, self.channels_a)[..., : width // 2]
            if self.image_size:
                a = _resize(a, self.image_size)
                b = _resize(b, self.image_size)
            return {"A": a, "B": b}
        b = load_image(path_b, self.channels_b)
        if self.label_nc:
            a = _load_label_map(path_a, None)
            if int(a.max()) >= self.label_nc:
                raise CnnzooError(
                    f"label map {path_a} holds label {int(a.max())}: expected "
                    f"0..{self.label_nc - 1}"
                )
        else:
            a = load_image(path_a, self.channels_a)
        if tuple(a.shape[-2:]) != tuple(b.shape[-2:]):
            raise CnnzooError(
                f"paired images differ in size: {path_a} is {a.shape[-1]}x{a.shape[-2]}, "
                f"{path_b} is {b.shape[-1]}x{b.shape[-2]}"
            )
        if self.image_size:
            b = _resize(b, self.image_size)
            if self.label_nc:
                a = F.interpolate(a[None, None].float(), size=self.image_size, mode="nearest")[
                    0, 0
                ].long()
            else:
                a = _resize(a, self.image_size)
        return {"A": a, "B": b}


def _resize(image: Tensor, size: tuple[int, ...]) -> Tensor:
    if tuple(image.shape[-2:]) == tuple(size):
        return image
    out = F.interpolate(image[None].float(), size=size, mode="bilinear", antialias=True)[0]
    return out.round().clamp(0, 255).to(torch.uint8)


def sobel_edges(images: Tensor, threshold: float = 0.2) -> Tensor:
    """Return binary edge maps (uint8 0/255, same shape) of uint8 ``images (N, 1, H, W)``:
    the Sobel gradient magnitude above ``threshold`` times its per-image maximum."""
    x = images.float() / 255
    kx = torch.tensor([[-1.0, 0, 1], [-2, 0, 2], [-1, 0, 1]])
    gx = F.conv2d(x, kx.view(1, 1, 3, 3), padding=1)
    gy = F.conv2d(x, kx.t().reshape(1, 1, 3, 3), padding=1)
    mag = (gx.square() + gy.square()).sqrt()
    peak = mag.amax(dim=(-2, -1), keepdim=True).clamp(min=1e-8)
    return ((mag / peak) > threshold).to(torch.uint8) * 255


class TensorPairs(Dataset[Pair]):
    """In-memory A and B image tensors; paired (item ``i`` of each) or unpaired (B drawn by a
    seeded permutation, redrawn by :meth:`set_epoch`). ``classes``: the Fashion-MNIST class of
    every A and of every B image, when each domain is one class (``fmnist-shoes``)."""

    def __init__(
        self,
        a: Tensor,
        b: Tensor,
        paired: bool,
        seed: int = 0,
        classes: tuple[int, int] | None = None,
    ) -> None:
        if paired and len(a) != len(b):
            raise CnnzooError(f"paired tensors differ in length: {len(a)} vs {len(b)}")
        self.a, self.b, self.paired, self.seed = a, b, paired, seed
        self.classes = classes
        self.channels_a, self.channels_b = int(a.shape[1]), int(b.shape[1])
        self.label_nc = 0
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        """Redraw the B partner of each A item (unpaired only)."""
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        self.perm = None if self.paired else torch.randperm(len(self.b), generator=gen)

    @property
    def domain_sizes(self) -> tuple[int, int]:
        """Return the number of A and of B images."""
        return len(self.a), len(self.b)

    def __len__(self) -> int:
        return len(self.a) if self.paired else max(len(self.a), len(self.b))

    def __getitem__(self, index: int) -> Pair:
        if self.perm is None:
            return {"A": self.a[index], "B": self.b[index]}
        return {
            "A": self.a[index % len(self.a)],
            "B": self.b[int(self.perm[index % len(self.b)])],
        }


def builtin_task(
    name: str, split: str, data_dir: str | None = None, limit: int | None = None, seed: int = 0
) -> TensorPairs:
    """Build one of :data:`BUILTIN_TASKS` from Fashion-MNIST (the full set when it is
    installed, else the bundled mini set).

    Args:
        split: "train" or "test"; limit: keep at most this many A images.

    Returns:
        The dataset (28x28 images; ``fmnist-invert`` is RGB in both domains).

    Raises:
        CnnzooError: for an unknown task name.
    """
    from cnnzoo.data.fashion_mnist import load_fashion_mnist, load_fashion_mnist_mini

    if name not in BUILTIN_TASKS:
        raise CnnzooError(
            f"unknown built-in task {name!r}: expected one of {', '.join(BUILTIN_TASKS)}"
        )
    try:
        images, labels = load_fashion_mnist(split, data_dir=data_dir)
    except CnnzooError:
        images, labels = load_fashion_mnist_mini(split)
    gen = torch.Generator().manual_seed(seed)
    if name == "fmnist-edges":
        b = images[:limit] if limit else images
        return TensorPairs(sobel_edges(b), b, paired=True, seed=seed)
    classes = None
    if name == "fmnist-shoes":
        classes = SHOES_CLASSES
        a, b = images[labels == classes[0]], images[labels == classes[1]]
    else:  # fmnist-invert: two disjoint halves, so no B image is the inverse of an A image
        order = torch.randperm(len(images), generator=gen)
        half = len(order) // 2
        a = images[order[:half]].repeat(1, 3, 1, 1)
        tint = torch.tensor(TINT).view(1, 3, 1, 1)
        b = ((255 - images[order[half:]]).float() * tint).round().to(torch.uint8)
    if limit:
        a, b = a[:limit], b[:limit]
    return TensorPairs(a, b, paired=False, seed=seed, classes=classes)


def open_translation_split(
    spec: str,
    split: str,
    channels: int = 3,
    image_size: Sequence[int] | None = None,
    label_nc: int = 0,
    data_dir: str | None = None,
    limit: int | None = None,
    seed: int = 0,
) -> Dataset[Pair] | None:
    """Open the ``split`` ("train" or "test") of the data ``spec`` names.

    Returns:
        The dataset, or None when a folder source has no such split (e.g. no ``testA``).

    Raises:
        CnnzooError: for a bad spec or bad folders (see the classes above).
    """
    scheme, path = parse_translation_data(spec)
    if scheme in BUILTIN_TASKS:
        return builtin_task(scheme, split, data_dir, limit, seed)
    root = Path(path)
    if not root.is_dir():
        raise CnnzooError(f"translation data folder {root} does not exist")
    if scheme == "unpaired":
        a, b = root / f"{split}A", root / f"{split}B"
        if not a.exists() and not b.exists() and split != "train":
            return None
        return UnpairedFolders(a, b, channels, image_size, seed)
    a, labels, b = root / f"{split}_A", root / f"{split}_label", root / f"{split}_B"
    if b.is_dir():
        if labels.is_dir():
            if label_nc <= 0:
                raise CnnzooError(
                    f"{labels} holds label maps: say how many classes they have "
                    "(--model-arg label_nc=N)"
                )
            return PairedFolders(labels, b, 1, channels, label_nc, image_size=image_size)
        return PairedFolders(a, b, channels, channels, image_size=image_size)
    side = root / split
    if side.is_dir():
        return PairedFolders(None, side, channels, channels, side_by_side=True,
                             image_size=image_size)  # fmt: skip
    if split != "train":
        return None
    raise CnnzooError(
        f"paired data {root} has neither {b.name}/ (with {a.name}/ or {labels.name}/) nor "
        f"{side.name}/ (side-by-side A|B images)"
    )


class TranslationData(SplitDataModule):
    """Train/test loaders of a translation data spec (see the module docstring).

    Batches are ``{"A": ..., "B": ...}`` (uint8 images; the task scales them to [-1, 1]).
    There is no validation split (GAN training keeps no "best" checkpoint); ``test`` is the
    source's test split when it has one.

    Args:
        data: the spec; channels: 1 or 3 (folder sources); input_size: resize to ``(H, W)``
            (folder sources; needed when their images differ in size); label_nc: classes of
            label-map inputs (paired folders with ``train_label/``); subset: keep the first N
            training items.

    Attributes:
        spec: a :class:`~cnnzoo.data.datamodule.DatasetSpec` of the B domain (channels, size)
            with ``in_channels`` the A domain's (label_nc for label maps).
        paired: whether each A has its true B (``paired:PATH``, ``fmnist-edges``).
        domain_classes: the Fashion-MNIST classes of the A and the B domain (``fmnist-shoes``:
            :data:`SHOES_CLASSES`), else None.

    Raises:
        CnnzooError: for a bad spec or folders.
    """

    collate_fn = staticmethod(default_collate)

    def __init__(
        self,
        data: str,
        data_dir: str | None = None,
        batch_size: int = 16,
        input_size: Sequence[int] | None = None,
        channels: int = 3,
        label_nc: int = 0,
        subset: int | None = None,
        seed: int = 0,
        num_workers: int = 0,
    ) -> None:
        super().__init__()
        self.data = data
        self.batch_size = batch_size
        self.seed = seed
        self.num_workers = num_workers
        size = tuple(input_size) if input_size else None
        train = open_translation_split(data, "train", channels, size, label_nc, data_dir,
                                       subset, seed)  # fmt: skip
        assert train is not None
        self.splits: dict[str, Dataset] = {"train": train}
        test = open_translation_split(data, "test", channels, size, label_nc, data_dir,
                                      None, seed)  # fmt: skip
        if test is not None:
            self.splits["test"] = test
        first = train[0]
        b = first["B"]
        self.channels_a = int(getattr(train, "label_nc", 0) or getattr(train, "channels_a", 3))
        self.channels_b = int(b.shape[0])
        self.label_nc = int(getattr(train, "label_nc", 0))
        self.paired = bool(getattr(train, "paired", False))
        self.domain_classes: tuple[int, int] | None = getattr(train, "classes", None)
        self.spec = DatasetSpec(
            name=data,
            class_names=[],
            in_channels=self.channels_a,
            image_size=(int(b.shape[-2]), int(b.shape[-1])),
            mean=(0.5,) * self.channels_b,
            std=(0.5,) * self.channels_b,
            sizes={k: len(v) for k, v in self.splits.items()},
        )
