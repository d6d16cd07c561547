"""Semantic-segmentation data: image + per-pixel label mask.

Every dataset here yields ``(image, mask)`` pairs:

- ``image``: uint8 tensor ``(C, H, W)`` (C = 1 or 3), decoded with
  :func:`cnnzoo.data.folder.load_image`;
- ``mask``: int64 tensor ``(H, W)``; ``0..num_classes-1`` are classes and ``255``
  (:data:`IGNORE_INDEX`) marks pixels to ignore in the loss and the metrics.

and has ``.class_names`` (``list[str]``, label ``i`` is ``class_names[i]``) and
``.ignore_index = 255``.

Formats:

- :class:`MaskFolderDataset`: your own ``images/`` + ``masks/`` folders, paired by file stem;
  masks are single-channel PNGs (mode ``L``, or palette mode ``P`` where the palette *index* is
  the label);
- :class:`cnnzoo.data.formats.voc.VOCSegmentation`: Pascal VOC 2012, 21 classes, 255 = void;
- :class:`cnnzoo.data.formats.cityscapes.CityscapesSegmentation`: Cityscapes, 19 train ids.

:func:`joint_transform` resizes / crops / flips an image and its mask together, and
:func:`parse_seg_data` splits a ``"scheme:path"`` data spec.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision import tv_tensors
from torchvision.transforms.v2 import InterpolationMode
from torchvision.transforms.v2 import functional as TF

from cnnzoo.data.folder import IMAGE_EXTENSIONS, load_image
from cnnzoo.documents import is_file
from cnnzoo.errors import CnnzooError

IGNORE_INDEX = 255
"""Mask value for pixels that count as no class (void, borders, unlabeled)."""

SegSample = tuple[torch.Tensor, torch.Tensor]
"""``(image uint8 (C, H, W), mask int64 (H, W))``."""

JointTransform = Callable[[torch.Tensor, torch.Tensor], SegSample]
"""A function of ``(image, mask)`` returning a transformed ``(image, mask)``."""

SEG_DATA_SCHEMES: tuple[str, ...] = ("voc", "cityscapes", "masks", "scenes")


# --------------------------------------------------------------------------------------------
# Masks
# --------------------------------------------------------------------------------------------


def load_mask(path: str | os.PathLike[str]) -> torch.Tensor:
    """Read a label mask PNG as integer labels.

    Mode ``L`` gives the gray value, palette mode ``P`` the palette *index* (not the colour),
    as the label of each pixel.

    Returns:
        int64 tensor ``(H, W)`` with values 0..255.

    Raises:
        CnnzooError: naming the file if it is missing, cannot be decoded, or is not a
            single-channel (``L``/``P``) image, e.g. an RGB colour-coded mask.
    """
    path = Path(path)
    if not is_file(path):
        raise CnnzooError(f"mask file {path} does not exist")
    try:
        with Image.open(path) as img:
            img.load()
            mode = img.mode
            array = np.array(img, dtype=np.uint8) if mode in ("L", "P") else None
    except Exception as exc:  # PIL raises many types for bad files
        raise CnnzooError(
            f"mask file {path} cannot be decoded ({type(exc).__name__}: {exc}); "
            "replace or remove it"
        ) from None
    if array is None:
        raise CnnzooError(
            f"mask file {path} has mode {mode}: expected a single-channel label PNG "
            "(mode L, or a palette PNG whose palette index is the class); convert colour "
            "(RGB) masks to an index/palette PNG first"
        )
    return torch.from_numpy(array).to(torch.int64)


def _check_pair_size(
    image: torch.Tensor, mask: torch.Tensor, image_path: Path, mask_path: Path
) -> None:
    if tuple(image.shape[-2:]) != tuple(mask.shape):
        h, w = image.shape[-2:]
        mh, mw = mask.shape
        raise CnnzooError(
            f"mask file {mask_path} is {mw}x{mh} but its image {image_path} is {w}x{h}: "
            "expected the same width and height"
        )


def _check_labels(mask: torch.Tensor, num_classes: int | None, mask_path: Path) -> None:
    if num_classes is None:
        return
    bad = mask[(mask >= num_classes) & (mask != IGNORE_INDEX)]
    if bad.numel():
        raise CnnzooError(
            f"mask file {mask_path} has label {int(bad.max())}: expected 0..{num_classes - 1} "
            f"or {IGNORE_INDEX} (ignore)"
        )


class SegmentationDataset(Dataset[SegSample]):
    """Base of every format: ``pairs`` of (image path, mask path), decoded lazily.

    Subclasses fill ``pairs``; this class holds the channels, class names, transform and
    the per-item decoding and checks.
    """

    ignore_index: int = IGNORE_INDEX
    pairs: list[tuple[Path, Path]]

    def __init__(
        self,
        channels: int,
        class_names: Sequence[str],
        num_classes: int | None,
        transform: JointTransform | None,
    ) -> None:
        self.channels = _check_channels(channels)
        self.class_names = list(class_names)
        self.num_classes = num_classes
        self.transform = transform

    def __len__(self) -> int:
        return len(self.pairs)

    def _mask(self, mask_path: Path) -> torch.Tensor:
        return load_mask(mask_path)

    def __getitem__(self, index: int) -> SegSample:
        image_path, mask_path = self.pairs[index]
        image = load_image(image_path, self.channels)
        mask = self._mask(mask_path)
        _check_pair_size(image, mask, image_path, mask_path)
        _check_labels(mask, self.num_classes, mask_path)
        if self.transform is not None:
            image, mask = self.transform(image, mask)
        return image, mask


def _check_channels(channels: int) -> int:
    if channels not in (1, 3):
        raise CnnzooError(f"channels={channels!r} is not supported: expected 1 or 3")
    return channels


def _files_by_stem(folder: Path, extensions: tuple[str, ...], what: str) -> dict[str, Path]:
    """``relative/path/without/suffix -> file`` for files under ``folder`` (recursive)."""
    if not folder.exists():
        raise CnnzooError(f"{what} folder {folder} does not exist")
    if not folder.is_dir():
        raise CnnzooError(f"{what} folder {folder} is a file, expected a folder")
    found: dict[str, Path] = {}
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if name.startswith(".") or not name.lower().endswith(extensions):
                continue
            path = Path(dirpath) / name
            key = path.relative_to(folder).with_suffix("").as_posix()
            if key in found:
                raise CnnzooError(
                    f"{what} folder {folder} has two files for {key!r}: {found[key].name} and "
                    f"{name}; keep one"
                )
            found[key] = path
    if not found:
        raise CnnzooError(
            f"{what} folder {folder} is empty: expected files ending in {', '.join(extensions)}"
        )
    return found


class MaskFolderDataset(SegmentationDataset):
    """Your own segmentation data: an image folder and a mask folder paired by file stem.

    ::

        images_dir/0001.jpg    masks_dir/0001.png
        images_dir/0002.png    masks_dir/0002.png
        images_dir/sub/x.webp  masks_dir/sub/x.png

    Images may have any extension in :data:`~cnnzoo.data.folder.IMAGE_EXTENSIONS`; masks are
    ``.png`` label images (see :func:`load_mask`). Sub-folders are allowed; the relative path
    without its extension must match.

    Args:
        images_dir: folder of images.
        masks_dir: folder of masks.
        channels: 1 or 3 image channels.
        num_classes: when given, mask values must be ``< num_classes`` or 255 (checked per
            item); also sets ``class_names`` to ``"0", "1", ...`` unless ``class_names`` is given.
        class_names: names of the classes (``num_classes`` defaults to their count).
        transform: optional joint transform of ``(image, mask)``, e.g. a
            ``functools.partial`` of :func:`joint_transform`.

    Without ``num_classes`` and ``class_names``, ``class_names`` is empty; call
    :meth:`infer_num_classes` to scan the masks.

    Raises:
        CnnzooError: at construction for missing or empty folders, an image without a mask or a
            mask without an image (naming the file), or mismatched ``num_classes`` and
            ``class_names``; per item, naming the file, for a mask whose size differs from its
            image, a label out of range, or an undecodable/RGB mask.
    """

    def __init__(
        self,
        images_dir: str | os.PathLike[str],
        masks_dir: str | os.PathLike[str],
        channels: int = 3,
        num_classes: int | None = None,
        class_names: Sequence[str] | None = None,
        transform: JointTransform | None = None,
    ) -> None:
        if num_classes is not None and (not isinstance(num_classes, int) or num_classes < 1):
            raise CnnzooError(f"num_classes={num_classes!r} is invalid: expected an int >= 1")
        if class_names is not None:
            if num_classes is not None and len(class_names) != num_classes:
                raise CnnzooError(
                    f"{len(class_names)} class names were given for num_classes={num_classes}: "
                    "expected one name per class"
                )
            num_classes = len(class_names)
        names = (
            class_names if class_names is not None else [str(i) for i in range(num_classes or 0)]
        )
        super().__init__(channels, names, num_classes, transform)
        self.images_dir = Path(images_dir).expanduser()
        self.masks_dir = Path(masks_dir).expanduser()
        images = _files_by_stem(self.images_dir, IMAGE_EXTENSIONS, "image")
        masks = _files_by_stem(self.masks_dir, (".png",), "mask")
        for key, path in images.items():
            if key not in masks:
                raise CnnzooError(
                    f"image {path} has no mask: expected {self.masks_dir / (key + '.png')}"
                )
        for key, path in masks.items():
            if key not in images:
                raise CnnzooError(
                    f"mask {path} has no image: expected {self.images_dir / key}.<ext> with "
                    f"<ext> one of {', '.join(IMAGE_EXTENSIONS)}"
                )
        self.pairs = [(images[k], masks[k]) for k in sorted(images)]

    def infer_num_classes(self) -> int:
        """Scan every mask for the largest label other than 255.

        Sets ``num_classes`` and (when empty) ``class_names`` to ``"0", "1", ...``.

        Returns:
            the largest label + 1 (at least 1).

        Raises:
            CnnzooError: naming a mask that cannot be read.
        """
        top = 0
        for _, mask_path in self.pairs:
            mask = load_mask(mask_path)
            valid = mask[mask != IGNORE_INDEX]
            if valid.numel():
                top = max(top, int(valid.max()))
        self.num_classes = top + 1
        if not self.class_names:
            self.class_names = [str(i) for i in range(self.num_classes)]
        return self.num_classes


# --------------------------------------------------------------------------------------------
# Joint transforms
# --------------------------------------------------------------------------------------------


def _hw(value: int | Sequence[int], name: str) -> tuple[int, int]:
    pair = (value, value) if isinstance(value, int) else tuple(value)
    if len(pair) != 2 or not all(isinstance(v, int) and v > 0 for v in pair):
        raise CnnzooError(
            f"{name}={value!r} is invalid: expected a positive int or (height, width)"
        )
    return pair  # type: ignore[return-value]


def joint_transform(
    image: torch.Tensor,
    mask: torch.Tensor,
    size: int | Sequence[int] | None = None,
    crop: int | Sequence[int] | None = None,
    hflip: bool = False,
    generator: torch.Generator | None = None,
    seed: int | None = None,
) -> SegSample:
    """Resize, randomly crop and randomly flip an image and its mask identically.

    Steps, in order (each optional):

    1. ``size``: resize to ``(height, width)`` (int: square); the image bilinearly with
       antialiasing, the mask with nearest neighbour (labels are never blended);
    2. ``crop``: a random ``(height, width)`` window (int: square), the same for both; if the
       image is smaller, it is first padded at the bottom/right (image with 0, mask with 255);
    3. ``hflip``: flip both left-right with probability 1/2.

    Randomness comes from ``generator``, else from a new generator seeded with ``seed``, else
    from torch's global generator.

    Args:
        image: uint8 ``(C, H, W)``.
        mask: integer ``(H, W)`` labels (0..255).
        size: resize target, or None.
        crop: crop window, or None.
        hflip: whether to flip at random.
        generator: a ``torch.Generator`` for the random choices.
        seed: used when ``generator`` is None.

    Returns:
        ``(image uint8 (C, h, w), mask int64 (h, w))``.

    Raises:
        CnnzooError: for bad ``size``/``crop`` or an image and mask of different sizes.
    """
    if image.ndim != 3 or mask.ndim != 2 or tuple(image.shape[-2:]) != tuple(mask.shape):
        raise CnnzooError(
            f"image {tuple(image.shape)} and mask {tuple(mask.shape)} do not match: expected "
            "(C, H, W) and (H, W)"
        )
    if generator is None and seed is not None:
        generator = torch.Generator().manual_seed(seed)
    img = tv_tensors.Image(image)
    # Masks go through the kernels as uint8 (0..255), which every resize/pad kernel supports.
    msk = tv_tensors.Mask(mask.to(torch.uint8).unsqueeze(0))
    if size is not None:
        h, w = _hw(size, "size")
        img = TF.resize(img, [h, w], interpolation=InterpolationMode.BILINEAR, antialias=True)
        msk = TF.resize(msk, [h, w], interpolation=InterpolationMode.NEAREST)
    if crop is not None:
        ch, cw = _hw(crop, "crop")
        height, width = img.shape[-2:]
        pad_h, pad_w = max(ch - height, 0), max(cw - width, 0)
        if pad_h or pad_w:
            padding = [0, 0, pad_w, pad_h]  # left, top, right, bottom
            img = TF.pad(img, padding, fill=0)
            msk = TF.pad(msk, padding, fill=IGNORE_INDEX)
            height, width = height + pad_h, width + pad_w
        top = int(torch.randint(0, height - ch + 1, (1,), generator=generator))
        left = int(torch.randint(0, width - cw + 1, (1,), generator=generator))
        img = TF.crop(img, top, left, ch, cw)
        msk = TF.crop(msk, top, left, ch, cw)
    if hflip and bool(torch.rand((), generator=generator) < 0.5):
        img = TF.horizontal_flip(img)
        msk = TF.horizontal_flip(msk)
    return img.as_subclass(torch.Tensor), msk.as_subclass(torch.Tensor)[0].to(torch.int64)


# --------------------------------------------------------------------------------------------
# Data specs
# --------------------------------------------------------------------------------------------


def parse_seg_data(spec: str) -> tuple[str, str]:
    """Split a segmentation data spec ``"scheme:path"``.

    Schemes: ``voc`` (VOCdevkit/VOC2012), ``cityscapes`` (folder with leftImg8bit/ and gtFine/),
    ``masks`` (your own images + masks), ``scenes`` (a folder written by ``cnnzoo data scenes``,
    read like ``masks``). The scheme is case-insensitive; ``~`` in the path is
    expanded.

    Returns:
        ``(scheme, path)``, the scheme in lower case.

    Raises:
        CnnzooError: for a spec without ``:``, an unknown scheme (listing the valid ones) or an
            empty path.
    """
    valid = ", ".join(f"{s}:PATH" for s in SEG_DATA_SCHEMES)
    scheme, sep, path = spec.partition(":")
    scheme = scheme.strip().lower()
    if not sep or scheme not in SEG_DATA_SCHEMES:
        raise CnnzooError(f"segmentation data {spec!r} is not understood: expected one of {valid}")
    path = path.strip()
    if not path:
        raise CnnzooError(f"segmentation data {spec!r} has no path: expected {scheme}:PATH")
    return scheme, os.path.expanduser(path)
