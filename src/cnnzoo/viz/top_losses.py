"""Drawing a classifier's most confident mistakes (fastai's ``plot_top_losses``).

Each mistake is one small multiple of two panels: the image under the attribution map of
the class the model predicted (where it looked), then under the map of the true class
(where it should have looked). Its caption reads ``pred / true / loss / prob``, fastai's
order, with the probability of the prediction.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from cnnzoo.files import atomic_write_bytes
from cnnzoo.viz.cam import heat_overlay

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from cnnzoo.explain.top_losses import TopLoss

MAX_NAME = 16  # characters of a class name a caption keeps (cells are ~3 inches wide)
PAIRS_PER_ROW = 4


def _short(name: str) -> str:
    return name if len(name) <= MAX_NAME else name[: MAX_NAME - 1] + "…"


def top_losses_figure(items: Sequence[TopLoss], title: str = "") -> Figure:
    """Return the figure of ``items`` (see the module docstring), at most four pairs a row.

    Raises:
        ValueError: for no items (there is nothing to draw; say so instead).
    """
    import matplotlib.pyplot as plt

    if not items:
        raise ValueError("top_losses_figure needs at least one item")
    cols = min(PAIRS_PER_ROW, len(items))
    rows = math.ceil(len(items) / cols)
    head = 0.5 if title else 0.0
    fig = plt.figure(figsize=(3.3 * cols, 2.35 * rows + head), layout="constrained")
    cells = fig.subfigures(rows, cols, squeeze=False, wspace=0.04, hspace=0.06)
    for cell in cells.flat[len(items) :]:
        cell.set_visible(False)
    for cell, item in zip(cells.flat, items, strict=False):
        cell.suptitle(
            f"{_short(item.pred_name)} / {_short(item.true_name)} / {item.loss:.2f} / "
            f"{item.prob_pred:.2f}\n#{item.index}: true class at {item.prob_true:.2f}",
            fontsize=8,
        )
        left, right = cell.subplots(1, 2)
        for ax, heat, name in (
            (left, item.heat_pred, "predicted"),
            (right, item.heat_true, "true"),
        ):
            ax.imshow(heat_overlay(item.image, heat), interpolation="nearest")
            ax.set_title(f"{name} class", fontsize=7, color="#444")
            ax.axis("off")
    if title:
        fig.suptitle(f"{title}\npred / true / loss / prob of pred", fontsize=10)
    return fig


def top_losses_png(items: Sequence[TopLoss], title: str = "", dpi: int = 100) -> bytes:
    """Return the figure of ``items`` as PNG bytes (for a page that embeds it).

    Raises:
        ValueError: for no items.
    """
    import matplotlib.pyplot as plt

    fig = top_losses_figure(items, title)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    plt.close(fig)
    return buf.getvalue()


def save_top_losses(items: Sequence[TopLoss], path: str | Path, title: str = "") -> Path:
    """Write the figure of ``items`` as a PNG at ``path`` (atomically, creating folders).

    Returns:
        The path written.

    Raises:
        ValueError: for no items.
    """
    path = Path(path)
    atomic_write_bytes(path, top_losses_png(items, title, dpi=110))
    return path
