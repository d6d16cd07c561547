"""YOLO (ultralytics) object detection: ``data.yaml`` + one ``.txt`` of boxes per image."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from cnnzoo.data.detection import DetectionDataset, DetTransform, image_size, make_record
from cnnzoo.data.folder import IMAGE_EXTENSIONS
from cnnzoo.documents import is_dir, is_file, load_yaml, read_text
from cnnzoo.errors import CnnzooError


def yolo_label_path(image: Path) -> Path:
    """Return the label file of an image (the ultralytics rule).

    The last ``/images/`` component of the path becomes ``/labels/`` and the extension
    ``.txt``: ``data/images/train/a.jpg`` -> ``data/labels/train/a.txt``. An image path without
    an ``images`` folder has its label file next to it.
    """
    parts = list(image.parts)
    for i in range(len(parts) - 2, -1, -1):
        if parts[i] == "images":
            parts[i] = "labels"
            return Path(*parts).with_suffix(".txt")
    return image.with_suffix(".txt")


def read_data_yaml(path: Path) -> dict[str, Any]:
    """Read a ``data.yaml`` safely (``yaml.safe_load``).

    Returns:
        the mapping.

    Raises:
        CnnzooError: naming the file if it is missing, malformed (with its line) or not a
            mapping, or a YAML bomb.
    """
    if not path.is_file():
        raise CnnzooError(f"YOLO data file {path} does not exist")
    data = load_yaml(path, "YOLO data file")  # bombs refused, errors name the line
    if not isinstance(data, dict):
        raise CnnzooError(f"YOLO data file {path} is not a mapping: expected names and train")
    return data


def _class_names(data: dict[str, Any], path: Path) -> list[str]:
    names = data.get("names")
    if isinstance(names, dict):
        if set(names) != set(range(len(names))):  # any keys: not only sortable ones
            raise CnnzooError(
                f"YOLO data file {path}: names has ids {list(names)!r:.80}: expected "
                f"0..{len(names) - 1}"
            )
        names = [names[k] for k in range(len(names))]
    if not isinstance(names, list) or not names:
        raise CnnzooError(
            f"YOLO data file {path}: names is missing or empty: expected a list or "
            "{id: name} mapping"
        )
    nc = data.get("nc")
    if nc is not None and nc != len(names):
        raise CnnzooError(f"YOLO data file {path}: nc={nc} but {len(names)} names are given")
    return [str(n) for n in names]


def _images_of(entry: Path, yaml_path: Path) -> list[Path]:
    if is_dir(entry):
        found = []
        for dirpath, dirnames, filenames in os.walk(entry, followlinks=True):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            found.extend(
                Path(dirpath) / f
                for f in sorted(filenames)
                if not f.startswith(".") and f.lower().endswith(IMAGE_EXTENSIONS)
            )
        return found
    if is_file(entry) and entry.suffix == ".txt":
        lines = read_text(entry, f"YOLO image list (from {yaml_path.name})").splitlines()
        return [(entry.parent / line.strip()) for line in lines if line.strip()]
    raise CnnzooError(
        f"YOLO data file {yaml_path}: {entry} does not exist: expected an image folder or a "
        ".txt list of images"
    )


def parse_yolo_labels(path: Path, num_classes: int) -> list[tuple[int, list[float], str]]:
    """Read one YOLO label file.

    Returns:
        ``[(class, [cx, cy, w, h], "file:line"), ...]`` (normalised coordinates); ``[]`` when
        the file does not exist (an image without objects).

    Raises:
        CnnzooError: naming ``file:line`` for a line without exactly 5 values, a class that is
            not an integer in ``0..num_classes-1``, a non-number or non-finite value, or a zero
            or negative width or height.
    """
    if not is_file(path):
        return []
    rows = []
    for number, line in enumerate(read_text(path, "YOLO label file").splitlines(), start=1):
        values = line.split()
        if not values:
            continue
        where = f"YOLO label file {path}:{number}"
        if len(values) != 5:
            raise CnnzooError(
                f"{where}: {len(values)} values: expected 'class cx cy w h' (segmentation "
                "polygons are not supported)"
            )
        try:
            cls = int(values[0])
        except ValueError:
            raise CnnzooError(f"{where}: class {values[0]!r} is not an integer") from None
        if not 0 <= cls < num_classes:
            raise CnnzooError(f"{where}: class {cls} is unknown: expected 0..{num_classes - 1}")
        try:
            cx, cy, w, h = (float(v) for v in values[1:])
        except ValueError:
            raise CnnzooError(f"{where}: {' '.join(values[1:])!r} are not numbers") from None
        if not all(v == v and abs(v) != float("inf") for v in (cx, cy, w, h)):
            raise CnnzooError(f"{where}: non-finite coordinate")
        if w <= 0 or h <= 0:
            raise CnnzooError(f"{where}: box width {w:g} x height {h:g} is zero or negative")
        rows.append((cls, [cx, cy, w, h], where))
    return rows


class YOLODetection(DetectionDataset):
    """YOLO-format object detection as ultralytics writes it.

    ::

        data.yaml            path: ROOT (optional; default: the yaml's folder; relative to it)
                             train: images/train   (folder, .txt list of images, or a list)
                             val: images/val
                             names: [cat, dog]     (or {0: cat, 1: dog})
        ROOT/images/train/a.jpg
        ROOT/labels/train/a.txt    one 'class cx cy w h' line per object, normalised to 0..1

    Label files are found with :func:`yolo_label_path`; an image without one has no objects.
    Image sizes are read from the file headers to turn normalised boxes into pixels.

    Args:
        data_yaml: the ``data.yaml`` file.
        split: ``train``, ``val`` or ``test`` (any other key of the yaml that lists images,
            such as ``trainval`` written by :func:`cnnzoo.data.convert.write_yolo`, works too).
        channels: 1 or 3 image channels.
        transform: optional function of ``(image, target)``.

    Raises:
        CnnzooError: naming the file for a missing/malformed yaml, missing names, a missing
            split or folder, an unreadable image, or (with ``file:line``) a malformed label line;
            per item, naming the file, for an image that cannot be decoded.
    """

    def __init__(
        self,
        data_yaml: str | os.PathLike[str],
        split: str = "train",
        channels: int = 3,
        transform: DetTransform | None = None,
    ) -> None:
        path = Path(data_yaml).expanduser()
        data = read_data_yaml(path)
        super().__init__(channels, _class_names(data, path), transform)
        self.data_yaml = path
        self.split = split
        entries = data.get(split) if split not in ("path", "names", "nc") else None
        if not entries:
            present = [k for k in data if k not in ("path", "names", "nc", "download")]
            raise CnnzooError(
                f"YOLO data file {path} has no {split!r} entry: expected one of {present}"
            )
        root = Path(str(data.get("path") or ".")).expanduser()
        self.root = root if root.is_absolute() else path.parent / root
        entries = entries if isinstance(entries, list) else [entries]
        images = [im for e in entries for im in _images_of(self.root / str(e), path)]
        if not images:
            raise CnnzooError(f"YOLO data file {path}: split {split!r} has no images")
        for image in images:
            width, height = image_size(image)
            rows = parse_yolo_labels(yolo_label_path(image), len(self.class_names))
            boxes = [
                [
                    (cx - w / 2) * width,
                    (cy - h / 2) * height,
                    (cx + w / 2) * width,
                    (cy + h / 2) * height,
                ]
                for _, (cx, cy, w, h), _ in rows
            ]
            self.records.append(
                make_record(
                    image,
                    width,
                    height,
                    boxes,
                    [r[0] for r in rows],
                    [r[2] for r in rows],
                    self.report,
                )
            )
