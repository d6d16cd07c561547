"""AutoAnchor: fit a detector's priors to the training boxes at the start of training.

YOLOv3's anchors and SSD's default-box scales are sized for the data they were designed on
(here: 96 px scenes). Like ultralytics' AutoAnchor (YOLOv5), check first whether the current
priors fit the boxes and keep them when they do; otherwise cluster the box sizes with YOLOv2's
``1 - IoU`` k-means (:func:`~cnnzoo.models.detection.anchors.kmeans_anchors`) and take the
fit when it covers the boxes better.

"Fit" means both: a best possible recall (BPR, ultralytics' test) of at least
:data:`BPR_THRESHOLD` — the share of boxes with some prior within a factor
:data:`RATIO_THRESHOLD` of their width and height — and a mean best shape IoU (YOLOv2's
"Avg IOU") of at least :data:`MIN_MEAN_IOU`. ultralytics stops at the BPR because its box
parameterisation cannot leave that factor; YOLOv3's ``p exp(t)`` can, so the BPR alone would
accept 48 px anchors for 190 px boxes.

The result is a set of builder options (``anchors=...``, ``min_scale=...``) recorded in the
run's ``model.json``, so ``eval``, ``predict`` and ``export`` rebuild the same model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from cnnzoo.errors import CnnzooError
from cnnzoo.models.detection.anchors import kmeans_anchors, mean_best_iou

BPR_THRESHOLD = 0.98
"""Keep the priors when at least this share of boxes has a prior within the ratio."""

RATIO_THRESHOLD = 4.0
"""A prior "can reach" a box whose width and height are within this factor of its own
(ultralytics' ``anchor_t``)."""

MIN_MEAN_IOU = 0.5
"""...and when the boxes' mean best shape IoU with the priors is at least this."""


YOLO_OPTIONS = ("anchors",)
SSD_OPTIONS = ("min_scale", "max_scale")


@dataclass
class PriorFit:
    """What AutoAnchor decided.

    Attributes:
        options: the builder options that hold these priors (``("anchors",)``, ...).
        kwargs: builder options giving the fitted priors; empty when the priors are kept.
        bpr: best possible recall of the priors kept or fitted.
        mean_iou: the boxes' mean best shape IoU with them.
        before_bpr, before_mean_iou: the same for the priors the model had.
        boxes: how many boxes were measured.
    """

    options: tuple[str, ...]
    kwargs: dict[str, Any]
    bpr: float
    mean_iou: float
    before_bpr: float
    before_mean_iou: float
    boxes: int
    notes: list[str] = field(default_factory=list)

    @property
    def fitted(self) -> bool:
        """Whether the priors changed."""
        return bool(self.kwargs)

    def to_dict(self) -> dict[str, Any]:
        """The record written into the run's config (plain numbers)."""
        return {
            "fitted": self.fitted,
            "kwargs": self.kwargs,
            "bpr": round(self.bpr, 4),
            "mean_iou": round(self.mean_iou, 4),
            "before_bpr": round(self.before_bpr, 4),
            "before_mean_iou": round(self.before_mean_iou, 4),
            "boxes": self.boxes,
        }


def best_possible_recall(wh: Tensor, priors: Tensor, ratio: float = RATIO_THRESHOLD) -> float:
    """Return the share of boxes ``wh (N, 2)`` with a prior ``(K, 2)`` whose width and height
    are both within a factor ``ratio`` of the box's.

    Raises:
        CnnzooError: for empty or non-positive sizes.
    """
    _check(wh, "wh")
    _check(priors, "priors")
    r = wh.double()[:, None, :] / priors.double()[None, :, :]  # (N, K, 2)
    worst_side = torch.minimum(r, 1 / r).amin(2)  # (N, K)
    return float((worst_side.amax(1) > 1 / ratio).double().mean())


def priors_fit(wh: Tensor, priors: Tensor) -> tuple[bool, float, float]:
    """Return ``(fits, bpr, mean_iou)`` of ``priors`` for boxes ``wh`` (see the module)."""
    bpr = best_possible_recall(wh, priors)
    miou = mean_best_iou(wh, priors)
    return bpr >= BPR_THRESHOLD and miou >= MIN_MEAN_IOU, bpr, miou


def _check(x: Tensor, name: str) -> None:
    if x.dim() != 2 or x.shape[1] != 2 or len(x) == 0:
        raise CnnzooError(f"{name} must be (N, 2) widths and heights, got {tuple(x.shape)}")
    if not bool((x > 0).all()):
        raise CnnzooError(f"{name}: every width and height must be positive")


def _kept(options: tuple[str, ...], wh: Tensor, bpr: float, miou: float, note: str) -> PriorFit:
    return PriorFit(options, {}, bpr, miou, bpr, miou, len(wh), [note])


def _kept_unless_refit(
    options: tuple[str, ...], wh: Tensor, current: Tensor, k: int, what: str
) -> tuple[PriorFit | None, float, float]:
    """Return ``(kept, bpr, mean_iou)`` of the ``current`` priors: ``kept`` is the
    :class:`PriorFit` that keeps them when they fit the boxes or when there are fewer than
    ``k`` distinct box sizes to cluster, else None (k-means should try)."""
    fits, bpr, miou = priors_fit(wh, current)
    if fits:
        return _kept(options, wh, bpr, miou, f"the {what} fit the boxes"), bpr, miou
    if len(torch.unique(wh, dim=0)) < k:
        note = f"fewer than {k} distinct box sizes: {what} kept"
        return _kept(options, wh, bpr, miou, note), bpr, miou
    return None, bpr, miou


def fit_yolo_anchors(wh: Tensor, current: Tensor, seed: int = 0) -> PriorFit:
    """AutoAnchor for YOLO: keep ``current (K, 2)`` anchors when they fit the boxes
    ``wh (N, 2)``, else k-means ``K`` anchors, taken when their mean IoU is higher.

    Returns:
        A :class:`PriorFit` whose ``kwargs`` is ``{"anchors": [[w, h], ...]}`` (pixels,
        rounded to 0.1, smallest area first) when the anchors change.

    Raises:
        CnnzooError: for bad sizes.
    """
    k = len(current)
    kept, bpr, miou = _kept_unless_refit(YOLO_OPTIONS, wh, current, k, "anchors")
    if kept is not None:
        return kept
    fitted, _ = kmeans_anchors(wh, k, seed=seed)
    pairs = [[max(0.1, round(w, 1)), max(0.1, round(h, 1))] for w, h in fitted.double().tolist()]
    anchors = torch.tensor(pairs, dtype=torch.float64)
    new_bpr, new_miou = best_possible_recall(wh, anchors), mean_best_iou(wh, anchors)
    if new_miou <= miou:
        return _kept(YOLO_OPTIONS, wh, bpr, miou, "k-means did not improve the anchors")
    return PriorFit(YOLO_OPTIONS, {"anchors": pairs}, new_bpr, new_miou, bpr, miou, len(wh))


def ssd_prior_shapes(
    scales: list[float], aspect_ratios: list[list[float]], image_size: tuple[int, int]
) -> Tensor:
    """Return the ``(B, 2)`` widths and heights in pixels of every default-box shape of SSD
    maps with these ``scales`` (``m + 1``) and extra ``aspect_ratios`` (one list per map), as
    :func:`~cnnzoo.models.detection.coders.default_boxes` lays them out (before clipping)."""
    h, w = image_size
    shapes = []
    for k, ratios in enumerate(aspect_ratios):
        s, s_next = scales[k], scales[k + 1]
        shapes += [(s, s), (math.sqrt(s * s_next),) * 2]
        shapes += [(s * math.sqrt(a), s / math.sqrt(a)) for a in ratios]
        shapes += [(s / math.sqrt(a), s * math.sqrt(a)) for a in ratios]
    return torch.tensor(shapes, dtype=torch.float64) * torch.tensor([w, h], dtype=torch.float64)


def fit_ssd_scales(
    wh: Tensor,
    scales: list[float],
    aspect_ratios: list[list[float]],
    image_size: tuple[int, int],
    seed: int = 0,
) -> PriorFit:
    """AutoAnchor for SSD: keep the default boxes when they fit the boxes ``wh (N, 2)``;
    else k-means one size per map and take the smallest and largest as SSD's ``s_min`` and
    ``s_max`` (the paper's Eq. 4 spaces the maps' scales linearly between them), when that
    raises the mean IoU.

    Returns:
        A :class:`PriorFit` whose ``kwargs`` is ``{"min_scale": ..., "max_scale": ...}``
        (fractions of the image side, rounded to 0.001) when the default boxes change.

    Raises:
        CnnzooError: for bad sizes.
    """
    current = ssd_prior_shapes(scales, aspect_ratios, image_size)
    m = len(aspect_ratios)
    kept, bpr, miou = _kept_unless_refit(SSD_OPTIONS, wh, current, m, "default boxes")
    if kept is not None:
        return kept
    sizes, _ = kmeans_anchors(wh, m, seed=seed)
    side = math.sqrt(image_size[0] * image_size[1])
    s = (sizes[:, 0] * sizes[:, 1]).sqrt() / side
    s_min, s_max = round(float(s.min()), 3), round(float(s.max()), 3)
    s_min = max(s_min, 0.001)
    s_max = max(s_max, s_min)
    step = (s_max - s_min) / (m - 1) if m > 1 else s_max - s_min
    new_scales = [s_min + step * k for k in range(m)] + [s_max + step if m > 1 else s_max]
    fitted = ssd_prior_shapes(new_scales, aspect_ratios, image_size)
    new_bpr, new_miou = best_possible_recall(wh, fitted), mean_best_iou(wh, fitted)
    if new_miou <= miou:
        return _kept(SSD_OPTIONS, wh, bpr, miou, "k-means did not improve the default boxes")
    fitted_kwargs = {"min_scale": s_min, "max_scale": s_max}
    return PriorFit(SSD_OPTIONS, fitted_kwargs, new_bpr, new_miou, bpr, miou, len(wh))
