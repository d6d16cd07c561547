"""Precision-recall curves of a detector: one small panel per class, two IoU thresholds."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import torch
from torch import Tensor

from cnnzoo.viz.figure import save_figure

Curve = tuple[Tensor, Tensor] | None
"""``(recall, precision)`` after each detection in decreasing-score order; None: the class
has no ground truth."""

_STYLES = (("tab:blue", "blue", 0.15), ("tab:orange", "orange", 0.0))  # colour, its name, fill


def precision_envelope(precision: Tensor) -> Tensor:
    """Return the precision made monotone from the right (the best precision at this recall
    or any higher one): the curve whose area is the all-point AP."""
    if precision.numel() == 0:
        return precision
    return precision.flip(0).cummax(0).values.flip(0)


def plot_pr_curves(
    curves: dict[float, Sequence[Curve]],
    class_names: Sequence[str],
    path: str | Path,
    title: str,
    columns: int = 5,
) -> Path:
    """Draw each class's precision-recall curve in its own panel, one line per IoU threshold.

    Args:
        curves: for each IoU threshold (at most two, e.g. 0.5 and 0.75), the per-class
            curves of :func:`cnnzoo.tasks.voc_ap.pr_curves`.
        class_names: the names of the classes, in class-id order.
        title: the figure's title.
        columns: panels per row.

    Returns:
        The path written.

    Raises:
        ValueError: for no thresholds, more than two, or curves of another number of classes.
    """
    if not curves or len(curves) > len(_STYLES):
        raise ValueError(f"expected one or two IoU thresholds, got {len(curves)}")
    if any(len(per_class) != len(class_names) for per_class in curves.values()):
        raise ValueError(f"expected a curve (or None) for each of {len(class_names)} classes")
    n = len(class_names)
    cols = min(columns, n)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2.3 * cols, 2.2 * rows + 0.6), squeeze=False)
    for c, ax in enumerate(axes.flat):
        if c >= n:
            ax.axis("off")
            continue
        label = []
        for (iou, per_class), (colour, _, alpha) in zip(curves.items(), _STYLES, strict=False):
            curve = per_class[c]
            if curve is None:
                continue
            recall, precision = curve
            envelope = precision_envelope(precision)
            r = torch.cat([torch.zeros(1, dtype=recall.dtype), recall]).numpy()
            p = torch.cat([envelope[:1] if envelope.numel() else torch.zeros(1), envelope])
            ax.step(r, p.numpy(), where="post", color=colour, lw=1.4)
            if alpha:
                ax.fill_between(r, p.numpy(), step="post", color=colour, alpha=alpha)
            ap = _area(recall, envelope)
            label.append(f"{_ap_name(iou)} {ap:.2f}")
        ax.set_title(f"{class_names[c]}\n{'  '.join(label) or 'no objects'}", fontsize=8)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
        if c % cols == 0:
            ax.set_ylabel("precision", fontsize=8)
        if c >= n - cols:
            ax.set_xlabel("recall", fontsize=8)
    key = ", ".join(
        f"{name}: IoU {iou:g}" for iou, (_, name, _) in zip(curves, _STYLES, strict=False)
    )
    fig.suptitle(f"{title} ({key})", fontsize=10)
    return save_figure(fig, path)


def _ap_name(iou: float) -> str:
    """``AP50`` for IoU 0.5, as in COCO's tables."""
    return f"AP{round(iou * 100)}"


def _area(recall: Tensor, envelope: Tensor) -> float:
    """The area under the monotone curve (all-point AP; 0 without detections)."""
    if recall.numel() == 0:
        return 0.0
    widths = torch.diff(recall, prepend=torch.zeros(1, dtype=recall.dtype))
    return float((widths * envelope).sum())
