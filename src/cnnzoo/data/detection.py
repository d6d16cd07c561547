"""Object-detection data: image + boxes and labels.

Every dataset here yields ``(image, target)``:

- ``image``: uint8 tensor ``(C, H, W)`` (C = 1 or 3), decoded with
  :func:`cnnzoo.data.folder.load_image`;
- ``target``: ``{"boxes": float32 (N, 4), "labels": int64 (N,)}`` with boxes as
  ``x1, y1, x2, y2`` in absolute pixels (continuous coordinates: a box covering pixel
  columns 3..5 inclusive is ``x1=3, x2=6``) and labels ``0..C-1`` (background is *not* a
  label; models add it themselves); Pascal VOC also gives ``"difficult"``: bool ``(N,)``.

and has ``.class_names`` (``list[str]``, label ``i`` is ``class_names[i]``) and ``.report``
(a :class:`DropReport` counting boxes that were clipped or dropped while reading).

Formats:

- :class:`cnnzoo.data.formats.coco.COCODetection`: a COCO ``instances`` JSON (bbox ``x, y, w, h``);
- :class:`cnnzoo.data.formats.voc.VOCDetection`: Pascal VOC XML (1-based inclusive boxes);
- :class:`cnnzoo.data.formats.yolo.YOLODetection`: YOLO txt labels + ``data.yaml``;
- ``scenes``: the synthetic scenes' COCO JSON (:mod:`cnnzoo.data.scenes`).

Box policy (:func:`check_boxes`, applied when the annotations are read): a box with zero or
negative width or height, or a non-finite coordinate, is an error naming the file (and line
or annotation id); a box partly outside the image is clipped to it and counted; a box fully
outside is dropped and counted.

:func:`detection_transform` resizes and flips an image with its boxes
(``torchvision.transforms.v2`` on ``tv_tensors.BoundingBoxes``) and then drops degenerate
boxes like ``SanitizeBoundingBoxes``; :func:`detection_collate` batches samples of different
sizes. The formats (:mod:`cnnzoo.data.formats`) build on these records and know nothing
above them; :mod:`cnnzoo.data.det_sources` turns a ``"scheme:path"`` data spec into a dataset.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision import tv_tensors
from torchvision.transforms.v2 import InterpolationMode
from torchvision.transforms.v2 import functional as TF

from cnnzoo.data.folder import load_image
from cnnzoo.documents import is_file
from cnnzoo.errors import CnnzooError

DetTarget = dict[str, torch.Tensor]
"""``{"boxes": float32 (N, 4) xyxy, "labels": int64 (N,)[, "difficult": bool (N,)]}``."""

DetSample = tuple[torch.Tensor, DetTarget]
"""``(image uint8 (C, H, W), target)``."""

DetTransform = Callable[[torch.Tensor, DetTarget], DetSample]
"""A function of ``(image, target)`` returning a transformed ``(image, target)``."""

DET_DATA_SCHEMES: tuple[str, ...] = ("coco", "voc", "yolo", "scenes")

CLIP_TOLERANCE = 1e-3
"""Boxes sticking out of the image by at most this many pixels are clipped without counting."""


# --------------------------------------------------------------------------------------------
# Records and the box policy
# --------------------------------------------------------------------------------------------


@dataclass
class DropReport:
    """Counts of boxes changed or left out while reading annotations.

    Attributes:
        clipped: boxes partly outside the image, clipped to it.
        outside: boxes fully outside the image, dropped.
        crowd: COCO ``iscrowd=1`` annotations, skipped.
        difficult: VOC ``difficult`` objects, dropped (``keep_difficult=False``).
        examples: the first few places (file, line or annotation id) of clipped/dropped boxes.
    """

    clipped: int = 0
    outside: int = 0
    crowd: int = 0
    difficult: int = 0
    examples: list[str] = field(default_factory=list)

    def note(self, where: str) -> None:
        """Remember ``where`` as an example (at most 5 are kept)."""
        if len(self.examples) < 5:
            self.examples.append(where)

    @property
    def dropped(self) -> int:
        """Boxes left out for any reason."""
        return self.outside + self.crowd + self.difficult

    def __str__(self) -> str:
        text = (
            f"{self.clipped} boxes clipped to the image, {self.outside} outside the image "
            f"dropped, {self.crowd} crowd annotations skipped, {self.difficult} difficult "
            "objects dropped"
        )
        if self.examples:
            text += f" (e.g. {'; '.join(self.examples)})"
        return text


@dataclass
class DetRecord:
    """One annotated image: its file, its size and its boxes in original pixels."""

    path: Path
    width: int
    height: int
    boxes: torch.Tensor  # float32 (N, 4) xyxy
    labels: torch.Tensor  # int64 (N,)
    difficult: torch.Tensor | None = None  # bool (N,)


def check_boxes(
    boxes: torch.Tensor | Sequence[Sequence[float]],
    width: int,
    height: int,
    where: str | Sequence[str],
    report: DropReport | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Apply the box policy to ``x1, y1, x2, y2`` boxes of a ``width x height`` image.

    Args:
        boxes: ``(N, 4)`` xyxy absolute pixel coordinates.
        width: image width in pixels.
        height: image height in pixels.
        where: the file the boxes come from, or one place per box (``"file:line"``,
            ``"file annotation id 7"``), used in errors and report examples.
        report: counts clipped and dropped boxes when given.

    Returns:
        ``(boxes, keep)``: float32 ``(N, 4)`` boxes clipped to the image, and a bool ``(N,)``
        mask of the boxes to keep (False for boxes fully outside the image).

    Raises:
        CnnzooError: naming the place, for a non-finite coordinate or a box with zero or
            negative width or height, or for a wrong shape.
    """
    t = torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4) if len(boxes) else None
    if t is None:
        return torch.zeros((0, 4), dtype=torch.float32), torch.zeros(0, dtype=torch.bool)
    places = [where] * len(t) if isinstance(where, str) else list(where)
    if len(places) != len(t):
        raise CnnzooError(f"check_boxes got {len(t)} boxes but {len(places)} places")
    keep = torch.ones(len(t), dtype=torch.bool)
    for i, (x1, y1, x2, y2) in enumerate(t.tolist()):
        if not all(map(_finite, (x1, y1, x2, y2))):
            raise CnnzooError(f"{places[i]}: box {[x1, y1, x2, y2]} has a non-finite coordinate")
        if x2 <= x1 or y2 <= y1:
            raise CnnzooError(
                f"{places[i]}: box x1={x1:g} y1={y1:g} x2={x2:g} y2={y2:g} has zero or negative "
                f"size ({x2 - x1:g} x {y2 - y1:g}); fix or remove it"
            )
        if x2 <= 0 or y2 <= 0 or x1 >= width or y1 >= height:
            keep[i] = False
            if report is not None:
                report.outside += 1
                report.note(f"{places[i]} outside {width}x{height}")
            continue
        tol = CLIP_TOLERANCE
        outside = x1 < -tol or y1 < -tol or x2 > width + tol or y2 > height + tol
        if outside and report is not None:
            report.clipped += 1
            report.note(f"{places[i]} clipped to {width}x{height}")
    out = t.clone()
    out[:, 0::2] = out[:, 0::2].clamp(0, width)
    out[:, 1::2] = out[:, 1::2].clamp(0, height)
    return out, keep


