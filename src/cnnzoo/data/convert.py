"""Conversion between the detection formats: COCO JSON, Pascal VOC XML and YOLO txt.

Every writer reads a :class:`~cnnzoo.data.detection.DetectionDataset`'s annotations (its
``records``: original pixel boxes, no transform, no image decoding) and writes each file
atomically. Images are hard-linked into the new layout (copied where linking fails, e.g.
across file systems), keeping their path relative to the images' common folder, so the
format of every image file is unchanged.

Precision: COCO keeps float boxes; YOLO writes normalised coordinates with 10 significant
digits (well under 1e-3 px); VOC stores integer corners, so boxes are **rounded to whole
pixels** (``xmin = round(x1) + 1``, ``xmax = round(x2)``, 1-based inclusive).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import yaml

from cnnzoo.data.det_sources import open_det_dataset, parse_det_data
from cnnzoo.data.detection import DetectionDataset
from cnnzoo.data.formats.coco import coco_image_dirs
from cnnzoo.data.formats.voc import VOC_CLASSES_FILE, VOC_DET_CLASSES
from cnnzoo.data.formats.yolo import read_data_yaml, yolo_label_path
from cnnzoo.errors import CnnzooError
from cnnzoo.files import atomic_write_text


def _relative_names(dataset: DetectionDataset) -> list[str]:
    """Image paths relative to their common folder (posix), unique per image."""
    paths = [os.path.abspath(r.path) for r in dataset.records]
    if not paths:
        return []
    common = os.path.commonpath([os.path.dirname(p) for p in paths])
    names = [Path(os.path.relpath(p, common)).as_posix() for p in paths]
    if len(set(names)) != len(names):
        raise CnnzooError("the dataset lists the same image file twice; cannot convert it")
    return names


def _place_image(src: Path, dst: Path) -> None:
    """Hard-link (else copy) ``src`` to ``dst`` through a temporary name and a rename."""
    if dst.exists() and os.path.samefile(src, dst):
        return
    dst.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dst.parent, prefix=f".{dst.name}.", suffix=".tmp")
    os.close(fd)
    try:
        os.unlink(tmp)
        try:
            os.link(src, tmp)
        except OSError:
            shutil.copyfile(src, tmp)
        os.replace(tmp, dst)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_coco(
    dataset: DetectionDataset,
    out_json: str | os.PathLike[str],
    images_relative_to: str | os.PathLike[str] | None = None,
) -> Path:
    """Write a dataset's annotations as a COCO ``instances`` JSON.

    Labels ``0..C-1`` become category ids ``1..C`` (COCO reserves 0); ``bbox`` is
    ``[x, y, width, height]``; ``area`` is the box area.

    Args:
        dataset: any detection dataset.
        out_json: the JSON file to write.
        images_relative_to: leave the images where they are and write ``file_name`` relative
            to this folder. None: link/copy the images into the first folder of
            :func:`~cnnzoo.data.formats.coco.coco_image_dirs` (``ROOT/images/SPLIT`` for
            ``ROOT/annotations/instances_SPLIT.json``, else ``images/`` next to the JSON),
            where :class:`~cnnzoo.data.formats.coco.COCODetection` finds them.

    Returns:
        the JSON path.
    """
    out = Path(out_json).expanduser()
    names = _relative_names(dataset)
    if images_relative_to is None:
        folder = coco_image_dirs(out)[0]
        for rec, name in zip(dataset.records, names, strict=True):
            _place_image(rec.path, folder / name)
    else:
        base = os.path.abspath(images_relative_to)
        names = [
            Path(os.path.relpath(os.path.abspath(r.path), base)).as_posix() for r in dataset.records
        ]
    images, annotations = [], []
    for i, (rec, name) in enumerate(zip(dataset.records, names, strict=True)):
        images.append({"id": i, "file_name": name, "width": rec.width, "height": rec.height})
        for box, label in zip(rec.boxes.tolist(), rec.labels.tolist(), strict=True):
            x1, y1, x2, y2 = box
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": i,
                    "category_id": int(label) + 1,
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "area": (x2 - x1) * (y2 - y1),
                    "iscrowd": 0,
                }
            )
    categories = [{"id": i + 1, "name": n} for i, n in enumerate(dataset.class_names)]
    doc = {"images": images, "annotations": annotations, "categories": categories}
    atomic_write_text(out, json.dumps(doc, indent=1) + "\n")
    return out


def _voc_xml(folder: str, filename: str, rec: Any, class_names: list[str]) -> str:
    root = ET.Element("annotation")
    ET.SubElement(root, "folder").text = folder
    ET.SubElement(root, "filename").text = filename
    size = ET.SubElement(root, "size")
    for tag, value in (("width", rec.width), ("height", rec.height), ("depth", 3)):
        ET.SubElement(size, tag).text = str(value)
    difficult = rec.difficult.tolist() if rec.difficult is not None else [False] * len(rec.labels)
    for box, label, diff in zip(rec.boxes.tolist(), rec.labels.tolist(), difficult, strict=True):
        x1, y1, x2, y2 = (round(v) for v in box)
        obj = ET.SubElement(root, "object")
        ET.SubElement(obj, "name").text = class_names[label]
        ET.SubElement(obj, "difficult").text = "1" if diff else "0"
        bnd = ET.SubElement(obj, "bndbox")
        xmin, ymin = x1 + 1, y1 + 1
        for tag, value in (
            ("xmin", xmin),
            ("ymin", ymin),
            ("xmax", max(x2, xmin)),  # a box under a pixel wide keeps one pixel
            ("ymax", max(y2, ymin)),
        ):
            ET.SubElement(bnd, tag).text = str(value)
    ET.indent(root)
    return ET.tostring(root, encoding="unicode") + "\n"


def write_voc(
    dataset: DetectionDataset, out_root: str | os.PathLike[str], split: str = "trainval"
) -> Path:
    """Write a dataset in the Pascal VOC layout.

    ::

        out_root/Annotations/{id}.xml        boxes rounded to whole pixels, 1-based inclusive
        out_root/JPEGImages/{file}           the image file (linked/copied, format unchanged)
        out_root/ImageSets/Main/{split}.txt  the ids
        out_root/classes.txt                 only when the classes are not VOC's 20

    The id is the image's path relative to the images' common folder, without its
    extension, with ``/`` replaced by ``__``.

    Returns:
        ``out_root``.
    """
    root = Path(out_root).expanduser()
    names = _relative_names(dataset)
    ids = []
    for rec, name in zip(dataset.records, names, strict=True):
        file_name = name.replace("/", "__")
        image_id = Path(file_name).stem
        _place_image(rec.path, root / "JPEGImages" / file_name)
        xml = _voc_xml("JPEGImages", file_name, rec, dataset.class_names)
        atomic_write_text(root / "Annotations" / f"{image_id}.xml", xml)
        ids.append(image_id)
    atomic_write_text(root / "ImageSets" / "Main" / f"{split}.txt", "\n".join(ids) + "\n")
    if list(dataset.class_names) != list(VOC_DET_CLASSES):
        atomic_write_text(root / VOC_CLASSES_FILE, "\n".join(dataset.class_names) + "\n")
    return root


def write_yolo(
    dataset: DetectionDataset, out_root: str | os.PathLike[str], split: str = "train"
) -> Path:
    """Write a dataset in the YOLO (ultralytics) layout.

    ::

        out_root/images/{split}/{file}    the image file (linked/copied)
        out_root/labels/{split}/{stem}.txt  'class cx cy w h' per box, normalised (empty: none)
        out_root/data.yaml                names and the split (other splits already there kept)

    Returns:
        the ``data.yaml`` path.

    Raises:
        CnnzooError: if an existing ``data.yaml`` there has other class names.
    """
    root = Path(out_root).expanduser()
    yaml_path = root / "data.yaml"
    data: dict[str, Any] = read_data_yaml(yaml_path) if yaml_path.is_file() else {}
    names = list(dataset.class_names)
    if data.get("names") not in (None, names):
        raise CnnzooError(
            f"YOLO data file {yaml_path} has other class names {data['names']}: expected "
            f"{names}; write to a new folder"
        )
    for rec, name in zip(dataset.records, _relative_names(dataset), strict=True):
        image = root / "images" / split / name
        _place_image(rec.path, image)
        lines = []
        for (x1, y1, x2, y2), label in zip(rec.boxes.tolist(), rec.labels.tolist(), strict=True):
            w, h = rec.width, rec.height
            values = ((x1 + x2) / 2 / w, (y1 + y2) / 2 / h, (x2 - x1) / w, (y2 - y1) / h)
            lines.append(f"{label} " + " ".join(f"{v:.10g}" for v in values))
        atomic_write_text(yolo_label_path(image), "".join(line + "\n" for line in lines))
    data["names"] = names
    data[split] = f"images/{split}"
    atomic_write_text(yaml_path, yaml.safe_dump(data, sort_keys=False))
    return yaml_path


def existing_output(scheme: str, path: str, split: str) -> Path | None:
    """The file a conversion to ``scheme:path`` would replace for ``split``, if it exists:
    the COCO JSON, the VOC image set list or the YOLO split's labels folder (non-empty)."""
    out = Path(path).expanduser()
    if scheme == "coco":
        return out if out.exists() else None
    if scheme == "voc":
        listing = out / "ImageSets" / "Main" / f"{split}.txt"
        return listing if listing.exists() else None
    root = out.parent if out.suffix in (".yaml", ".yml") else out
    labels = root / "labels" / split
    return labels if labels.is_dir() and any(labels.iterdir()) else None


