"""Data: batched transforms (normalise, resize, crop, flip, augment) on uint8 batches."""

from __future__ import annotations

import pytest
import torch

from cnnzoo.data.transforms import (
    BatchAugment,
    normalize_batch,
    random_crop_batch,
    random_hflip_batch,
    resize_batch,
)
from cnnzoo.errors import CnnzooError

# --------------------------------------------------------------------------------------------
# Batched transforms
# --------------------------------------------------------------------------------------------


def random_batch(n: int = 16, c: int = 3, h: int = 10, w: int = 12) -> torch.Tensor:
    return torch.randint(1, 256, (n, c, h, w), generator=torch.Generator().manual_seed(0)).to(
        torch.uint8
    )


def test_crop_output_is_a_window_of_the_padded_input() -> None:
    x, pad = random_batch(), 3
    out = random_crop_batch(x, pad, generator=torch.Generator().manual_seed(1))
    assert out.shape == x.shape and out.dtype == x.dtype
    padded = torch.nn.functional.pad(x, (pad, pad, pad, pad))
    h, w = x.shape[-2:]
    offsets = []
    for i in range(len(x)):
        found = [
            (dy, dx)
            for dy in range(2 * pad + 1)
            for dx in range(2 * pad + 1)
            if torch.equal(out[i], padded[i, :, dy : dy + h, dx : dx + w])
        ]
        assert found, f"sample {i} is not a shifted window of its padded input"
        offsets.append(found[0])
    assert len(set(offsets)) > 1  # each sample has its own offset


def test_crop_is_deterministic_with_a_generator() -> None:
    x = random_batch()
    a = random_crop_batch(x, 2, generator=torch.Generator().manual_seed(7))
    b = random_crop_batch(x, 2, generator=torch.Generator().manual_seed(7))
    assert torch.equal(a, b)


def test_crop_without_padding_is_identity() -> None:
    x = random_batch()
    assert torch.equal(random_crop_batch(x, 0), x)


def test_hflip_is_per_sample() -> None:
    x = random_batch(n=32)
    out = random_hflip_batch(x, generator=torch.Generator().manual_seed(0))
    flipped = [torch.equal(out[i], x[i].flip(-1)) for i in range(len(x))]
    kept = [torch.equal(out[i], x[i]) for i in range(len(x))]
    assert all(f or k for f, k in zip(flipped, kept, strict=True))
    assert any(flipped) and any(kept)


def test_hflip_probability_bounds_and_determinism() -> None:
    x = random_batch()
    assert torch.equal(random_hflip_batch(x, p=0.0), x)
    assert torch.equal(random_hflip_batch(x, p=1.0), x.flip(-1))
    a = random_hflip_batch(x, generator=torch.Generator().manual_seed(5))
    b = random_hflip_batch(x, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a, b)


def test_batch_augment_only_acts_in_training() -> None:
    x = random_batch(n=32)
    augment = BatchAugment(crop_padding=2, hflip=True, generator=torch.Generator().manual_seed(0))
    assert not torch.equal(augment(x), x)
    augment.eval()
    assert augment(x) is x


def test_normalize_batch_scales_uint8_and_applies_mean_std() -> None:
    x = torch.tensor([0, 255], dtype=torch.uint8).view(1, 1, 1, 2).repeat(1, 3, 1, 1)
    out = normalize_batch(x, mean=(0.5, 0.5, 0.0), std=(0.5, 0.25, 1.0))
    assert out.dtype == torch.float32
    assert out[0, :, 0, 0].tolist() == [-1.0, -2.0, 0.0]
    assert out[0, :, 0, 1].tolist() == [1.0, 2.0, 1.0]
    with pytest.raises(CnnzooError, match=r"2 values for a batch of 3 channels"):
        normalize_batch(x, mean=(0.5, 0.5), std=1.0)


def test_resize_batch_sizes_and_dtype() -> None:
    x = torch.full((2, 1, 28, 28), 100, dtype=torch.uint8)
    small = resize_batch(x, 14)
    big = resize_batch(x.float(), (32, 40))
    assert small.shape == (2, 1, 14, 14) and small.dtype == torch.uint8
    assert torch.all(small == 100)
    assert big.shape == (2, 1, 32, 40) and big.dtype == torch.float32
    assert torch.allclose(big, torch.full_like(big, 100.0))
    assert resize_batch(x, 28) is x


def test_resize_batch_antialiases_when_shrinking() -> None:
    stripes = torch.zeros(1, 1, 30, 30)
    stripes[..., ::2] = 1.0  # one-pixel stripes: plain bilinear at 1/3 gives 0, 1, 0, 1, ...
    small = resize_batch(stripes, 10)
    assert small.min() > 0.4 and small.max() < 0.6
