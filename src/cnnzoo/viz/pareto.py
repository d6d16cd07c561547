"""The accuracy / latency trade-off of model variants, with their Pareto frontier."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib.pyplot as plt

from cnnzoo.viz.figure import save_figure


def pareto_front(latency: Sequence[float], accuracy: Sequence[float]) -> list[int]:
    """Return the indices of the points no other point beats on both axes, fastest first.

    A point is on the frontier when every faster (or equally fast) point is less accurate.
    """
    order = sorted(range(len(latency)), key=lambda i: (latency[i], -accuracy[i]))
    front, best = [], float("-inf")
    for i in order:
        if accuracy[i] > best:
            front.append(i)
            best = accuracy[i]
    return front


def plot_pareto(
    labels: Sequence[str],
    latency_ms: Sequence[float],
    accuracy: Sequence[float],
    size_bytes: Sequence[float],
    path: str | Path,
    title: str = "accuracy vs latency",
    ylabel: str = "test accuracy",
) -> Path:
    """Scatter accuracy against latency (log x), marker area proportional to file size.

    Returns:
        The PNG written.
    """
    fig, ax = plt.subplots(figsize=(7.5, 5))
    biggest = max(size_bytes) if size_bytes else 1
    areas = [40 + 800 * s / biggest for s in size_bytes]
    ax.scatter(latency_ms, accuracy, s=areas, alpha=0.55, edgecolors="black", linewidths=0.6)
    for label, x, y in zip(labels, latency_ms, accuracy, strict=True):
        ax.annotate(label, (x, y), textcoords="offset points", xytext=(6, 4), fontsize=7)
    front = pareto_front(latency_ms, accuracy)
    ax.plot([latency_ms[i] for i in front], [accuracy[i] for i in front], "--", color="tab:red",
            label="Pareto frontier")  # fmt: skip
    ax.set_xscale("log")
    ax.set_xlabel("latency per call (ms, log scale)")
    ax.set_ylabel(ylabel)
    ax.set_title(f"{title}; marker area ~ file size")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    return save_figure(fig, path)