def _finite(v: float) -> bool:
    return v == v and abs(v) != float("inf")


def make_record(
    path: Path,
    width: int,
    height: int,
    boxes: Sequence[Sequence[float]],
    labels: Sequence[int],
    places: Sequence[str],
    report: DropReport,
    difficult: Sequence[bool] | None = None,
) -> DetRecord:
    """Build a :class:`DetRecord`, applying :func:`check_boxes` and dropping what it drops.

    Returns:
        the record (boxes clipped, boxes fully outside the image left out).

    Raises:
        CnnzooError: as :func:`check_boxes`.
    """
    checked, keep = check_boxes(boxes, width, height, places, report)
    label_t = torch.as_tensor(list(labels), dtype=torch.int64).reshape(-1)
    diff_t = None
    if difficult is not None:
        diff_t = torch.as_tensor(list(difficult), dtype=torch.bool).reshape(-1)[keep]
    return DetRecord(path, int(width), int(height), checked[keep], label_t[keep], diff_t)


def image_size(path: Path) -> tuple[int, int]:
    """Return ``(width, height)`` of an image file, reading only its header.

    The EXIF orientation is applied (as :func:`~cnnzoo.data.folder.load_image` does).

    Raises:
        CnnzooError: naming the file if it is missing or not an image.
    """
    if not is_file(path):
        raise CnnzooError(f"image file {path} does not exist")
    try:
        with Image.open(path) as img:
            w, h = img.size
            orientation = img.getexif().get(0x0112, 1)
    except Exception as exc:  # PIL raises many types for bad files
        raise CnnzooError(
            f"image file {path} cannot be read ({type(exc).__name__}: {exc}); replace or remove it"
        ) from None
    return (h, w) if orientation in (5, 6, 7, 8) else (w, h)


