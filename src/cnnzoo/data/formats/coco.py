"""COCO object detection: an ``instances`` JSON with ``[x, y, width, height]`` boxes."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from cnnzoo.data.detection import DetectionDataset, DetTransform, make_record
from cnnzoo.documents import load_json
from cnnzoo.errors import CnnzooError


def coco_split_name(annotation_file: Path) -> str:
    """Return the split a COCO file name implies: ``instances_val2017.json`` -> ``val2017``."""
    stem = annotation_file.stem
    return stem[len("instances_") :] if stem.startswith("instances_") else stem


def coco_image_dirs(annotation_file: Path) -> list[Path]:
    """Folders where a COCO JSON's images are looked for, in order.

    If the JSON lies in a folder named ``annotations`` (the COCO and scenes layout), with
    ``ROOT = annotations/..`` and ``SPLIT`` from ``instances_SPLIT.json``:
    ``ROOT/images/SPLIT``, ``ROOT/SPLIT``, ``ROOT/images``. Otherwise: ``images/`` next to the
    JSON, then the JSON's own folder.
    """
    folder = annotation_file.parent
    if folder.name == "annotations":
        root, split = folder.parent, coco_split_name(annotation_file)
        return [root / "images" / split, root / split, root / "images"]
    return [folder / "images", folder]


def _fail(path: Path, what: str) -> CnnzooError:
    return CnnzooError(f"COCO annotation file {path}: {what}")


def _int_field(obj: dict[str, Any], key: str, path: Path, where: str) -> int:
    value = obj.get(key)
    if isinstance(value, bool) or not isinstance(value, int):
        raise _fail(path, f"{where} has {key}={value!r}: expected an integer")
    return value


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise CnnzooError(f"COCO annotation file {path} does not exist")
    data = load_json(path, "COCO annotation file")  # bombs refused, errors name the line
    if not isinstance(data, dict):
        raise _fail(path, "expected a JSON object with images, annotations and categories")
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise _fail(path, f"{key!r} is missing or not a list")
    return data


class COCODetection(DetectionDataset):
    """COCO-format object detection (``instances_*.json``).

    ::

        ROOT/annotations/instances_SPLIT.json    {"images", "annotations", "categories"}
        ROOT/images/SPLIT/FILE_NAME              (scenes)   or ROOT/SPLIT/FILE_NAME (COCO)

    Category ids (any integers) map to contiguous labels ``0..C-1`` in increasing id order;
    ``class_names`` are the categories' names in that order. ``bbox`` is
    ``[x, y, width, height]`` in pixels and becomes ``x1, y1, x2, y2 = x, y, x + w, y + h``.
    Annotations with ``iscrowd=1`` are skipped and counted in ``report.crowd``; images without
    annotations are kept with empty targets; boxes partly or fully outside their image are
    clipped or dropped and counted (see :func:`~cnnzoo.data.detection.check_boxes`).

    Args:
        annotation_file: the JSON file.
        images_dir: the folder ``file_name`` is relative to; None: the first existing folder
            of :func:`coco_image_dirs`.
        channels: 1 or 3 image channels.
        transform: optional function of ``(image, target)``.

    Raises:
        CnnzooError: naming the file for a missing file, malformed JSON (with its line), a
            missing images folder, a malformed image/annotation/category entry, an annotation
            whose ``category_id`` or ``image_id`` is unknown (naming the annotation id), a box
            with zero or negative size, or boxes that look like ``[x1, y1, x2, y2]`` instead
            of ``[x, y, w, h]``; per item, naming the file, for an image that cannot be
            decoded or whose size differs from the JSON's.
    """

    def __init__(
        self,
        annotation_file: str | os.PathLike[str],
        images_dir: str | os.PathLike[str] | None = None,
        channels: int = 3,
        transform: DetTransform | None = None,
    ) -> None:
        path = Path(annotation_file).expanduser()
        data = _read_json(path)
        categories: dict[int, str] = {}
        for cat in data["categories"]:
            if not isinstance(cat, dict):
                raise _fail(path, f"category {cat!r} is not an object")
            cid = _int_field(cat, "id", path, f"category {cat.get('name')!r}")
            if cid in categories:
                raise _fail(path, f"category id {cid} appears twice")
            categories[cid] = str(cat.get("name", cid))
        if not categories:
            raise _fail(path, "lists no categories")
        order = sorted(categories)
        super().__init__(channels, [categories[c] for c in order], transform)
        self.annotation_file = path
        self.category_ids = order
        label_of = {cid: i for i, cid in enumerate(order)}
        if images_dir is None:
            candidates = coco_image_dirs(path)
            found = next((d for d in candidates if d.is_dir()), None)
            if found is None:
                raise _fail(
                    path,
                    f"no images folder found (looked for {', '.join(map(str, candidates))}); "
                    "pass images_dir",
                )
            self.images_dir = found
        else:
            self.images_dir = Path(images_dir).expanduser()
            if not self.images_dir.is_dir():
                raise CnnzooError(f"COCO images folder {self.images_dir} does not exist")

        images: dict[int, dict[str, Any]] = {}
        for img in data["images"]:
            if not isinstance(img, dict):
                raise _fail(path, f"image entry {img!r} is not an object")
            iid = _int_field(img, "id", path, f"image {img.get('file_name')!r}")
            where = f"image id {iid}"
            for key in ("width", "height"):
                if _int_field(img, key, path, where) <= 0:
                    raise _fail(path, f"{where} has {key}={img[key]}: expected > 0")
            if not isinstance(img.get("file_name"), str) or not img["file_name"]:
                raise _fail(path, f"{where} has no file_name")
            if iid in images:
                raise _fail(path, f"image id {iid} appears twice")
            images[iid] = img

        per_image: dict[int, list[tuple[list[float], int, str]]] = {iid: [] for iid in images}
        xywh_suspects: list[str] = []
        all_fit_xyxy = True
        for ann in data["annotations"]:
            if not isinstance(ann, dict):
                raise _fail(path, f"annotation {ann!r} is not an object")
            aid = ann.get("id")
            where = f"annotation id {aid}"
            cid = _int_field(ann, "category_id", path, where)
            if cid not in label_of:
                raise _fail(
                    path,
                    f"{where} has unknown category_id {cid}: expected one of {order}",
                )
            iid = _int_field(ann, "image_id", path, where)
            if iid not in images:
                raise _fail(path, f"{where} has unknown image_id {iid}")
            if ann.get("iscrowd", 0):
                self.report.crowd += 1
                continue
            bbox = ann.get("bbox")
            if (
                not isinstance(bbox, list)
                or len(bbox) != 4
                or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in bbox)
            ):
                raise _fail(path, f"{where} has bbox {bbox!r}: expected [x, y, width, height]")
            x, y, w, h = (float(v) for v in bbox)
            width, height = images[iid]["width"], images[iid]["height"]
            if w <= 0 or h <= 0:
                raise _fail(
                    path, f"{where} has bbox {bbox} with zero or negative size; fix or remove it"
                )
            if x + w > width + 1e-3 or y + h > height + 1e-3:
                xywh_suspects.append(f"{where} bbox {bbox} in {width}x{height} image id {iid}")
            if not (x < w <= width and y < h <= height):
                all_fit_xyxy = False
            per_image[iid].append(([x, y, x + w, y + h], label_of[cid], f"{path} {where}"))
        if xywh_suspects and all_fit_xyxy:
            raise _fail(
                path,
                f"{xywh_suspects[0]} extends past the image as [x, y, width, height], and every "
                "bbox reads as [x1, y1, x2, y2]: COCO bbox must be [x, y, width, height]; "
                "convert with width = x2 - x1, height = y2 - y1",
            )
        for iid in sorted(images):
            img = images[iid]
            anns = per_image[iid]
            self.records.append(
                make_record(
                    self.images_dir / img["file_name"],
                    img["width"],
                    img["height"],
                    [a[0] for a in anns],
                    [a[1] for a in anns],
                    [a[2] for a in anns],
                    self.report,
                )
            )
        self.image_ids = sorted(images)
