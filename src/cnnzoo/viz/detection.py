"""Pictures of detections: boxes with class names and scores drawn on images, and grids of
ground truth next to predictions."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
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
    """Draw ``boxes`` (xyxy pixels) on ``image``, each captioned ``"name 0.87"`` on a tab of
    its class colour (white or black text, whichever reads better on it).

    Drawn with Pillow, so that ``cnnzoo predict`` with a detector does not import torchvision
    (whose import costs about a second, see ``cnnzoo.models.detection.ops``).

    Args:
        image: ``(C, H, W)`` uint8 tensor (1 or 3 channels) or ``(H, W[, 3])`` array.
        boxes: ``(K, 4)``; labels: ``(K,)`` class indices; scores: optional ``(K,)``.
        width: line width of the boxes in pixels.

    Returns:
        ``(H, W, 3)`` uint8 RGB array.
    """
    from PIL import Image, ImageDraw, ImageFont

    canvas = Image.fromarray(np.ascontiguousarray(to_rgb(image)))
    if len(boxes) == 0:
        return np.asarray(canvas).copy()
    captions = [class_names[int(c)] if 0 <= int(c) < len(class_names) else str(int(c))
                for c in labels]  # fmt: skip
    if scores is not None:
        captions = [f"{name} {float(s):.2f}" for name, s in zip(captions, scores, strict=True)]
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default()
    for box, colour, caption in zip(boxes.detach().float().cpu().tolist(), box_colours(labels),
                                    captions, strict=True):  # fmt: skip
        x1, y1, x2, y2 = box
        draw.rectangle((x1, y1, x2, y2), outline=colour, width=width)
        left, top, right, bottom = draw.textbbox((x1, y1), caption, font=font)
        tab = (x1, y1, x1 + (right - left) + 3, y1 + (bottom - top) + 3)
        draw.rectangle(tab, fill=colour)
        light = 0.299 * colour[0] + 0.587 * colour[1] + 0.114 * colour[2] > 140
        draw.text((x1 + 1 - (left - x1), y1 + 1 - (top - y1)), caption, font=font,
                  fill=(0, 0, 0) if light else (255, 255, 255))  # fmt: skip
    return np.asarray(canvas).copy()


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