# --------------------------------------------------------------------------------------------
# The dataset base
# --------------------------------------------------------------------------------------------


class DetectionDataset(Dataset[DetSample]):
    """Base of every format: ``records`` (one :class:`DetRecord` per image), decoded lazily.

    Subclasses parse their annotations into ``records`` (through :func:`make_record`, which
    counts into ``report``); this class holds the channels, class names and transform and
    decodes the images.

    Args:
        channels: 1 or 3 image channels.
        class_names: label ``i`` is ``class_names[i]``.
        transform: optional function of ``(image, target)``, e.g. a ``functools.partial`` of
            :func:`detection_transform`.

    Raises:
        CnnzooError: per item, naming the file, when the image cannot be decoded or its size
            differs from the annotation's.
    """

    records: list[DetRecord]

    def __init__(
        self,
        channels: int,
        class_names: Sequence[str],
        transform: DetTransform | None = None,
    ) -> None:
        if channels not in (1, 3):
            raise CnnzooError(f"channels={channels!r} is not supported: expected 1 or 3")
        self.channels = channels
        self.class_names = list(class_names)
        self.transform = transform
        self.report = DropReport()
        self.records = []

    def __len__(self) -> int:
        return len(self.records)

    def target(self, index: int) -> DetTarget:
        """Return the untransformed target of item ``index`` without decoding its image."""
        rec = self.records[index]
        target = {"boxes": rec.boxes.clone(), "labels": rec.labels.clone()}
        if rec.difficult is not None:
            target["difficult"] = rec.difficult.clone()
        return target

    def __getitem__(self, index: int) -> DetSample:
        rec = self.records[index]
        image = load_image(rec.path, self.channels)
        h, w = image.shape[-2:]
        if (w, h) != (rec.width, rec.height):
            raise CnnzooError(
                f"image file {rec.path} is {w}x{h} but its annotation says "
                f"{rec.width}x{rec.height}: expected the same width and height"
            )
        target = self.target(index)
        if self.transform is not None:
            image, target = self.transform(image, target)
        return image, target


# --------------------------------------------------------------------------------------------
# Transforms and batching
# --------------------------------------------------------------------------------------------


def _hw(value: int | Sequence[int]) -> tuple[int, int]:
    pair = (value, value) if isinstance(value, int) else tuple(value)
    if len(pair) != 2 or not all(isinstance(v, int) and v > 0 for v in pair):
        raise CnnzooError(f"size={value!r} is invalid: expected a positive int or (height, width)")
    return pair  # type: ignore[return-value]


