"""Anchor (prior) sizes by k-means on the training boxes' widths and heights.

YOLOv2 (Redmon & Farhadi 2017, "Dimension Clusters"): Euclidean k-means favours large boxes,
so cluster with ``d(box, centroid) = 1 - IoU(box, centroid)``, the IoU of the two boxes
placed at a common centre — only their widths and heights matter.
"""

from __future__ import annotations

import torch
from torch import Tensor

from cnnzoo.errors import CnnzooError


def anchor_iou(wh: Tensor, anchors: Tensor) -> Tensor:
    """Return the ``(N, K)`` IoU of boxes ``wh (N, 2)`` and ``anchors (K, 2)`` (widths,
    heights) aligned at a common centre: ``min(w) min(h) / (area_1 + area_2 - that)``."""
    inter = torch.minimum(wh[:, None, 0], anchors[None, :, 0]) * torch.minimum(
        wh[:, None, 1], anchors[None, :, 1]
    )
    union = (wh[:, 0] * wh[:, 1])[:, None] + (anchors[:, 0] * anchors[:, 1])[None, :] - inter
    return inter / union


def mean_best_iou(wh: Tensor, anchors: Tensor) -> float:
    """Return the mean over boxes of the IoU with their best-matching anchor (YOLOv2's
    "Avg IOU")."""
    return float(anchor_iou(wh.double(), anchors.double()).max(1).values.mean())


def _check_wh(wh: Tensor) -> Tensor:
    if wh.dim() != 2 or wh.shape[1] != 2:
        raise CnnzooError(f"wh must be (N, 2) widths and heights, got shape {tuple(wh.shape)}")
    bad = int(((wh <= 0) | ~torch.isfinite(wh)).any(1).sum())
    if bad:
        raise CnnzooError(
            f"{bad} of {len(wh)} box(es) have non-positive or non-finite width or height; "
            "drop empty boxes before clustering"
        )
    return wh.double()


def uniform_anchors(wh: Tensor, k: int) -> Tensor:
    """The baseline k-means must beat: ``k`` squares whose sides are evenly spaced between the
    smallest and the largest ``sqrt(w h)`` of the boxes.

    Returns:
        ``(k, 2)`` float32 anchors sorted by area.

    Raises:
        CnnzooError: for ``k < 1``, bad shapes or non-positive sizes.
    """
    x = _check_wh(wh)
    if k < 1:
        raise CnnzooError(f"k must be >= 1, got {k}")
    side = (x[:, 0] * x[:, 1]).sqrt()
    sides = torch.linspace(float(side.min()), float(side.max()), k)
    return torch.stack([sides, sides], 1).float()


def kmeans_anchors(wh: Tensor, k: int, iters: int = 300, seed: int = 0) -> tuple[Tensor, float]:
    """Cluster box sizes into ``k`` anchors with the ``1 - IoU`` distance.

    Initialisation is k-means++ (each next centre drawn with probability proportional to the
    squared distance to the nearest chosen one) from a ``torch.Generator`` seeded with
    ``seed``, so the result is deterministic. Each iteration assigns every box to the anchor
    of highest IoU and moves the anchor to the mean ``(w, h)`` of its boxes; an anchor left
    without boxes jumps to the worst-covered box. Stops when assignments no longer change or
    after ``iters`` iterations.

    Args:
        wh: ``(N, 2)`` positive box widths and heights (pixels).
        k: number of anchors.

    Returns:
        ``(anchors, mean_iou)``: ``(k, 2)`` float32 anchors sorted by area (smallest first)
        and :func:`mean_best_iou` of the boxes with them.

    Raises:
        CnnzooError: for ``k < 1``, ``k`` above the number of distinct boxes, bad shapes, or
            non-positive sizes.
    """
    x = _check_wh(wh)
    if k < 1:
        raise CnnzooError(f"k must be >= 1, got {k}")
    distinct = len(torch.unique(x, dim=0))
    if k > distinct:
        raise CnnzooError(f"k = {k} anchors but only {distinct} distinct box sizes")
    if iters < 1:
        raise CnnzooError(f"iters must be >= 1, got {iters}")

    gen = torch.Generator().manual_seed(seed)
    n = len(x)
    centres = [x[int(torch.randint(n, (1,), generator=gen))]]
    for _ in range(1, k):
        d = 1 - anchor_iou(x, torch.stack(centres)).max(1).values
        weights = d.clamp(min=0) ** 2
        centres.append(x[int(torch.multinomial(weights, 1, generator=gen))])
    anchors = torch.stack(centres)

    assign = None
    for _ in range(iters):
        iou = anchor_iou(x, anchors)
        new_assign = iou.argmax(1)
        if assign is not None and torch.equal(new_assign, assign):
            break
        assign = new_assign
        counts = torch.bincount(assign, minlength=k)
        sums = torch.zeros_like(anchors).index_add_(0, assign, x)
        best = iou.max(1).values
        for j in range(k):
            if counts[j] > 0:
                anchors[j] = sums[j] / counts[j]
            else:
                worst = int(best.argmin())
                anchors[j] = x[worst]
                best[worst] = 1.0
    order = (anchors[:, 0] * anchors[:, 1]).argsort()
    anchors = anchors[order]
    return anchors.float(), mean_best_iou(x, anchors)
