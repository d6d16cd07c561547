"""Pascal VOC 2012 segmentation (``VOCdevkit/VOC2012``): palette PNG masks, 21 classes,
255 = void, ImageSets/Segmentation split files; and VOC object detection (Annotations XML,
ImageSets/Main split files, 1-based inclusive boxes)."""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path

from cnnzoo.data.detection import (
    DetectionDataset,
    DetRecord,
    DetTransform,
    image_size,
    make_record,
)
from cnnzoo.data.segmentation import (
    JointTransform,
    SegmentationDataset,
)
from cnnzoo.documents import is_file, read_text
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


def _checked_ids(ids: list[str], split_file: Path) -> list[str]:
    """``ids`` if each is a plain file stem (no folder, ``..`` or NUL, which would lead out of
    the VOC folders); else a CnnzooError naming ``split_file``."""
    for image_id in ids:
        if image_id != Path(image_id).name or image_id in (".", "..") or "\0" in image_id:
            raise CnnzooError(
                f"VOC split file {split_file}: id {image_id!r:.60} is not a file name: expected "
                "image ids such as 2008_000008"
            )
    return ids


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
        text = read_text(split_file, "VOC split file")
        ids = [line.strip() for line in text.splitlines() if line.strip()]
        if not ids:
            raise CnnzooError(f"VOC split file {split_file} lists no image ids")
        self.ids = _checked_ids(ids, split_file)
        self.pairs = []
        for image_id in ids:
            image = self.root / "JPEGImages" / f"{image_id}.jpg"
            mask = self.root / "SegmentationClass" / f"{image_id}.png"
            for needed in (image, mask):
                if not is_file(needed):
                    raise CnnzooError(
                        f"VOC file {needed} (id {image_id!r} in {split_file.name}) does not exist"
                    )
            self.pairs.append((image, mask))


# --------------------------------------------------------------------------------------------
# Detection
# --------------------------------------------------------------------------------------------

VOC_DET_CLASSES: tuple[str, ...] = VOC_CLASSES[1:]
"""The 20 VOC object classes, in the standard order (detection label ``i``)."""

VOC_CLASSES_FILE = "classes.txt"
"""Optional file in the VOC root listing other class names, one per line (see VOCDetection)."""


def _voc_det_root(root: Path) -> Path:
    for candidate in (
        root,
        root / "VOC2012",
        root / "VOC2007",
        root / "VOCdevkit" / "VOC2012",
        root / "VOCdevkit" / "VOC2007",
    ):
        if (candidate / "ImageSets" / "Main").is_dir() and (candidate / "Annotations").is_dir():
            return candidate
    raise CnnzooError(
        f"VOC root {root} has no Annotations and ImageSets/Main folders: expected "
        "VOCdevkit/VOC2007 or VOC2012 (with Annotations, ImageSets/Main, JPEGImages) or the "
        "VOCdevkit above it"
    )


def read_voc_xml(path: Path) -> ET.Element:
    """Parse a VOC annotation file safely (no DOCTYPE or ENTITY declarations).

    Returns:
        the root element.

    Raises:
        CnnzooError: naming the file for a missing or undecodable file, a DOCTYPE/ENTITY
            declaration (refused: entity expansion), or malformed XML (with its line).
    """
    if not is_file(path):
        raise CnnzooError(f"VOC annotation file {path} does not exist")
    try:
        text = path.read_bytes().decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise CnnzooError(f"VOC annotation file {path} cannot be read ({exc})") from None
    upper = text.upper()
    if "<!DOCTYPE" in upper or "<!ENTITY" in upper:
        line = text[: max(upper.find("<!DOCTYPE"), upper.find("<!ENTITY"))].count("\n") + 1
        raise CnnzooError(
            f"VOC annotation file {path}:{line}: DOCTYPE/ENTITY declarations are refused "
            "(entity expansion); remove them"
        )
    try:
        return ET.fromstring(text)
    except ET.ParseError as exc:
        line = exc.position[0] if exc.position else 0
        raise CnnzooError(f"VOC annotation file {path}:{line}: malformed XML ({exc})") from None


def _xml_number(node: ET.Element | None, tag: str, path: Path, where: str) -> float:
    child = node.find(tag) if node is not None else None
    text = (child.text or "").strip() if child is not None else ""
    try:
        value = float(text)
    except ValueError:
        raise CnnzooError(
            f"VOC annotation file {path}: {where} has <{tag}>{text}</{tag}>: expected a number"
        ) from None
    if value != value or abs(value) == float("inf"):
        raise CnnzooError(f"VOC annotation file {path}: {where} has a non-finite <{tag}>")
    return value


