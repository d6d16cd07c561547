"""Drawing what a layer computes: small multiples of feature maps and of filters.

Each feature map is scaled to its own 0..1 (one perceptual colormap, dark = low), so a
channel's pattern shows whatever its range; channels come most active first
(:meth:`~cnnzoo.explain.features.FeatureMaps.channel_order`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

from cnnzoo.errors import CnnzooError

if TYPE_CHECKING:
    from cnnzoo.explain.features import FeatureMaps

MAP_CMAP = "viridis"  # perceptually uniform: equal steps in activation look equal
SIGNED_CMAP = "RdBu_r"  # diverging, white at 0: red positive, blue negative weights
CAPTION_LIMIT = 32  # more panels than this: captions would crowd, so none


def unit_scale(maps: Tensor) -> Tensor:
    """Scale each ``(h, w)`` map of ``(N, h, w)`` to its own 0..1 (a constant map: zeros).

    Returns:
        ``(N, h, w)`` float tensor.
    """
    flat = maps.detach().float().flatten(1)
    low = flat.min(1, keepdim=True).values
    span = flat.max(1, keepdim=True).values - low
    scaled = torch.where(span > 0, (flat - low) / span.clamp(min=1e-12), torch.zeros_like(flat))
    return scaled.view_as(maps)


def _grid(n: int, max_cols: int = 8) -> tuple[int, int]:
    cols = min(n, max_cols, max(1, math.ceil(math.sqrt(n))))
    return -(-n // cols), cols


def save_feature_grid(
    fm: FeatureMaps, path: str | Path, max_maps: int = 64, title: str = "", by: str = "mean"
) -> Path:
    """Save the most active channels of one layer as small multiples.

    Args:
        fm: the layer's maps (:func:`~cnnzoo.explain.features.feature_maps`).
        path: the PNG to write.
        max_maps: at most this many channels are drawn.
        title: the figure's title (default: the layer, its shape and the order).
        by: the statistic channels are ranked by (see
            :meth:`~cnnzoo.explain.features.FeatureMaps.channel_order`).

    Returns:
        The path written.

    Raises:
        CnnzooError: for ``max_maps < 1`` or an unknown ``by``.
    """
    import matplotlib.pyplot as plt

    from cnnzoo.viz.figure import save_figure

    if max_maps < 1:
        raise CnnzooError(f"max_maps must be at least 1, got {max_maps}")
    order = fm.channel_order(by)[:max_maps]
    rows, cols = _grid(len(order))
    captions = len(order) <= CAPTION_LIMIT
    fig, axes = plt.subplots(
        rows, cols, figsize=(1.25 * cols, (1.45 if captions else 1.25) * rows + 0.5), squeeze=False
    )
    scaled = unit_scale(fm.maps[order])
    for ax in axes.flat:
        ax.axis("off")
    for ax, c, image in zip(axes.flat, order, scaled, strict=False):
        ax.imshow(image.numpy(), cmap=MAP_CMAP, vmin=0, vmax=1, interpolation="nearest")
        if captions:
            ax.set_title(f"#{c} {by} {getattr(fm.stats[c], by):.2f}", fontsize=7)
    c, h, w = fm.maps.shape
    shown = f"top {len(order)} of {c}" if len(order) < c else f"all {c}"
    fig.suptitle(
        title or f"{fm.layer}: {shown} channels ({h}x{w}) by {by}, each scaled to its range",
        fontsize=9,
    )
    return save_figure(fig, path)


def filter_images(weights: Tensor) -> tuple[np.ndarray, str | None]:
    """Turn convolution weights ``(out, in, k, k)`` into one image per filter.

    Three input channels: RGB, each filter min-max scaled jointly over its channels. One:
    gray, each filter min-max scaled. More: the mean over the input channels, scaled to
    -1..1 by the filter's largest magnitude (0 stays 0), for a diverging colormap.

    Returns:
        ``(images, cmap)``: ``(out, k, k, 3)`` in 0..1 with ``cmap`` None, or ``(out, k, k)``
        with the colormap to draw them in (``gray``, or :data:`SIGNED_CMAP` for -1..1).

    Raises:
        CnnzooError: for weights that are not 4-D.
    """
    if weights.ndim != 4:
        raise CnnzooError(
            f"expected convolution weights (out, in, kh, kw), got shape {tuple(weights.shape)}"
        )
    w = weights.detach().float().cpu()
    if w.shape[1] == 3:
        flat = unit_scale(w.flatten(1)[:, None, :])  # jointly over channels and positions
        return flat.view_as(w).permute(0, 2, 3, 1).numpy(), None
    if w.shape[1] == 1:
        return unit_scale(w[:, 0]).numpy(), "gray"
    mean = w.mean(1)
    top = mean.flatten(1).abs().max(1).values.clamp(min=1e-12)
    return (mean / top[:, None, None]).numpy(), SIGNED_CMAP


def save_filter_grid(weights: Tensor, path: str | Path, title: str = "") -> Path:
    """Save each filter of a convolution as a small image (see :func:`filter_images`).

    Args:
        weights: ``(out, in, k, k)`` convolution weights
            (:func:`~cnnzoo.explain.features.first_filters`).
        path: the PNG to write.
        title: the figure's title (default: the shape and how the filters are drawn).

    Returns:
        The path written.

    Raises:
        CnnzooError: for weights that are not 4-D.
    """
    import matplotlib.pyplot as plt

    from cnnzoo.viz.figure import save_figure

    images, cmap = filter_images(weights)
    out, inputs, kh, kw = weights.shape
    cols = min(out, 16 if out > 64 else 8)  # 16 filters: 2 rows of 8; 64: 8 x 8
    rows = -(-out // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(0.8 * cols + 0.4, 0.8 * rows + 0.6))
    axes = np.atleast_1d(axes)
    limits = {"vmin": -1, "vmax": 1} if cmap == SIGNED_CMAP else {"vmin": 0, "vmax": 1}
    for ax in axes.flat:
        ax.axis("off")
    for ax, image in zip(axes.flat, images, strict=False):
        ax.imshow(image, cmap=cmap, interpolation="nearest", **(limits if cmap else {}))
    how = {None: "RGB", "gray": "gray"}.get(cmap, "mean over inputs, red + / blue -")
    fig.suptitle(title or f"{out} filters {kh}x{kw}, {inputs} in ({how})", fontsize=9)
    return save_figure(fig, path)


def save_stage_maps(
    image: Tensor | np.ndarray,
    stages: Sequence[FeatureMaps],
    path: str | Path,
    per_stage: int = 8,
    title: str = "",
    by: str = "mean",
) -> Path:
    """Save one row per layer, shallow to deep: the input, then its most active channels.

    Args:
        image: the image the model saw, uint8 ``(C, H, W)`` or ``(H, W, 3)``.
        stages: the layers' maps, one row each, in the order given.
        path: the PNG to write.
        per_stage: channels drawn per row.
        title: the figure's title.
        by: the statistic channels are ranked by.

    Returns:
        The path written.

    Raises:
        CnnzooError: for no stages or ``per_stage < 1``.
    """
    import matplotlib.pyplot as plt

    from cnnzoo.viz.figure import save_figure
    from cnnzoo.viz.segmentation import to_rgb

    if not stages or per_stage < 1:
        raise CnnzooError(f"need at least one stage and per_stage >= 1, got {len(stages)}, "
                          f"{per_stage}")  # fmt: skip
    cols = per_stage + 1
    fig, axes = plt.subplots(
        len(stages), cols, figsize=(1.15 * cols + 0.9, 1.3 * len(stages) + 0.5), squeeze=False
    )
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_frame_on(False)
    axes[0, 0].imshow(to_rgb(image), interpolation="nearest")
    axes[0, 0].set_title("input", fontsize=8)
    for row, fm in zip(axes, stages, strict=True):
        order = fm.channel_order(by)[:per_stage]
        c, h, w = fm.maps.shape
        row[0].set_ylabel(f"{fm.layer}\n{c} ch, {h}x{w}", rotation=0, ha="right", va="center",
                          fontsize=8)  # fmt: skip
        for ax, channel, picture in zip(row[1:], order, unit_scale(fm.maps[order]), strict=False):
            ax.imshow(picture.numpy(), cmap=MAP_CMAP, vmin=0, vmax=1, interpolation="nearest")
            ax.set_title(f"#{channel}", fontsize=7)
    fig.suptitle(title or f"most active channels by {by}, each scaled to its range", fontsize=9)
    return save_figure(fig, path)
