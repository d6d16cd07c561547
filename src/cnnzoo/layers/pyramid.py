"""Pyramid pooling: global context at several scales, concatenated to the local features.

Zhao, Shi, Qi, Wang, Jia, "Pyramid Scene Parsing Network", CVPR 2017 (Fig. 3c, Sec. 3.3).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cnnzoo.errors import CnnzooError
from cnnzoo.layers.conv import ConvBnAct


class PyramidPooling(nn.Module):
    """Average-pool to each of ``bins`` x ``bins`` grids, reduce with 1x1 conv-BN-ReLU to
    ``in_channels // len(bins)`` channels, upsample bilinearly back, concatenate with the input.

    Args:
        in_channels: channels of the input feature map.
        bins: the pyramid's grid sizes; the paper's (1, 2, 3, 6) by default.

    Attributes:
        out_channels: ``in_channels + len(bins) * (in_channels // len(bins))`` (2 x
            ``in_channels`` when ``len(bins)`` divides it, as in the paper).

    Raises:
        CnnzooError: for no bins, a bin below 1, or fewer input channels than bins.
    """

    def __init__(self, in_channels: int, bins: Sequence[int] = (1, 2, 3, 6)) -> None:
        super().__init__()
        bins = tuple(bins)
        if not bins or any(not isinstance(b, int) or b < 1 for b in bins):
            raise CnnzooError(f"bins must be positive integers, got {bins!r}; e.g. (1, 2, 3, 6)")
        branch_channels = in_channels // len(bins)
        if branch_channels < 1:
            raise CnnzooError(
                f"{in_channels} input channels cannot be split over {len(bins)} bins; "
                "use fewer bins or a wider feature map"
            )
        self.bins = bins
        self.stages = nn.ModuleList(
            nn.Sequential(nn.AdaptiveAvgPool2d(b), ConvBnAct(in_channels, branch_channels, 1))
            for b in bins
        )
        self.out_channels = in_channels + len(bins) * branch_channels

    def forward(self, x: Tensor) -> Tensor:
        """Return (N, out_channels, H, W): ``x`` followed by the upsampled pooled branches."""
        size = x.shape[-2:]
        pooled = [
            F.interpolate(stage(x), size=size, mode="bilinear", align_corners=False)
            for stage in self.stages
        ]
        return torch.cat([x, *pooled], dim=1)