class VOCDetection(DetectionDataset):
    """Pascal VOC object detection (VOC2007 / VOC2012 ``Main`` image sets).

    ::

        root/ImageSets/Main/{split}.txt     one image id per line
        root/Annotations/{id}.xml           size, and per object: name, difficult, bndbox
        root/JPEGImages/{filename}          <filename> of the XML, else {id}.jpg

    VOC boxes are 1-based with inclusive corners; they become 0-based continuous
    ``x1, y1, x2, y2 = xmin - 1, ymin - 1, xmax, ymax`` (a box on pixels 1..10 is 0..10).
    Targets carry ``"difficult"`` (bool). Classes are the 20 of :data:`VOC_DET_CLASSES` in
    the standard order, unless ``class_names`` is given or the root holds a ``classes.txt``
    (written by :func:`cnnzoo.data.convert.write_voc` for other class lists).

    Args:
        root: ``VOCdevkit/VOC2007`` (or ``VOC2012``), or the ``VOCdevkit`` folder (or its
            parent).
        split: the name of a list in ``ImageSets/Main`` (``train``, ``val``, ``trainval``,
            ``test``).
        channels: 1 or 3 image channels.
        transform: optional function of ``(image, target)``.
        keep_difficult: False drops ``difficult`` objects (counted in ``report.difficult``).
        class_names: the class list (label = position); None: see above.

    Raises:
        CnnzooError: for a wrong root, a missing split list (listing the ones present), an
            empty list, or, naming the file, a missing/malformed XML (with its line), a
            DOCTYPE/ENTITY declaration, an unknown class name, a missing number, or a box with
            zero or negative size; per item, naming the file, for an image that cannot be
            decoded or whose size differs from the XML's.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        split: str = "trainval",
        channels: int = 3,
        transform: DetTransform | None = None,
        keep_difficult: bool = True,
        class_names: Sequence[str] | None = None,
    ) -> None:
        path = Path(root).expanduser()
        if not path.is_dir():
            raise CnnzooError(f"VOC root {path} does not exist or is not a folder")
        self.root = _voc_det_root(path)
        if class_names is None:
            names_file = self.root / VOC_CLASSES_FILE
            if names_file.is_file():
                text = read_text(names_file, "VOC class list")
                class_names = [n.strip() for n in text.splitlines() if n.strip()]
            else:
                class_names = VOC_DET_CLASSES
        super().__init__(channels, class_names, transform)
        self.split = split
        self.keep_difficult = keep_difficult
        lists = self.root / "ImageSets" / "Main"
        split_file = lists / f"{split}.txt"
        if not split_file.is_file():
            present = sorted(p.stem for p in lists.glob("*.txt") if "_" not in p.stem)
            raise CnnzooError(
                f"VOC split file {split_file} does not exist: expected split one of {present}"
            )
        text = read_text(split_file, "VOC split file")
        ids = [line.split()[0] for line in text.splitlines() if line.strip()]
        if not ids:
            raise CnnzooError(f"VOC split file {split_file} lists no image ids")
        self.ids = _checked_ids(ids, split_file)
        label_of = {name: i for i, name in enumerate(self.class_names)}
        for image_id in ids:
            self.records.append(self._parse(image_id, label_of))

    def _parse(self, image_id: str, label_of: dict[str, int]) -> DetRecord:
        xml_path = self.root / "Annotations" / f"{image_id}.xml"
        tree = read_voc_xml(xml_path)
        filename = (tree.findtext("filename") or "").strip()
        if filename != Path(filename).name:  # a path, not a name: JPEGImages/{id}.jpg instead
            filename = ""
        image_path = self.root / "JPEGImages" / (filename or f"{image_id}.jpg")
        if filename and not is_file(image_path):
            image_path = self.root / "JPEGImages" / f"{image_id}.jpg"
        size = tree.find("size")
        width = int(_xml_number(size, "width", xml_path, "<size>")) if size is not None else 0
        height = int(_xml_number(size, "height", xml_path, "<size>")) if size is not None else 0
        if width <= 0 or height <= 0:  # some files carry no or a zero size: read the image
            width, height = image_size(image_path)
        boxes, labels, difficult, places = [], [], [], []
        for number, obj in enumerate(tree.findall("object"), start=1):
            where = f"object {number}"
            name = (obj.findtext("name") or "").strip()
            if name not in label_of:
                raise CnnzooError(
                    f"VOC annotation file {xml_path}: {where} has unknown class {name!r}: "
                    f"expected one of {', '.join(self.class_names)}"
                )
            is_difficult = (obj.findtext("difficult") or "0").strip() in ("1", "true")
            if is_difficult and not self.keep_difficult:
                self.report.difficult += 1
                continue
            bnd = obj.find("bndbox")
            if bnd is None:
                raise CnnzooError(f"VOC annotation file {xml_path}: {where} has no <bndbox>")
            xmin, ymin, xmax, ymax = (
                _xml_number(bnd, tag, xml_path, where) for tag in ("xmin", "ymin", "xmax", "ymax")
            )
            boxes.append([xmin - 1, ymin - 1, xmax, ymax])
            labels.append(label_of[name])
            difficult.append(is_difficult)
            places.append(f"VOC annotation file {xml_path} {where} ({name})")
        return make_record(image_path, width, height, boxes, labels, places, self.report, difficult)
