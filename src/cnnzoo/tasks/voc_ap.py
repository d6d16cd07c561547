"""Pascal VOC average precision at one IoU threshold: the VOC2007 11-point interpolation and
the VOC2010+ all-point (area under the precision envelope) version.

COCO-style mAP comes from torchmetrics (:mod:`cnnzoo.tasks.detection`); this is the metric of
the VOC papers (Everingham et al. 2010, sec. 4.2), kept as an option because published
VOC07 numbers (e.g. Fast R-CNN's 66.9 mAP) use it. Matching follows the VOC devkit: detections
of a class, in decreasing score order over all images, are true positives when their best-IoU
ground truth of that class (IoU >= the threshold) is not yet taken, false positives otherwise;
a detection whose best match is a ``difficult`` object counts as neither, and difficult
objects are not in the number of positives.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor
from torchvision.ops import box_iou

from cnnzoo.errors import CnnzooError


def interpolated_ap(recall: Tensor, precision: Tensor, eleven_point: bool) -> float:
    """Return the AP of a precision-recall curve (points in decreasing-score order).

    ``eleven_point``: the mean over ``t = 0, 0.1, ..., 1`` of the best precision at
    recall >= t (VOC2007); otherwise the area under the curve made monotone (VOC2010+).
    """
    if recall.numel() == 0:
        return 0.0
    if eleven_point:
        total = 0.0
        for t in torch.linspace(0, 1, 11).tolist():
            above = precision[recall >= t - 1e-12]
            total += float(above.max()) if above.numel() else 0.0
        return total / 11
    r = torch.cat([torch.zeros(1), recall.double(), torch.ones(1)])
    p = torch.cat([torch.zeros(1), precision.double(), torch.zeros(1)])
    p = torch.flip(torch.cummax(torch.flip(p, [0]), 0).values, [0])  # precision envelope
    steps = (r[1:] != r[:-1]).nonzero().flatten()
    return float(((r[steps + 1] - r[steps]) * p[steps + 1]).sum())


def pr_curves(
    preds: Sequence[dict[str, Tensor]],
    targets: Sequence[dict[str, Tensor]],
    num_classes: int,
    iou_threshold: float = 0.5,
) -> list[tuple[Tensor, Tensor] | None]:
    """Per-class precision-recall curves of detections ``preds`` against ``targets`` (one
    dict per image), matched as the VOC devkit does (see the module docstring).

    Args:
        preds: ``{"boxes" (D, 4) xyxy, "scores" (D,), "labels" (D,)}`` per image.
        targets: ``{"boxes" (K, 4), "labels" (K,)}`` per image, optionally ``"difficult"`` or
            ``"iscrowd"`` (K,) marking objects to ignore.
        num_classes: classes ``0 .. num_classes - 1``.
        iou_threshold: the IoU a detection needs to match a ground truth (0.5 in VOC).

    Returns:
        For each class, ``(recall, precision)`` after each detection in decreasing-score
        order (float64; empty when the class has no detection); None for a class without
        (non-difficult) ground truth.

    Raises:
        CnnzooError: if ``preds`` and ``targets`` hold different numbers of images.
    """
    if len(preds) != len(targets):
        raise CnnzooError(f"{len(preds)} images of detections but {len(targets)} of targets")
    curves: list[tuple[Tensor, Tensor] | None] = []
    for c in range(num_classes):
        scores: list[float] = []
        hits: list[int] = []  # 1 true positive, 0 false positive (ignored ones left out)
        positives = 0
        for pred, target in zip(preds, targets, strict=True):
            positives += _match_image(pred, target, c, iou_threshold, scores, hits)
        if positives == 0:
            curves.append(None)
            continue
        order = torch.tensor(scores, dtype=torch.float64).argsort(descending=True, stable=True)
        hit = torch.tensor(hits, dtype=torch.float64)[order]
        tp, fp = hit.cumsum(0), (1 - hit).cumsum(0)
        curves.append((tp / positives, tp / (tp + fp).clamp(min=1e-12)))
    return curves


def _match_image(
    pred: dict[str, Tensor],
    target: dict[str, Tensor],
    c: int,
    iou_threshold: float,
    scores: list[float],
    hits: list[int],
) -> int:
    """Append the class-``c`` detections of one image to ``scores``/``hits`` (true positive
    1, false positive 0; those matching an ignored object are left out) and return the
    number of the image's non-ignored ground truths of the class."""
    t_mask = target["labels"] == c
    gt = target["boxes"][t_mask].float().reshape(-1, 4)
    hard = target.get("difficult", target.get("iscrowd"))
    ignore = hard[t_mask].bool() if hard is not None else torch.zeros(len(gt), dtype=torch.bool)
    p_mask = pred["labels"] == c
    boxes = pred["boxes"][p_mask].float().reshape(-1, 4)
    p_scores = pred["scores"][p_mask].float()
    taken = torch.zeros(len(gt), dtype=torch.bool)
    iou = box_iou(boxes, gt) if len(gt) and len(boxes) else None
    for i in p_scores.argsort(descending=True).tolist():
        if iou is not None:
            best, j = iou[i].max(0)
            if float(best) >= iou_threshold:
                if bool(ignore[j]):
                    continue
                if not bool(taken[j]):
                    taken[j] = True
                    scores.append(float(p_scores[i]))
                    hits.append(1)
                    continue
        scores.append(float(p_scores[i]))
        hits.append(0)
    return int((~ignore).sum())


def voc_ap(
    preds: Sequence[dict[str, Tensor]],
    targets: Sequence[dict[str, Tensor]],
    num_classes: int,
    iou_threshold: float = 0.5,
    eleven_point: bool = True,
) -> list[float]:
    """Per-class VOC AP of detections ``preds`` against ``targets`` (one dict per image; the
    arguments as :func:`pr_curves`).

    Args:
        eleven_point: VOC2007's 11-point interpolation (True) or the all-point area (False).

    Returns:
        The AP of each class; NaN for a class without (non-difficult) ground truth.

    Raises:
        CnnzooError: if ``preds`` and ``targets`` hold different numbers of images.
    """
    return [
        math.nan if curve is None else interpolated_ap(*curve, eleven_point)
        for curve in pr_curves(preds, targets, num_classes, iou_threshold)
    ]
