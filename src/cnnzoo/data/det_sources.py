"""Detection data by name: a ``"scheme:path"`` data spec (``coco:``, ``voc:``, ``yolo:``,
``scenes``) parsed and opened as a :class:`~cnnzoo.data.detection.DetectionDataset` of the
format it names. Above the formats (:mod:`cnnzoo.data.formats`), which know nothing of it."""

from __future__ import annotations

import os
from pathlib import Path

from cnnzoo.data.detection import DET_DATA_SCHEMES, DetectionDataset, DetTransform
from cnnzoo.errors import CnnzooError


def parse_det_data(spec: str) -> tuple[str, str]:
    """Split a detection data spec.

    Forms: ``coco:ANNOTATIONS.json``, ``voc:PATH`` (VOCdevkit/VOC2007 or VOC2012),
    ``yolo:DATA.yaml``, ``scenes`` (the generated scenes in the data cache) or
    ``scenes:PATH`` (a folder written by :func:`~cnnzoo.data.scenes.generate_scenes`). The
    scheme is case-insensitive; ``~`` in the path is expanded.

    Returns:
        ``(scheme, path)``, the scheme in lower case; path ``""`` for a bare ``scenes``.

    Raises:
        CnnzooError: for an unknown scheme (listing the valid forms) or a missing path.
    """
    valid = "coco:ANN.json, voc:PATH, yolo:DATA.yaml, scenes or scenes:PATH"
    scheme, sep, path = spec.partition(":")
    scheme = scheme.strip().lower()
    path = path.strip()
    if scheme not in DET_DATA_SCHEMES:
        raise CnnzooError(f"detection data {spec!r} is not understood: expected one of {valid}")
    if scheme == "scenes":
        return scheme, os.path.expanduser(path) if path else ""
    if not sep or not path:
        raise CnnzooError(f"detection data {spec!r} has no path: expected {scheme}:PATH")
    return scheme, os.path.expanduser(path)


def open_det_dataset(
    spec: str,
    split: str = "train",
    channels: int = 3,
    transform: DetTransform | None = None,
    data_dir: str | os.PathLike[str] | None = None,
) -> DetectionDataset:
    """Open the dataset a spec names (see :func:`parse_det_data`).

    Args:
        spec: the data spec.
        split: the split to read (VOC image set, YOLO ``train``/``val``/``test``, scenes
            ``train``/``test``); ignored for ``coco:`` (one JSON is one split).
        channels: 1 or 3.
        transform: optional function of ``(image, target)``.
        data_dir: where a bare ``scenes`` is generated (see
            :func:`cnnzoo.data.seg_datamodule.scenes_root`).

    Returns:
        the dataset.

    Raises:
        CnnzooError: for a bad spec or any loader error.
    """
    scheme, path = parse_det_data(spec)
    if scheme == "coco":
        from cnnzoo.data.formats.coco import COCODetection

        return COCODetection(path, channels=channels, transform=transform)
    if scheme == "voc":
        from cnnzoo.data.formats.voc import VOCDetection

        return VOCDetection(path, split=split, channels=channels, transform=transform)
    if scheme == "yolo":
        from cnnzoo.data.formats.yolo import YOLODetection

        return YOLODetection(path, split=split, channels=channels, transform=transform)
    from cnnzoo.data.formats.coco import COCODetection
    from cnnzoo.data.scenes import SCENE_SPLITS

    if split not in SCENE_SPLITS:
        raise CnnzooError(f"unknown scenes split {split!r}: expected 'train' or 'test'")
    if path:
        root = Path(path)
    else:
        from cnnzoo.data.seg_datamodule import default_scenes

        root = default_scenes(data_dir)
    ann = root / "annotations" / f"instances_{split}.json"
    return COCODetection(ann, channels=channels, transform=transform)
