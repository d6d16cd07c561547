"""Saving matplotlib figures the same way everywhere (PNG).

The backend is left to the user: the command line selects the file backend (Agg), a notebook
keeps its inline one, and a process without a display falls back to Agg by itself.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
from matplotlib.figure import Figure
from PIL import Image

from cnnzoo.files import atomic_writer


def save_figure(fig: Figure, path: str | Path, dpi: int = 110) -> Path:
    """Lay out ``fig``, write it as PNG (or the format ``path``'s suffix names) to ``path``
    (creating folders, through a temporary file and a rename) and close it.

    Returns:
        The path written.

    Raises:
        CnnzooError: if the disk is full (no partial file is left).
    """
    fig.tight_layout()
    path = Path(path)
    try:
        with atomic_writer(path) as f:
            fig.savefig(f, dpi=dpi, format=path.suffix.lstrip(".") or "png")
    finally:
        plt.close(fig)
    return path


def save_image(image: Image.Image, path: str | Path) -> Path:
    """Write a PIL image to ``path`` in the format its suffix names (PNG without one),
    through a temporary file and a rename.

    Returns:
        The path written.

    Raises:
        CnnzooError: if the disk is full (no partial file is left).
        ValueError: for a suffix PIL cannot write.
    """
    path = Path(path)
    fmt = Image.registered_extensions().get(path.suffix.lower(), "PNG") if path.suffix else "PNG"
    with atomic_writer(path) as f:
        image.save(f, format=fmt)
    return path
