"""Upsampling for decoders: learned transposed convolution (optionally bilinear-initialised)
or fixed bilinear / nearest interpolation, selectable by name.

Long, Shelhamer & Darrell (FCN, CVPR 2015, sec. 3.3) initialise their "deconvolution" layers
to bilinear interpolation and let them learn from there.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cnnzoo.errors import CnnzooError

UPSAMPLE_MODES = ("transposed", "bilinear", "nearest")


def bilinear_kernel(channels: int, kernel_size: int) -> Tensor:
    """Return a (channels, channels, k, k) weight that makes a transposed convolution with
    stride k // 2 perform bilinear upsampling, channel by channel (no mixing)."""
    factor = (kernel_size + 1) // 2
    center = factor - 1 if kernel_size % 2 == 1 else factor - 0.5
    og = torch.arange(kernel_size, dtype=torch.float32)
    filt = 1 - (og - center).abs() / factor
    kernel = filt[:, None] * filt[None, :]
    weight = torch.zeros(channels, channels, kernel_size, kernel_size)
    weight[range(channels), range(channels)] = kernel
    return weight


class Upsample(nn.Module):
    """Upsample by an integer ``factor``: ``"transposed"`` (learned, bilinear-initialised,
    kernel 2 x factor, stride factor), ``"bilinear"`` or ``"nearest"`` (fixed).

    ``forward(x, size=None)`` crops or interpolates to ``size`` when given, so odd input sizes
    come back exactly.
    """

    def __init__(self, channels: int, factor: int, mode: str = "transposed") -> None:
        super().__init__()
        if mode not in UPSAMPLE_MODES:
            raise CnnzooError(f"unknown upsampling {mode!r}; expected one of {UPSAMPLE_MODES}")
        self.factor = factor
        self.mode = mode
        if mode == "transposed":
            k = 2 * factor
            self.deconv = nn.ConvTranspose2d(
                channels, channels, k, stride=factor, padding=factor // 2, bias=False
            )
            with torch.no_grad():
                self.deconv.weight.copy_(bilinear_kernel(channels, k))

    def forward(self, x: Tensor, size: tuple[int, int] | None = None) -> Tensor:
        """Return ``x`` upsampled by ``factor`` (or to exactly ``size``)."""
        if self.mode == "transposed":
            y = self.deconv(x)
            if size is not None and tuple(y.shape[-2:]) != tuple(size):
                y = F.interpolate(y, size=size, mode="bilinear", align_corners=False)
            return y
        target = size or (x.shape[-2] * self.factor, x.shape[-1] * self.factor)
        if self.mode == "nearest":
            return F.interpolate(x, size=target, mode="nearest")
        return F.interpolate(x, size=target, mode="bilinear", align_corners=False)
