"""Training curves: loss and a quality metric per epoch, train vs validation."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt

from cnnzoo.viz.figure import save_figure


def _series(rows: list[dict[str, float]], key: str) -> tuple[list[float], list[float]]:
    pts = [(r["epoch"], r[key]) for r in rows if r.get(key) not in (None, "")]
    return [float(p[0]) for p in pts], [float(p[1]) for p in pts]


def plot_training_curves(
    rows: list[dict[str, float]],
    path: str | Path,
    title: str = "",
    metric: str = "accuracy",
    first: str = "loss",
) -> Path:
    """Draw ``first`` (the loss) and ``metric`` (e.g. accuracy, miou) per epoch, train and
    validation, from ``metrics.csv`` rows and save a PNG.

    Returns:
        The path written.
    """
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for ax, name in zip(axes, (first, metric), strict=True):
        for split, style in (("train", "-o"), ("val", "-s")):
            x, y = _series(rows, f"{split}/{name}")
            if x:
                ax.plot(x, y, style, label=split, markersize=3)
        ax.set_xlabel("epoch")
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(title)
    return save_figure(fig, path)