def detection_transform(
    image: torch.Tensor,
    target: DetTarget,
    size: int | Sequence[int] | None = None,
    hflip: bool = False,
    generator: torch.Generator | None = None,
    min_size: float = 1.0,
) -> DetSample:
    """Resize and randomly flip an image and its boxes together, then drop degenerate boxes.

    Steps, in order (each optional):

    1. ``size``: resize to ``(height, width)`` (int: square), the image bilinearly with
       antialiasing, the boxes by the same factors (aspect ratio is not kept);
    2. ``hflip``: flip both left-right with probability 1/2 (``generator``, else torch's
       global generator);
    3. always: boxes are clamped to the image and those narrower or lower than ``min_size``
       pixels are dropped with their labels (and ``difficult``), as
       ``torchvision.transforms.v2.SanitizeBoundingBoxes`` does.

    Args:
        image: uint8 ``(C, H, W)``.
        target: ``{"boxes": (N, 4) xyxy, "labels": (N,), ...}``; every other tensor of
            length N is filtered with the boxes.
        size: resize target, or None.
        hflip: whether to flip at random.
        generator: a ``torch.Generator`` for the random choice.
        min_size: the smallest box side kept, in pixels.

    Returns:
        ``(image uint8 (C, h, w), target)`` with float32 boxes in the new pixel coordinates.

    Raises:
        CnnzooError: for a bad ``size``, an image that is not ``(C, H, W)``, or boxes that are
            not ``(N, 4)``.
    """
    if image.ndim != 3:
        raise CnnzooError(f"image {tuple(image.shape)} is not (C, H, W)")
    raw = torch.as_tensor(target["boxes"], dtype=torch.float32)
    if raw.ndim != 2 or raw.shape[1] != 4:
        raise CnnzooError(f"boxes {tuple(raw.shape)} are not (N, 4)")
    n = len(raw)
    height, width = image.shape[-2:]
    img = tv_tensors.Image(image)
    boxes = tv_tensors.BoundingBoxes(raw, format="XYXY", canvas_size=(int(height), int(width)))
    if size is not None:
        h, w = _hw(size)
        img = TF.resize(img, [h, w], interpolation=InterpolationMode.BILINEAR, antialias=True)
        boxes = TF.resize(boxes, [h, w])
    if hflip and bool(torch.rand((), generator=generator) < 0.5):
        img = TF.horizontal_flip(img)
        boxes = TF.horizontal_flip(boxes)
    boxes = TF.clamp_bounding_boxes(boxes)
    _, valid = TF.sanitize_bounding_boxes(boxes, min_size=min_size, min_area=min_size)
    out: DetTarget = {}
    for key, value in target.items():
        if key == "boxes":
            out[key] = boxes.as_subclass(torch.Tensor)[valid].to(torch.float32)
        elif isinstance(value, torch.Tensor) and value.ndim >= 1 and len(value) == n:
            out[key] = value[valid]
        else:
            out[key] = value
    return img.as_subclass(torch.Tensor), out


def detection_collate(
    samples: Sequence[DetSample],
) -> tuple[torch.Tensor, list[DetTarget]]:
    """Batch detection samples of different sizes (a ``DataLoader`` ``collate_fn``).

    Images are padded with 0 at the bottom and right to the largest height and width in the
    batch, so boxes keep their coordinates.

    Returns:
        ``(images uint8 (N, C, H, W), [target, ...])``.

    Raises:
        CnnzooError: for an empty batch or images with different channel counts or dtypes.
    """
    if not samples:
        raise CnnzooError("detection_collate got an empty batch")
    images = [s[0] for s in samples]
    channels = {(int(im.shape[0]), im.dtype) for im in images}
    if len(channels) != 1:
        raise CnnzooError(
            f"detection batch mixes channel counts/dtypes {sorted(map(str, channels))}: "
            "expected every image with the same"
        )
    c, dtype = channels.pop()
    h = max(int(im.shape[1]) for im in images)
    w = max(int(im.shape[2]) for im in images)
    batch = torch.zeros((len(images), c, h, w), dtype=dtype)
    for i, im in enumerate(images):
        batch[i, :, : im.shape[1], : im.shape[2]] = im
    return batch, [s[1] for s in samples]
