"""Batched augmentation and preprocessing on whole ``(N, C, H, W)`` tensors.

Everything here works on a batch at once, on whichever device the batch lives (augmenting on
the GPU after the transfer keeps data loading cheap), with no Python loop over images; each
sample still draws its own random parameters. Pass a ``torch.Generator`` for reproducible
draws (a CPU generator works for batches on any device).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from cnnzoo.errors import CnnzooError


def _check_batch(x: torch.Tensor, what: str) -> None:
    if x.ndim != 4:
        raise CnnzooError(f"{what} expects a batch (N, C, H, W), got shape {tuple(x.shape)}")


def _randint(
    high: int, n: int, device: torch.device, generator: torch.Generator | None
) -> torch.Tensor:
    """``n`` integers in ``[0, high)`` drawn on the generator's device, moved to ``device``."""
    source = generator.device if generator is not None else device
    return torch.randint(0, high, (n,), generator=generator, device=source).to(device)


def _rand(n: int, device: torch.device, generator: torch.Generator | None) -> torch.Tensor:
    source = generator.device if generator is not None else device
    return torch.rand(n, generator=generator, device=source).to(device)


def random_crop_batch(
    x: torch.Tensor, padding: int, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Zero-pad each image by ``padding`` pixels and crop it back to ``H x W`` at a random offset.

    The classic CIFAR/Fashion-MNIST "pad and random crop": each sample's content is shifted by
    its own ``(dy, dx)`` in ``[-padding, padding]``, with zeros filling the gap. All crops are
    taken by one gather through index arithmetic.

    Returns:
        A tensor of the same shape, dtype and device as ``x``.

    Raises:
        CnnzooError: if ``x`` is not 4-D or ``padding`` is negative.
    """
    _check_batch(x, "random_crop_batch")
    if padding < 0:
        raise CnnzooError(f"crop padding {padding} is negative: expected 0 or more pixels")
    if padding == 0 or x.shape[0] == 0:
        return x
    n, c, h, w = x.shape
    padded = F.pad(x, (padding, padding, padding, padding))
    top = _randint(2 * padding + 1, n, x.device, generator)
    left = _randint(2 * padding + 1, n, x.device, generator)
    rows = top[:, None] + torch.arange(h, device=x.device)  # (N, H)
    cols = left[:, None] + torch.arange(w, device=x.device)  # (N, W)
    batch = torch.arange(n, device=x.device)[:, None, None, None]
    chan = torch.arange(c, device=x.device)[None, :, None, None]
    return padded[batch, chan, rows[:, None, :, None], cols[:, None, None, :]]


def random_hflip_batch(
    x: torch.Tensor, p: float = 0.5, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Mirror each image left-right with probability ``p``, independently per sample.

    Returns:
        A tensor of the same shape, dtype and device as ``x``.

    Raises:
        CnnzooError: if ``x`` is not 4-D or ``p`` is not in [0, 1].
    """
    _check_batch(x, "random_hflip_batch")
    if not 0.0 <= p <= 1.0:
        raise CnnzooError(f"flip probability {p} is out of range: expected 0 <= p <= 1")
    flip = _rand(x.shape[0], x.device, generator) < p
    return torch.where(flip[:, None, None, None], x.flip(-1), x)


class BatchAugment(nn.Module):
    """Random crop (zero padding) and horizontal flip of a whole batch, in training mode only.

    In ``eval()`` mode the batch passes through unchanged, so the module can sit at the front
    of a training step and be switched off with the rest of the model.

    Args:
        crop_padding: pixels of zero padding for :func:`random_crop_batch` (0: no crop).
        hflip: apply :func:`random_hflip_batch` with p=0.5.
        generator: optional generator for reproducible augmentation.
    """

    def __init__(
        self, crop_padding: int = 2, hflip: bool = True, generator: torch.Generator | None = None
    ) -> None:
        super().__init__()
        if crop_padding < 0:
            raise CnnzooError(f"crop padding {crop_padding} is negative: expected 0 or more")
        self.crop_padding = crop_padding
        self.hflip = hflip
        self.generator = generator

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Augmented batch (training) or ``x`` itself (eval)."""
        if not self.training:
            return x
        if self.crop_padding:
            x = random_crop_batch(x, self.crop_padding, self.generator)
        if self.hflip:
            x = random_hflip_batch(x, 0.5, self.generator)
        return x

    def extra_repr(self) -> str:
        return f"crop_padding={self.crop_padding}, hflip={self.hflip}"


def _per_channel(
    values: float | Sequence[float] | torch.Tensor, channels: int, name: str, x: torch.Tensor
) -> torch.Tensor:
    t = torch.as_tensor(values, dtype=torch.float32, device=x.device).flatten()
    if t.numel() not in (1, channels):
        raise CnnzooError(
            f"normalize {name} has {t.numel()} values for a batch of {channels} channels: "
            f"expected 1 or {channels}"
        )
    return t.view(1, -1, 1, 1)


def normalize_batch(
    x: torch.Tensor,
    mean: float | Sequence[float] | torch.Tensor,
    std: float | Sequence[float] | torch.Tensor,
) -> torch.Tensor:
    """``(x / 255 - mean) / std`` per channel for uint8 input; ``(x - mean) / std`` for float.

    ``mean`` and ``std`` are in the 0..1 scale (e.g. ImageNet's (0.485, 0.456, 0.406)), one
    value per channel or one for all.

    Returns:
        float32 tensor (or ``x``'s float dtype) of ``x``'s shape.

    Raises:
        CnnzooError: if ``x`` is not 4-D, the number of values does not match the channels,
            or a std is not positive.
    """
    _check_batch(x, "normalize_batch")
    out = x.float().div_(255.0) if not x.is_floating_point() else x
    mean_t = _per_channel(mean, x.shape[1], "mean", x).to(out.dtype)
    std_t = _per_channel(std, x.shape[1], "std", x).to(out.dtype)
    if bool((std_t <= 0).any()):
        raise CnnzooError(f"normalize std {std_t.flatten().tolist()} must be positive")
    return (out - mean_t) / std_t


def resize_batch(x: torch.Tensor, size: int | Sequence[int]) -> torch.Tensor:
    """Resize a batch to ``size`` (int: square) with bilinear interpolation.

    Antialiased when shrinking (either side), so downsized images do not alias. uint8 input
    is resized in float and rounded back to uint8.

    Returns:
        A tensor ``(N, C, *size)`` of ``x``'s dtype; ``x`` itself when already that size.

    Raises:
        CnnzooError: if ``x`` is not 4-D or ``size`` is not one or two positive ints.
    """
    _check_batch(x, "resize_batch")
    target = (size, size) if isinstance(size, int) else tuple(size)
    if len(target) != 2 or not all(isinstance(s, int) and s > 0 for s in target):
        raise CnnzooError(f"resize size {size!r} is invalid: expected a positive int or (H, W)")
    h, w = x.shape[-2:]
    if (h, w) == target:
        return x
    shrink = target[0] < h or target[1] < w
    out = F.interpolate(
        x if x.is_floating_point() else x.float(),
        size=target,
        mode="bilinear",
        align_corners=False,
        antialias=shrink,
    )
    if x.is_floating_point():
        return out
    info = torch.iinfo(x.dtype)
    return out.round_().clamp_(info.min, info.max).to(x.dtype)


def prepare_batch(
    x: torch.Tensor,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    resize_to: int | None = None,
    augment: BatchAugment | None = None,
) -> torch.Tensor:
    """Turn a uint8 batch into the model's float input: augment, normalise, resize.

    Augmentation runs first, on the small uint8 images, so crop padding is black.

    Returns:
        float32 tensor (N, C, H', W').
    """
    if augment is not None:
        x = augment(x)
    x = normalize_batch(x, mean, std)
    if resize_to is not None and x.shape[-1] != resize_to:
        x = resize_batch(x, resize_to)
    return x
