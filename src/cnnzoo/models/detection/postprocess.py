"""Detector post-processing: score threshold, class-aware non-maximum suppression, top-k."""

from __future__ import annotations

import torch
from torch import Tensor

from cnnzoo.errors import CnnzooError
from cnnzoo.models.detection.ops import batched_nms, clip_boxes_to_image


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
) -> list[dict[str, Tensor]]:
    """Postprocess a batch of candidate ``boxes (N, M, 4)`` xyxy with class ``scores (N, M, C)``.

    Every (box, class) pair scoring above ``score_threshold`` is a candidate, its box clipped
    to the image; class-aware NMS then runs once for the whole batch (a box only suppresses
    boxes of its own image and class), and each image keeps its ``max_detections`` highest
    scores. The result equals :func:`postprocess` applied image by image, without a Python
    loop over the images.

    Returns:
        One ``{"boxes": (D, 4), "scores": (D,), "labels": (D,)}`` per image, sorted by
        decreasing score; labels are ``0 .. C-1``.

    Raises:
        CnnzooError: for mismatched shapes or ``max_detections < 0``.
    """
    if boxes.dim() != 3 or boxes.shape[-1] != 4 or scores.dim() != 3:
        raise CnnzooError(
            f"boxes must be (N, M, 4) and scores (N, M, C), got {tuple(boxes.shape)} and "
            f"{tuple(scores.shape)}"
        )
    if scores.shape[:2] != boxes.shape[:2]:
        raise CnnzooError(
            f"boxes {tuple(boxes.shape)} and scores {tuple(scores.shape)} differ in N or M"
        )
    if max_detections < 0:
        raise CnnzooError(f"max_detections must be >= 0, got {max_detections}")
    n, classes = boxes.shape[0], scores.shape[-1]
    image, index, label = (scores > score_threshold).nonzero(as_tuple=True)
    cand_boxes = clip_boxes(boxes[image, index].float(), image_size)
    cand_scores = scores[image, index, label]
    keep = batched_nms(cand_boxes, cand_scores.float(), image * classes + label, iou_threshold)
    # keep is sorted by decreasing score; a stable sort by image keeps that order per image
    keep = keep[torch.sort(image[keep], stable=True).indices]
    kept_image = image[keep]
    counts = torch.bincount(kept_image, minlength=n)
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.arange(len(keep), device=keep.device) - starts[kept_image]
    keep = keep[rank < max_detections]
    sizes = torch.bincount(image[keep], minlength=n).tolist()
    return [
        {"boxes": b, "scores": s, "labels": lab}
        for b, s, lab in zip(
            cand_boxes[keep].split(sizes),
            cand_scores[keep].split(sizes),
            label[keep].split(sizes),
            strict=True,
        )
    ]
