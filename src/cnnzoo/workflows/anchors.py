"""``cnnzoo anchors``: YOLOv2/v3 box priors from k-means (``1 - IoU`` distance) on the
training boxes of a detection dataset, compared with uniform squares and YOLOv3's defaults."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from cnnzoo.data.det_datamodule import DetectionData, training_box_sizes
from cnnzoo.errors import CnnzooError
from cnnzoo.files import atomic_write_text
from cnnzoo.models.detection.anchors import kmeans_anchors, mean_best_iou, uniform_anchors
from cnnzoo.models.detection.yolov3 import DEFAULT_ANCHORS


@dataclass
class AnchorResult:
    """Fitted anchors and how well each set of priors covers the boxes."""

    anchors: list[list[float]]  # (k, 2) widths and heights in pixels, smallest area first
    mean_iou: float  # mean over boxes of the best IoU with the fitted anchors
    uniform_iou: float  # the same with k uniform squares
    default_iou: float  # the same with YOLOv3's DEFAULT_ANCHORS
    boxes: int
    image_size: tuple[int, int]

    def model_arg(self) -> str:
        """The ``--model-arg`` that gives these anchors to ``cnnzoo train yolov3``."""
        pairs = ",".join(f"[{w:g},{h:g}]" for w, h in self.anchors)
        return f"anchors=[{pairs}]"


def fit_anchors(
    data: str,
    k: int = 9,
    data_dir: str | None = None,
    input_size: list[int] | None = None,
    images_dir: str | None = None,
    out: str | Path | None = None,
    seed: int = 0,
) -> AnchorResult:
    """Cluster the training boxes of ``data`` into ``k`` anchors.

    Args:
        data: a detection data spec (``scenes``, ``coco:``, ``voc:``, ``yolo:``).
        input_size: the ``(H, W)`` the model will see (boxes are scaled to it); None keeps
            the images' own sizes.
        out: also write the result as JSON there (refused if the file exists).

    Returns:
        The anchors (pixels of the input) and the mean best IoU of the boxes with them, with
        ``k`` uniform squares and with YOLOv3's defaults.

    Raises:
        CnnzooError: for bad data, ``k`` above the number of distinct box sizes, or an
            existing ``out``.
    """
    if out is not None and Path(out).exists():
        raise CnnzooError(f"{out} exists: choose another --out")
    dm = DetectionData(data, data_dir=data_dir, input_size=input_size, augment=False,
                       val_fraction=0.0, images_dir=images_dir, cache=False)  # fmt: skip
    wh = training_box_sizes(dm)
    anchors, mean_iou = kmeans_anchors(wh, k, seed=seed)
    result = AnchorResult(
        anchors=[[round(float(w), 1), round(float(h), 1)] for w, h in anchors],
        mean_iou=mean_iou,
        uniform_iou=mean_best_iou(wh, uniform_anchors(wh, k)),
        default_iou=mean_best_iou(wh, torch.tensor(DEFAULT_ANCHORS)),
        boxes=len(wh),
        image_size=tuple(dm.spec.image_size),  # type: ignore[arg-type]
    )
    if out is not None:
        record = {**result.__dict__, "data": data, "k": k, "model_arg": result.model_arg()}
        atomic_write_text(Path(out), json.dumps(record, indent=1) + "\n")
    return result
