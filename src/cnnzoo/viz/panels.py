"""Figures for notebooks: grids of titled pictures, boxes on an axis, bars per class or model.

Unlike the ``plot_*`` functions of the other modules, which save a PNG for ``cnnzoo``'s
commands, these return the :class:`~matplotlib.figure.Figure` (or the patches drawn), so that
a notebook shows it inline and can still add to it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Patch, Rectangle
from matplotlib.ticker import NullFormatter

from cnnzoo.viz.segmentation import to_rgb

Picture = torch.Tensor | np.ndarray
"""A uint8 ``(C, H, W)`` tensor or ``(H, W, 3)`` array (drawn as it is), or a 2-D map
``(H, W)`` (drawn with a colour map)."""

BACKGROUND = (0.12, 0.12, 0.12)


def class_colours(num_classes: int) -> np.ndarray:
    """Return one clearly distinct colour per class: class 0 (background) near-black, the
    others tab10's colours (tab20's beyond 11 classes).

    Unlike the Pascal VOC palette of :func:`cnnzoo.viz.segmentation.palette`, no class gets a
    colour that is almost black (VOC's class 8 is ``(64, 0, 0)``).

    Returns:
        ``(num_classes, 3)`` floats in ``[0, 1]``, row ``c`` for class ``c``.

    Raises:
        ValueError: for fewer than 1 or more than 21 classes.
    """
    if not 1 <= num_classes <= 21:
        raise ValueError(f"class_colours draws 1 to 21 classes, got {num_classes}")
    cmap = plt.get_cmap("tab10" if num_classes <= 11 else "tab20")
    return np.vstack([BACKGROUND, cmap(np.arange(num_classes - 1))[:, :3]])


def class_legend(names: Sequence[str], colours: np.ndarray, classes: Any = None) -> list[Patch]:
    """Legend entries for ``classes`` (class indices; default: every class of ``names``).

    Returns:
        One colour patch per class, labelled with its name, in the order of ``classes``: pass
        them as ``legend=`` to :func:`image_grid`.

    Raises:
        IndexError: for a class index beyond ``names`` or ``colours``.
    """
    chosen = range(len(names)) if classes is None else classes
    return [Patch(color=colours[int(c)], label=names[int(c)]) for c in chosen]


def _draw(ax: Axes, picture: Picture, **style: Any) -> None:
    """Show a picture: RGB as it is, a 2-D map with the colour map in ``style``."""
    array = picture.detach().cpu() if isinstance(picture, torch.Tensor) else np.asarray(picture)
    if array.ndim == 2:
        ax.imshow(np.asarray(array, dtype=np.float64), **style)
    elif array.ndim == 3:
        ax.imshow(to_rgb(array))
    else:
        raise ValueError(f"a picture is (C, H, W), (H, W, 3) or (H, W), got {tuple(array.shape)}")


def image_grid(
    rows: Sequence[Sequence[tuple[str, Picture]]],
    size: float = 2.3,
    cmap: str = "viridis",
    vmin: float | None = None,
    vmax: float | None = None,
    first_row_titles: bool = False,
    title: str = "",
    legend: Sequence[Patch] | None = None,
    legend_columns: int = 6,
    colorbar: bool = False,
) -> Figure:
    """Draw rows of ``(title, picture)`` panels, axes hidden, one picture per panel.

    Args:
        rows: the panels, row by row; shorter rows leave their last panels empty.
        size: inches per panel (the side of its square).
        cmap, vmin, vmax: how 2-D maps are coloured (the same scale for all of them).
        first_row_titles: title only the first row's panels (column headings).
        title: the figure's title.
        legend: entries (e.g. from :func:`class_legend`) for one legend below the panels.
        colorbar: add one colour bar for the 2-D maps, beside all panels.

    Returns:
        The figure, laid out; ``fig.axes`` holds the panels row by row (then the colour bar).

    Raises:
        ValueError: for no panels, or a picture that is neither RGB nor a 2-D map.
    """
    cols = max((len(row) for row in rows), default=0)
    if cols == 0:
        raise ValueError("image_grid needs at least one panel")
    bottom = 0.0 if not legend else 0.35 / (size * len(rows)) + 0.05
    fig, axes = plt.subplots(
        len(rows), cols, figsize=(size * cols, size * len(rows) + 0.5), squeeze=False
    )
    maps = None
    for r, row in enumerate(rows):
        for c, ax in enumerate(axes[r]):
            ax.set_axis_off()
            if c >= len(row):
                continue
            name, picture = row[c]
            _draw(ax, picture, cmap=cmap, vmin=vmin, vmax=vmax)
            if np.ndim(picture) == 2:
                maps = ax.images[-1]
            if r == 0 or not first_row_titles:
                ax.set_title(name, fontsize=9)
    if title:
        fig.suptitle(title)
    if legend:
        fig.legend(
            handles=list(legend), loc="lower center", ncol=legend_columns, fontsize=8, frameon=False
        )
    if colorbar and maps is not None:
        fig.colorbar(maps, ax=axes.ravel().tolist(), fraction=0.03)
    else:
        fig.tight_layout(rect=(0, bottom, 1, 1))
    return fig


def add_boxes(
    ax: Axes,
    boxes: torch.Tensor | np.ndarray | Sequence[Sequence[float]],
    colours: Any = "white",
    lw: float = 1.0,
    **style: Any,
) -> list[Rectangle]:
    """Draw boxes ``(K, 4)`` (or one box ``(4,)``), xyxy pixels, as rectangles (unfilled
    unless ``fill=True``).

    Args:
        colours: one matplotlib colour for all boxes, or a sequence of one colour per box.
        style: more :class:`~matplotlib.patches.Rectangle` options (``alpha``, ``ls``...).

    Returns:
        The rectangles added to ``ax``, in the boxes' order.

    Raises:
        ValueError: for boxes that are not ``(K, 4)``, or a number of colours other than K.
    """
    array = np.asarray(
        boxes.detach().cpu() if isinstance(boxes, torch.Tensor) else boxes, dtype=np.float64
    )
    if array.ndim == 1 and array.shape[0] == 4:
        array = array[None]
    if array.ndim != 2 or array.shape[1] != 4:
        raise ValueError(f"boxes must be (K, 4) xyxy, got shape {array.shape}")
    single = isinstance(colours, str) or (
        isinstance(colours, tuple)
        and len(colours) in (3, 4)
        and all(isinstance(v, float) for v in colours)
    )
    palette = [colours] * len(array) if single else list(colours)
    if len(palette) != len(array):
        raise ValueError(f"{len(palette)} colours for {len(array)} boxes")
    style.setdefault("fill", False)
    patches = []
    for (x1, y1, x2, y2), colour in zip(array.tolist(), palette, strict=True):
        patch = Rectangle((x1, y1), x2 - x1, y2 - y1, lw=lw, color=colour, **style)
        patches.append(ax.add_patch(patch))
    return patches


def cost_bars(
    table: Mapping[str, Mapping[str, float]],
    metrics: Mapping[str, str],
    colours: Sequence[Any] | None = None,
    title: str = "",
) -> Figure:
    """Horizontal bars on log scales, one panel per metric, one bar per row of ``table``.

    Args:
        table: ``{row name: {metric key: value}}``, drawn top to bottom in this order
            (e.g. ``{"fcn8s": {"params": 1.2e6, "gmacs": 0.13, "ms": 3.1}}``).
        metrics: ``{metric key: axis label}``, one panel each, left to right.
        colours: one colour per row (default: all blue).
        title: the figure's title.

    Returns:
        The figure, laid out; ``fig.axes`` are the panels in the order of ``metrics``.

    Raises:
        ValueError: for an empty table or no metrics, a wrong number of colours, a missing
            value, or a value that is not positive (a log scale cannot show it).
    """
    names = list(table)
    if not names or not metrics:
        raise ValueError("cost_bars needs at least one row and one metric")
    colours = ["tab:blue"] * len(names) if colours is None else list(colours)
    if len(colours) != len(names):
        raise ValueError(f"{len(colours)} colours for {len(names)} rows")
    fig, axes = plt.subplots(
        1,
        len(metrics),
        figsize=(4.1 * len(metrics), 0.4 * len(names) + 1.4),
        sharey=True,
        squeeze=False,
    )
    for ax, (key, label) in zip(axes[0], metrics.items(), strict=True):
        values = []
        for name in names:
            value = table[name].get(key)
            if value is None or not float(value) > 0:
                raise ValueError(f"{name}: {key} must be a positive number, got {value}")
            values.append(float(value))
        ax.barh(range(len(names)), values, color=colours)
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel(f"{label} (log scale)")
        ax.grid(axis="x", alpha=0.3)
    axes[0, 0].set_yticks(range(len(names)), names, fontsize=9)
    axes[0, 0].invert_yaxis()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def class_bars(
    panels: Mapping[str, Mapping[str, Sequence[float] | torch.Tensor]],
    class_names: Sequence[str],
    xlabel: str = "IoU",
    mean: bool = False,
    title: str = "",
) -> Figure:
    """Horizontal bars of scores in ``[0, 1]`` per class: one panel per entry of ``panels``,
    one bar per class and series (grouped when a panel has several series).

    Args:
        panels: ``{panel title: {series label: one score per class}}``; NaN (a class without
            ground truth) draws no bar.
        class_names: the names of the classes, in the scores' order (top to bottom).
        xlabel: the scores' name.
        mean: draw each series' mean over its non-NaN scores as a dashed line (its value in
            the legend).
        title: the figure's title.

    Returns:
        The figure, laid out; ``fig.axes`` are the panels in the order of ``panels``.

    Raises:
        ValueError: for no panels, a panel without series, or a series whose length is not
            the number of classes.
    """
    if not panels or not all(panels.values()):
        raise ValueError("class_bars needs at least one panel with at least one series")
    n = len(class_names)
    fig, axes = plt.subplots(
        1,
        len(panels),
        figsize=(0.5 + 4.6 * len(panels), 0.28 * n + 1.6),
        sharey=True,
        squeeze=False,
    )
    y = np.arange(n)
    for ax, (name, series) in zip(axes[0], panels.items(), strict=True):
        width = 0.8 / len(series)
        for k, (label, scores) in enumerate(series.items()):
            values = [float(v) for v in scores]
            if len(values) != n:
                raise ValueError(f"{name}, {label}: {len(values)} scores for {n} classes")
            offset = (k - (len(series) - 1) / 2) * width
            bars = ax.barh(y + offset, np.nan_to_num(values), width, label=label)
            present = [v for v in values if not math.isnan(v)]
            if mean and present:
                average = sum(present) / len(present)
                ax.axvline(
                    average,
                    color=bars.patches[0].get_facecolor(),
                    ls="--",
                    lw=1,
                    label=f"mean {xlabel} {average:.3f}",
                )
        ax.set_xlim(0, 1)
        ax.set_xlabel(xlabel)
        ax.set_title(name, fontsize=10)
        ax.grid(axis="x", alpha=0.3)
        ax.legend(loc="best", fontsize=7)
    axes[0, 0].set_yticks(y, list(class_names), fontsize=8)
    axes[0, 0].invert_yaxis()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig
