"""Image grids: named rows of images (inputs, reconstructions, samples, translations)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import torch
from torch import Tensor

from cnnzoo.viz.figure import save_figure
from cnnzoo.viz.tile import tile


def save_rows(rows: Sequence[tuple[str, Tensor]], path: str | Path, title: str = "") -> Path:
    """Draw each ``(name, images (N, C, H, W) floats in [0, 1])`` as one labelled row.

    Rows may differ in channels (gray rows are shown gray) and in ``N``; every image is
    drawn at the size of the first row's images.

    Returns:
        The path written.

    Raises:
        ValueError: for no rows.
    """
    if not rows:
        raise ValueError("save_rows needs at least one row")
    height, width = rows[0][1].shape[-2:]
    most = max(len(images) for _, images in rows)
    size = (min(16, 0.9 * most + 1.5), 1.1 * len(rows) + 0.6)
    fig, axes = plt.subplots(len(rows), 1, figsize=size, squeeze=False)
    for ax, (name, images) in zip(axes[:, 0], rows, strict=True):
        x = images.detach().float().clamp(0, 1)
        if tuple(x.shape[-2:]) != (height, width):
            x = torch.nn.functional.interpolate(x, size=(height, width), mode="nearest")
        grid = tile(x, nrow=most, padding=1, pad_value=1.0)
        ax.imshow(grid.permute(1, 2, 0).numpy(), interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_ylabel(name, rotation=0, ha="right", va="center", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    return save_figure(fig, path)
