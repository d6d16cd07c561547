"""A per-class score as horizontal bars (segmentation IoU, detection AP)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import torch

from cnnzoo.viz.figure import save_figure


def plot_class_bars(
    values: torch.Tensor | Sequence[float],
    class_names: Sequence[str],
    path: str | Path,
    title: str,
    xlabel: str = "IoU",
) -> Path:
    """Horizontal bars of one score in [0, 1] per class, with their mean as a dashed line.

    NaN values (a class without ground truth) are drawn as empty rows and left out of the
    mean.

    Returns:
        The path written.
    """
    scores = [float(v) for v in values]
    present = [v for v in scores if not math.isnan(v)]
    fig, ax = plt.subplots(figsize=(6, 0.3 * len(scores) + 1.2))
    ax.barh(range(len(scores)), [0.0 if math.isnan(v) else v for v in scores], color="tab:blue")
    if present:
        mean = sum(present) / len(present)
        ax.axvline(mean, color="tab:red", ls="--", label=f"mean {xlabel} {mean:.3f}")
        ax.legend(loc="lower right")
    ax.set_yticks(range(len(scores)), list(class_names), fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel(xlabel)
    ax.set_title(title)
    return save_figure(fig, path)
