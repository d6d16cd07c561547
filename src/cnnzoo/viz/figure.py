"""Saving matplotlib figures the same way everywhere (PNG).

The backend is left to the user: the command line selects the file backend (Agg), a notebook
keeps its inline one, and a process without a display falls back to Agg by itself.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
from matplotlib.figure import Figure


def save_figure(fig: Figure, path: str | Path, dpi: int = 110) -> Path:
    """Lay out ``fig``, write it as PNG to ``path`` (creating folders) and close it.

    Returns:
        The path written.
    """
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path
