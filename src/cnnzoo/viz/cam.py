"""Drawing attribution maps: a heat map over the image, and one panel per explanation."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cnnzoo.viz.segmentation import to_rgb

CMAP = "inferno"  # perceptually uniform, dark for 0, so the unimportant image stays readable


def heat_overlay(
    image: torch.Tensor | np.ndarray, heatmap: np.ndarray, alpha: float = 0.5
) -> np.ndarray:
    """Blend a heat map (0..1, ``(H, W)``, same size as the image) over an image.

    Args:
        image: uint8 ``(C, H, W)`` tensor (C = 1 or 3) or ``(H, W, 3)`` array.
        heatmap: attribution in 0..1.
        alpha: weight of the heat map's colours where the map is 1 (it fades to
            ``alpha / 3`` where the map is 0, so the image shows through the cold parts).

    Returns:
        ``(H, W, 3)`` uint8.
    """
    from matplotlib import colormaps

    rgb = to_rgb(image).astype(np.float64)
    heat = np.clip(np.asarray(heatmap, dtype=np.float64), 0, 1)
    colours = colormaps[CMAP](heat)[..., :3] * 255.0
    weight = (alpha / 3 + (2 * alpha / 3) * heat)[..., None]
    return np.rint((1 - weight) * rgb + weight * colours).astype(np.uint8)


def save_explanations(
    image: torch.Tensor | np.ndarray,
    explanations: Sequence[Any],
    path: str | Path,
    title: str = "",
) -> Path:
    """Save small multiples: the image, then one heat-map panel per explanation.

    Args:
        image: the image the model saw, uint8 ``(C, H, W)``.
        explanations: :class:`~cnnzoo.explain.cam.Explanation` items; a detection's box is
            outlined on its own panel only (its class and score are the panel's caption).
        path: the PNG to write.
        title: the figure's title (file, method, layer).

    Returns:
        The path written.
    """
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    from cnnzoo.viz.figure import save_figure

    n = len(explanations) + 1
    cols = min(n, 4)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(2.6 * cols, 2.8 * rows), squeeze=False)
    panels = [(to_rgb(image), "input", None)]
    for ex in explanations:
        panel = heat_overlay(image, ex.heatmap)
        caption = ex.subject.title
        faith = getattr(ex, "faithfulness", None)
        if faith is not None:
            caption += f"\ndel {faith.deletion:.2f} · ins {faith.insertion:.2f}"
        panels.append((panel, caption, ex.subject.box))
    for ax in axes.flat:
        ax.axis("off")
    for ax, (picture, caption, box) in zip(axes.flat, panels, strict=False):
        ax.imshow(picture, interpolation="nearest")
        ax.set_title(caption, fontsize=9)
        if box is not None:  # a thin outline: the heat inside the box stays visible
            x1, y1, x2, y2 = box
            outline = Rectangle((x1 - 0.5, y1 - 0.5), x2 - x1, y2 - y1, fill=False,
                                edgecolor="#00e5ff", linewidth=1.2)  # fmt: skip
            ax.add_patch(outline)
    if title:
        fig.suptitle(title, fontsize=10)
    return save_figure(fig, path)
