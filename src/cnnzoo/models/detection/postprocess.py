"""Detector post-processing: score threshold, class-aware non-maximum suppression, top-k."""

from __future__ import annotations

import torch
from torch import Tensor
from torchvision.ops import batched_nms, clip_boxes_to_image

from cnnzoo.errors import CnnzooError


def clip_boxes(boxes: Tensor, size: tuple[int, int]) -> Tensor:
    """Return ``boxes (..., 4)`` xyxy clipped to an image of ``size = (H, W)`` pixels."""
    if boxes.shape[-1:] != (4,):
        raise CnnzooError(f"boxes must be (..., 4), got shape {tuple(boxes.shape)}")
    return clip_boxes_to_image(boxes, tuple(size))


def postprocess(
    boxes: Tensor,
    scores: Tensor,
    labels: Tensor,
    score_threshold: float = 0.05,
    iou_threshold: float = 0.5,
    max_detections: int = 100,
) -> dict[str, Tensor]:
    """Return the final detections of one image.

    Keeps boxes with ``score > score_threshold``, then runs NMS per class
    (``torchvision.ops.batched_nms``: a box only suppresses boxes of its own label whose IoU
    with it exceeds ``iou_threshold``), then the ``max_detections`` highest scores.

    Args:
        boxes: ``(N, 4)`` xyxy; scores: ``(N,)``; labels: ``(N,)`` integer classes.

    Returns:
        ``{"boxes": (D, 4), "scores": (D,), "labels": (D,)}``, sorted by decreasing score.

    Raises:
        CnnzooError: for mismatched shapes or ``max_detections < 0``.
    """
    if boxes.dim() != 2 or boxes.shape[1] != 4:
        raise CnnzooError(f"boxes must be (N, 4), got shape {tuple(boxes.shape)}")
    n = boxes.shape[0]
    if scores.shape != (n,) or labels.shape != (n,):
        raise CnnzooError(
            f"scores and labels must be ({n},), got {tuple(scores.shape)} and {tuple(labels.shape)}"
        )
    if max_detections < 0:
        raise CnnzooError(f"max_detections must be >= 0, got {max_detections}")
    keep = scores > score_threshold
    boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
    keep = batched_nms(boxes.float(), scores.float(), labels, iou_threshold)[:max_detections]
    return {"boxes": boxes[keep], "scores": scores[keep], "labels": labels[keep]}


def valid_boxes(target: dict[str, Tensor], device: torch.device) -> tuple[Tensor, Tensor]:
    """Return a target's float boxes and int64 labels on ``device``, without empty boxes."""
    boxes = target["boxes"].to(device=device, dtype=torch.float32).reshape(-1, 4)
    labels = target["labels"].to(device=device, dtype=torch.int64).reshape(-1)
    keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    return boxes[keep], labels[keep]


def paired_iou(a: Tensor, b: Tensor) -> Tensor:
    """Return the element-wise IoU of xyxy boxes ``a (..., 4)`` and ``b (..., 4)``."""
    lt = torch.maximum(a[..., :2], b[..., :2])
    rb = torch.minimum(a[..., 2:], b[..., 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    area_a = (a[..., 2:] - a[..., :2]).clamp(min=0).prod(-1)
    area_b = (b[..., 2:] - b[..., :2]).clamp(min=0).prod(-1)
    return inter / (area_a + area_b - inter).clamp(min=1e-12)


def score_candidates(
    boxes: Tensor,
    scores: Tensor,
    image_size: tuple[int, int],
    score_threshold: float,
    iou_threshold: float,
    max_detections: int,
) -> dict[str, Tensor]:
    """Postprocess one image's candidate ``boxes (M, 4)`` with class ``scores (M, C)``: every
    (box, class) pair above the threshold is a candidate, boxes clipped to the image."""
    index, label = (scores > score_threshold).nonzero(as_tuple=True)
    return postprocess(
        clip_boxes(boxes[index], image_size),
        scores[index, label],
        label,
        score_threshold,
        iou_threshold,
        max_detections,
    )
