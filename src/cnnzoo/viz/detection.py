"""Pictures of detections: boxes with class names and scores drawn on images, and grids of
ground truth next to predictions."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from cnnzoo.viz.segmentation import palette, to_rgb


def box_colours(labels: Tensor) -> list[tuple[int, int, int]]:
    """One colour per box: the Pascal VOC palette entry of its class + 1 (0 is black)."""
    colours = palette()
    return [tuple(int(c) for c in colours[(int(v) + 1) % 256]) for v in labels]  # type: ignore[misc]


def draw_detections(
    image: Tensor | np.ndarray,
    boxes: Tensor,
    labels: Tensor,
    class_names: Sequence[str],
    scores: Tensor | None = None,
    width: int = 1,
) -> np.ndarray:
    """Draw ``boxes`` (xyxy pixels) on ``image`` with ``"name 0.87"`` captions.

    Args:
        image: ``(C, H, W)`` uint8 tensor (1 or 3 channels) or ``(H, W[, 3])`` array.
        boxes: ``(K, 4)``; labels: ``(K,)`` class indices; scores: optional ``(K,)``.

    Returns:
        ``(H, W, 3)`` uint8 RGB array.
    """
    from torchvision.utils import draw_bounding_boxes

    rgb = torch.from_numpy(np.ascontiguousarray(to_rgb(image))).permute(2, 0, 1)
    if len(boxes) == 0:
        return rgb.permute(1, 2, 0).numpy()
    captions = [class_names[int(c)] if 0 <= int(c) < len(class_names) else str(int(c))
                for c in labels]  # fmt: skip
    if scores is not None:
        captions = [f"{name} {float(s):.2f}" for name, s in zip(captions, scores, strict=True)]
    drawn = draw_bounding_boxes(
        rgb, boxes.detach().float().cpu(), captions, colors=box_colours(labels), width=width
    )
    return drawn.permute(1, 2, 0).numpy()


def plot_detections(
    images: Sequence[Tensor],
    targets: Sequence[dict[str, Tensor]] | None,
    predictions: Sequence[dict[str, Tensor]],
    class_names: Sequence[str],
    path: str | Path,
    title: str = "",
    scale: int = 3,
) -> Path:
    """A grid: one row per image with its ground truth boxes (if given) and its predictions.

    Images are enlarged ``scale`` times (nearest neighbour) so that captions stay readable on
    small images.

    Returns:
        The path written.
    """
    # Imported here (figure first: it selects the Agg backend): predict's drawings need no pyplot.
    from cnnzoo.viz.figure import plt, save_figure

    cols = 2 if targets is not None else 1
    fig, axes = plt.subplots(len(images), cols, figsize=(3.2 * cols, 3.0 * len(images)),
                             squeeze=False)  # fmt: skip
    for i, image in enumerate(images):
        big = image.repeat_interleave(scale, -1).repeat_interleave(scale, -2)
        panels = []
        if targets is not None:
            t = targets[i]
            panels.append(("truth", draw_detections(big, t["boxes"] * scale, t["labels"],
                                                    class_names)))  # fmt: skip
        p = predictions[i]
        panels.append(
            ("prediction",
             draw_detections(big, p["boxes"] * scale, p["labels"], class_names, p["scores"]))
        )  # fmt: skip
        for ax, (name, picture) in zip(axes[i], panels, strict=True):
            ax.imshow(picture)
            ax.set_axis_off()
            if i == 0:
                ax.set_title(name)
    if title:
        fig.suptitle(title)
    return save_figure(fig, path)