def convert(src_spec: str, dst_spec: str, split: str = "train", overwrite: bool = False) -> Path:
    """Convert detection data from one format to another.

    Args:
        src_spec: a data spec (see :func:`~cnnzoo.data.det_sources.parse_det_data`).
        dst_spec: ``coco:OUT.json``, ``voc:OUT_ROOT`` or ``yolo:OUT_ROOT`` (a path ending in
            ``.yaml`` means its folder).
        split: the split read (VOC image set, YOLO/scenes split) and written (VOC image set,
            YOLO split).
        overwrite: replace the destination's annotations of ``split`` if they exist.

    Returns:
        the JSON (coco), root (voc) or ``data.yaml`` (yolo) written.

    Raises:
        CnnzooError: for a bad spec, a ``scenes`` destination, a destination that already
            holds annotations of ``split`` (without ``overwrite``), or any loader error.
    """
    scheme, path = parse_det_data(dst_spec)
    if scheme == "scenes":
        raise CnnzooError("scenes cannot be a conversion destination: use coco:, voc: or yolo:")
    existing = existing_output(scheme, path, split)
    if existing is not None and not overwrite:
        raise CnnzooError(
            f"{existing} exists: converting would replace its {split} annotations; pass "
            "--overwrite or choose another destination"
        )
    dataset = open_det_dataset(src_spec, split=split)
    if scheme == "coco":
        return write_coco(dataset, path)
    if scheme == "voc":
        return write_voc(dataset, path, split)
    out = Path(path)
    return write_yolo(dataset, out.parent if out.suffix in (".yaml", ".yml") else out, split)
