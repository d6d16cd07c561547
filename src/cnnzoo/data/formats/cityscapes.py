"""Cityscapes segmentation: ``leftImg8bit`` images and ``gtFine`` ``*_labelIds.png`` masks,
mapped to the 19 train ids (everything else 255)."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from cnnzoo.data.segmentation import (
    IGNORE_INDEX,
    JointTransform,
    SegmentationDataset,
    load_mask,
)
from cnnzoo.errors import CnnzooError

CITYSCAPES_CLASSES: tuple[str, ...] = (
    "road",
    "sidewalk",
    "building",
    "wall",
    "fence",
    "pole",
    "traffic light",
    "traffic sign",
    "vegetation",
    "terrain",
    "sky",
    "person",
    "rider",
    "car",
    "truck",
    "bus",
    "train",
    "motorcycle",
    "bicycle",
)

CITYSCAPES_TRAIN_LABEL_IDS: tuple[int, ...] = (
    7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 31, 32, 33,
)  # fmt: skip
"""Cityscapes ``labelId`` of train id ``0..18`` (in order)."""


def _cityscapes_lut() -> torch.Tensor:
    lut = torch.full((256,), IGNORE_INDEX, dtype=torch.int64)
    for train_id, label_id in enumerate(CITYSCAPES_TRAIN_LABEL_IDS):
        lut[label_id] = train_id
    return lut


CITYSCAPES_ID_TO_TRAIN_ID: torch.Tensor = _cityscapes_lut()
"""256-entry int64 lookup table: ``labelId -> trainId`` (255 for ignored ids)."""


_CS_IMAGE_SUFFIX = "_leftImg8bit.png"
_CS_MASK_SUFFIX = "_gtFine_labelIds.png"


class CityscapesSegmentation(SegmentationDataset):
    """Cityscapes fine annotations, mapped to the 19 train classes (all other ids -> 255).

    ::

        root/leftImg8bit/{split}/{city}/{name}_leftImg8bit.png
        root/gtFine/{split}/{city}/{name}_gtFine_labelIds.png

    ``labelIds`` are mapped with :data:`CITYSCAPES_ID_TO_TRAIN_ID` (labelId 7 road -> 0, ...,
    33 bicycle -> 18).

    Args:
        root: the folder holding ``leftImg8bit/`` and ``gtFine/``.
        split: ``train``, ``val`` or ``test`` (a sub-folder of ``leftImg8bit``).
        channels: 1 or 3 image channels.
        transform: optional joint transform of ``(image, mask)`` (applied after the mapping).

    Raises:
        CnnzooError: for a wrong root, a missing split (listing the ones present), a split
            without images, or an image without its ``_gtFine_labelIds.png``; per item, naming
            the file, for bad masks.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        split: str = "train",
        channels: int = 3,
        transform: JointTransform | None = None,
    ) -> None:
        super().__init__(channels, CITYSCAPES_CLASSES, len(CITYSCAPES_CLASSES), transform)
        self.root = Path(root).expanduser()
        self.split = split
        images_root = self.root / "leftImg8bit"
        masks_root = self.root / "gtFine"
        if not images_root.is_dir() or not masks_root.is_dir():
            raise CnnzooError(
                f"Cityscapes root {self.root} lacks leftImg8bit/ or gtFine/: expected the folder "
                "holding both (leftImg8bit/{split}/{city}/*_leftImg8bit.png and "
                "gtFine/{split}/{city}/*_gtFine_labelIds.png)"
            )
        split_dir = images_root / split
        if not split_dir.is_dir():
            present = sorted(p.name for p in images_root.iterdir() if p.is_dir())
            raise CnnzooError(
                f"Cityscapes split folder {split_dir} does not exist: expected split one of "
                f"{present}"
            )
        self.pairs = []
        for image in sorted(split_dir.glob(f"*/*{_CS_IMAGE_SUFFIX}")):
            name = image.name[: -len(_CS_IMAGE_SUFFIX)]
            mask = masks_root / split / image.parent.name / f"{name}{_CS_MASK_SUFFIX}"
            if not mask.is_file():
                raise CnnzooError(f"Cityscapes image {image} has no label file: expected {mask}")
            self.pairs.append((image, mask))
        if not self.pairs:
            raise CnnzooError(
                f"Cityscapes split folder {split_dir} has no images: expected "
                f"{{city}}/*{_CS_IMAGE_SUFFIX}"
            )

    def _mask(self, mask_path: Path) -> torch.Tensor:
        return CITYSCAPES_ID_TO_TRAIN_ID[load_mask(mask_path)]
