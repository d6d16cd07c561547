"""Detector post-processing: score threshold, class-aware non-maximum suppression, top-k."""

from __future__ import annotations

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
