"""Accuracy against the number of labelled images, one line per training method."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt

from cnnzoo.viz.figure import save_figure


def plot_accuracy_vs_labels(
    rows: Sequence[dict[str, Any]],
    methods: Sequence[str],
    sizes: Sequence[int],
    path: str | Path,
    xlabel: str,
    ylabel: str,
    title: str,
) -> Path:
    """Plot mean accuracy (error bars: std) against labels per class (log x) per method.

    ``rows`` carry ``method``, ``per_class``, ``mean`` and ``std``; rows of other methods
    (or without a method) are ignored.

    Returns:
        The PNG written.
    """
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for method in methods:
        pts = [r for r in rows if r.get("method") == method]
        ax.errorbar(
            [r["per_class"] for r in pts], [r["mean"] for r in pts],
            yerr=[r["std"] for r in pts], marker="o", capsize=3, label=method,
        )  # fmt: skip
    ax.set_xscale("log")
    ax.set_xticks(list(sizes), [str(v) for v in sizes])
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    return save_figure(fig, path)
