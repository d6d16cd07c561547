"""Pascal VOC 2012 segmentation (``VOCdevkit/VOC2012``): palette PNG masks, 21 classes,
255 = void, ImageSets/Segmentation split files."""

from __future__ import annotations

import os
from pathlib import Path

from cnnzoo.data.segmentation import (
    JointTransform,
    SegmentationDataset,
)
from cnnzoo.errors import CnnzooError

VOC_CLASSES: tuple[str, ...] = (
    "background",
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
)


def _voc_root(root: Path) -> Path:
    for candidate in (root, root / "VOC2012", root / "VOCdevkit" / "VOC2012"):
        if (candidate / "ImageSets" / "Segmentation").is_dir():
            return candidate
    raise CnnzooError(
        f"VOC root {root} has no ImageSets/Segmentation folder: expected VOCdevkit/VOC2012 "
        "(with ImageSets/Segmentation, JPEGImages, SegmentationClass) or the VOCdevkit above it"
    )


class VOCSegmentation(SegmentationDataset):
    """Pascal VOC 2012 semantic segmentation (21 classes: background + 20; 255 = void).

    ::

        root/ImageSets/Segmentation/{split}.txt     one image id per line
        root/JPEGImages/{id}.jpg
        root/SegmentationClass/{id}.png             palette PNG, palette index = class

    Args:
        root: ``VOCdevkit/VOC2012``, or the ``VOCdevkit`` folder (or its parent).
        split: the name of a list in ``ImageSets/Segmentation`` (``train``, ``val``,
            ``trainval``, ...).
        channels: 1 or 3 image channels.
        transform: optional joint transform of ``(image, mask)``.

    Raises:
        CnnzooError: for a wrong root, a missing split list (listing the ones present), an
            empty list, or a listed id whose JPEG or mask is missing; per item, naming the file,
            for bad masks (size, label, mode).
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        split: str = "train",
        channels: int = 3,
        transform: JointTransform | None = None,
    ) -> None:
        super().__init__(channels, VOC_CLASSES, len(VOC_CLASSES), transform)
        path = Path(root).expanduser()
        if not path.is_dir():
            raise CnnzooError(f"VOC root {path} does not exist or is not a folder")
        self.root = _voc_root(path)
        self.split = split
        lists = self.root / "ImageSets" / "Segmentation"
        split_file = lists / f"{split}.txt"
        if not split_file.is_file():
            present = sorted(p.stem for p in lists.glob("*.txt"))
            raise CnnzooError(
                f"VOC split file {split_file} does not exist: expected split one of {present}"
            )
        ids = [line.strip() for line in split_file.read_text().splitlines() if line.strip()]
        if not ids:
            raise CnnzooError(f"VOC split file {split_file} lists no image ids")
        self.ids = ids
        self.pairs = []
        for image_id in ids:
            image = self.root / "JPEGImages" / f"{image_id}.jpg"
            mask = self.root / "SegmentationClass" / f"{image_id}.png"
            for needed in (image, mask):
                if not needed.is_file():
                    raise CnnzooError(
                        f"VOC file {needed} (id {image_id!r} in {split_file.name}) does not exist"
                    )
            self.pairs.append((image, mask))
