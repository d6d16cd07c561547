"""Images laid out in a grid, as one image (``torchvision.utils.make_grid``'s layout).

Written out (a dozen tensor operations) because importing ``torchvision`` costs about a second
(see ``cnnzoo.models.detection.ops``) and ``cnnzoo sample``/``translate`` need nothing else
from it. ``tests/test_viz_tile.py`` checks it against ``make_grid``.
"""

from __future__ import annotations

from torch import Tensor


def tile(images: Tensor, nrow: int = 8, padding: int = 2, pad_value: float = 0.0) -> Tensor:
    """Lay ``images`` out ``nrow`` to a row, ``padding`` pixels apart and around.

    Args:
        images: ``(N, C, H, W)``; gray images (``C == 1``) become three equal channels.
        nrow: images per row (the last row may be shorter).
        padding: pixels of ``pad_value`` between the images and around the grid.
        pad_value: the value of those pixels.

    Returns:
        ``(C', rows * (H + padding) + padding, cols * (W + padding) + padding)``, with
        ``C' = 3`` for gray input, else ``C``; a single image is returned as it is.

    Raises:
        ValueError: for input that is not ``(N, C, H, W)``, no images, or ``nrow < 1``.
    """
    if images.dim() != 4 or len(images) == 0:
        raise ValueError(f"tile needs images of shape (N, C, H, W), got {tuple(images.shape)}")
    if nrow < 1:
        raise ValueError(f"nrow must be at least 1, got {nrow}")
    if images.shape[1] == 1:
        images = images.expand(-1, 3, -1, -1)
    if len(images) == 1:
        return images[0]
    n, channels, height, width = images.shape
    cols = min(nrow, n)
    rows = -(-n // cols)
    cell_h, cell_w = height + padding, width + padding
    grid = images.new_full((channels, rows * cell_h + padding, cols * cell_w + padding), pad_value)
    for index, image in enumerate(images):
        top = (index // cols) * cell_h + padding
        left = (index % cols) * cell_w + padding
        grid[:, top : top + height, left : left + width] = image
    return grid
