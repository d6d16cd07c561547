"""``cnnzoo.viz.tile.tile`` lays images out exactly as torchvision's ``make_grid`` (the oracle)."""

from __future__ import annotations

import pytest
import torch
from torchvision.utils import make_grid

from cnnzoo.viz.tile import tile


@pytest.mark.parametrize("n", [1, 2, 7, 8, 9, 16])
@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize(("nrow", "padding", "pad_value"), [(8, 2, 1.0), (3, 0, 0.0), (1, 5, 0.5)])
def test_tile_is_make_grid(n, channels, nrow, padding, pad_value):
    images = torch.rand(n, channels, 7, 5, generator=torch.Generator().manual_seed(n))
    expected = make_grid(images, nrow=nrow, padding=padding, pad_value=pad_value)
    assert torch.equal(tile(images, nrow=nrow, padding=padding, pad_value=pad_value), expected)


@pytest.mark.parametrize("bad", [torch.rand(3, 8, 8), torch.rand(0, 1, 8, 8)])
def test_tile_refuses_what_is_not_a_batch_of_images(bad):
    with pytest.raises(ValueError, match="N, C, H, W"):
        tile(bad)


def test_tile_refuses_no_columns():
    with pytest.raises(ValueError, match="nrow"):
        tile(torch.rand(2, 1, 4, 4), nrow=0)
