"""Confusion matrix as a heat map with counts."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import torch

from cnnzoo.viz.figure import save_figure


def plot_confusion_matrix(
    matrix: torch.Tensor, class_names: Sequence[str], path: str | Path, title: str = ""
) -> Path:
    """Draw ``matrix`` (rows: true class, columns: predicted) and save a PNG.

    Returns:
        The path written.
    """
    n = len(class_names)
    size = max(5.0, 0.55 * n + 2)
    fig, ax = plt.subplots(figsize=(size, size * 0.9))
    m = matrix.float()
    normalised = m / m.sum(1, keepdim=True).clamp(min=1)
    ax.imshow(normalised, cmap="Blues", vmin=0, vmax=1)
    if n <= 30:
        for i in range(n):
            for j in range(n):
                v = int(m[i, j])
                color = "white" if normalised[i, j] > 0.5 else "black"
                ax.text(j, i, str(v), ha="center", va="center", fontsize=7, color=color)
        ax.set_xticks(range(n), class_names, rotation=45, ha="right", fontsize=8)
        ax.set_yticks(range(n), class_names, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title or "confusion matrix")
    return save_figure(fig, path)
