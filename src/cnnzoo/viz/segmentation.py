"""Pictures of segmentations: a class palette, colour masks, overlays."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from cnnzoo.viz.figure import save_image

IGNORE_COLOUR = (255, 255, 255)


def palette(num_colours: int = 256) -> np.ndarray:
    """Return the Pascal VOC colour map: ``(num_colours, 3)`` uint8, class ``i`` -> row ``i``.

    Colours come from the bits of the class index spread over the high bits of R, G and B,
    so neighbouring classes get clearly different colours; class 0 is black. Index 255
    (ignore) is white.
    """
    colours = np.zeros((256, 3), dtype=np.uint8)
    for index in range(256):
        c, r, g, b = index, 0, 0, 0
        for shift in range(7, -1, -1):
            r |= (c & 1) << shift
            g |= ((c >> 1) & 1) << shift
            b |= ((c >> 2) & 1) << shift
            c >>= 3
        colours[index] = (r, g, b)
    colours[255] = IGNORE_COLOUR
    return colours[:num_colours]


def colorize(mask: torch.Tensor | np.ndarray) -> np.ndarray:
    """Return the colour image ``(H, W, 3)`` uint8 of a label mask ``(H, W)`` (0..255)."""
    labels = np.asarray(mask, dtype=np.int64).clip(0, 255)
    return palette()[labels]


def to_rgb(image: torch.Tensor | np.ndarray) -> np.ndarray:
    """Return a uint8 ``(C, H, W)`` tensor (C = 1 or 3) or ``(H, W, 3)`` array as ``(H, W, 3)``."""
    rgb = np.asarray(image)
    if rgb.ndim == 2:
        rgb = rgb[..., None]
    elif isinstance(image, torch.Tensor) or rgb.shape[-1] not in (1, 3):
        rgb = rgb.transpose(1, 2, 0)
    if rgb.shape[-1] == 1:
        rgb = np.repeat(rgb, 3, axis=-1)
    return rgb


def overlay(
    image: torch.Tensor | np.ndarray,
    mask: torch.Tensor | np.ndarray,
    alpha: float = 0.5,
    paint_background: bool = False,
) -> np.ndarray:
    """Blend a label mask's colours over an image.

    Args:
        image: uint8 ``(C, H, W)`` tensor (C = 1 or 3) or ``(H, W, 3)`` array.
        mask: labels ``(H, W)``; 255 (ignore) is never painted, class 0 (background) only
            with ``paint_background`` (its colour is black: the image is dimmed there).
        alpha: weight of the mask colours.
        paint_background: blend class 0 too.

    Returns:
        ``(H, W, 3)`` uint8.
    """
    rgb = to_rgb(image)
    labels = np.asarray(mask, dtype=np.int64)
    painted = ((labels != 255) & ((labels != 0) | paint_background))[..., None]
    blend = (1 - alpha) * rgb.astype(np.float64) + alpha * colorize(labels).astype(np.float64)
    return np.where(painted, np.rint(blend), rgb).astype(np.uint8)


def save_label_png(mask: torch.Tensor | np.ndarray, path: str | Path) -> Path:
    """Write a label mask as a palette PNG: pixel value = class index, shown in colour.

    It reads back with :func:`cnnzoo.data.segmentation.load_mask` as the same labels.

    Returns:
        The path written.
    """
    image = Image.fromarray(np.asarray(mask, dtype=np.uint8), mode="P")
    image.putpalette(palette().flatten().tolist())
    return save_image(image, path)


def plot_overlays(
    images: Sequence[torch.Tensor],
    targets: Sequence[torch.Tensor] | None,
    predictions: Sequence[torch.Tensor],
    class_names: Sequence[str],
    path: str | Path,
    title: str = "",
) -> Path:
    """A grid: one row per image with the image, the ground truth (if any) and the prediction
    overlaid, plus a legend of the classes present.

    Returns:
        The path written.
    """
    # Imported here (figure first: it selects the Agg backend): predict's overlays need no pyplot.
    from cnnzoo.viz.figure import plt, save_figure

    cols = 3 if targets is not None else 2
    rows = len(images)
    fig, axes = plt.subplots(rows, cols, figsize=(2.6 * cols + 1.6, 2.5 * rows), squeeze=False)
    present: set[int] = set()
    for i, image in enumerate(images):
        panels = [("image", to_rgb(image))]
        if targets is not None:
            panels.append(("truth", overlay(image, targets[i], 0.75, paint_background=True)))
            present.update(int(v) for v in torch.as_tensor(targets[i]).unique())
        panels.append(("prediction", overlay(image, predictions[i], 0.75, True)))
        present.update(int(v) for v in torch.as_tensor(predictions[i]).unique())
        for ax, (name, picture) in zip(axes[i], panels, strict=True):
            ax.imshow(picture)
            ax.set_axis_off()
            if i == 0:
                ax.set_title(name)
    colours = palette()
    handles = [
        plt.Rectangle((0, 0), 1, 1, color=colours[c] / 255)
        for c in sorted(present)
        if 0 < c < len(class_names)
    ]
    labels = [class_names[c] for c in sorted(present) if 0 < c < len(class_names)]
    if handles:
        fig.legend(handles, labels, loc="center right", fontsize=8, frameon=False)
    if title:
        fig.suptitle(title)
    fig.tight_layout(rect=(0, 0, 1 - 1.5 / (2.6 * cols + 1.6), 1))
    return save_figure(fig, path)
