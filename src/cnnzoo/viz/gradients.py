"""Per-layer gradient norms as lines: layer index (input to output) vs norm, log scale."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt

from cnnzoo.viz.figure import save_figure


def plot_gradient_norms(
    series: dict[str, dict[str, float]], path: str | Path, title: str, logy: bool = True
) -> Path:
    """Draw one line per series: x = layer index from input to output, y = gradient norm.

    Args:
        series: ``{label: {layer name: norm}}`` with layers in forward order.
        path: the PNG to write.
        title: the figure title.
        logy: log-scale y axis (zero norms are left out there).

    Returns:
        The path written.
    """
    fig, ax = plt.subplots(figsize=(7.0, 4.4))
    for label, norms in series.items():
        xs = list(range(1, len(norms) + 1))
        ys = list(norms.values())
        if logy:
            pts = [(x, y) for x, y in zip(xs, ys, strict=True) if y > 0]
            xs, ys = [p[0] for p in pts], [p[1] for p in pts]
        ax.plot(xs, ys, marker=".", linewidth=1.2, markersize=4, label=label)
    if logy:
        ax.set_yscale("log")
    ax.set_xlabel("weight layer (1 = input side)")
    ax.set_ylabel("weight-gradient L2 norm")
    ax.set_title(title)
    ax.grid(alpha=0.3, which="both")
    if series:
        ax.legend(fontsize=8)
    return save_figure(fig, path)
