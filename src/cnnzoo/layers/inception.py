"""The Inception module: parallel 1x1, 3x3, 5x5 and pooling branches, concatenated.

Szegedy et al., "Going Deeper with Convolutions", CVPR 2015, Fig. 2(b) ("Inception module
with dimension reductions"): 1x1 convolutions shrink the channels before the expensive 3x3
and 5x5 convolutions and after the max-pooling, so the module can be stacked without the
cost blowing up. Its arguments are the columns of the paper's Table 1.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from cnnzoo.layers.conv import ConvBnAct


class Inception(nn.Module):
    """Four branches over the same input, concatenated along channels (Fig. 2b).

    Args:
        in_channels: channels of the input.
        ch1x1: "#1x1", outputs of the 1x1 branch.
        ch3x3_reduce: "#3x3 reduce", the 1x1 convolution in front of the 3x3.
        ch3x3: "#3x3", outputs of the 3x3 branch.
        ch5x5_reduce: "#5x5 reduce", the 1x1 convolution in front of the 5x5.
        ch5x5: "#5x5", outputs of the 5x5 branch.
        pool_proj: "pool proj", the 1x1 convolution after the 3x3 max-pool.
        kernel_5x5: kernel size of the "5x5" branch (5 in the paper; torchvision's
            GoogLeNet and its ImageNet weights use 3, see ``GoogLeNet``).
        norm_layer: normalisation after every convolution (None: none, as in the paper).

    Output channels are ``ch1x1 + ch3x3 + ch5x5 + pool_proj`` (``out_channels``); the spatial
    size is unchanged.
    """

    def __init__(
        self,
        in_channels: int,
        ch1x1: int,
        ch3x3_reduce: int,
        ch3x3: int,
        ch5x5_reduce: int,
        ch5x5: int,
        pool_proj: int,
        kernel_5x5: int = 5,
        norm_layer: Callable[[int], nn.Module] | None = nn.BatchNorm2d,
    ) -> None:
        super().__init__()
        self.out_channels = ch1x1 + ch3x3 + ch5x5 + pool_proj
        self.branch1x1 = ConvBnAct(in_channels, ch1x1, 1, norm_layer=norm_layer)
        self.branch3x3 = nn.Sequential(
            ConvBnAct(in_channels, ch3x3_reduce, 1, norm_layer=norm_layer),
            ConvBnAct(ch3x3_reduce, ch3x3, 3, norm_layer=norm_layer),
        )
        self.branch5x5 = nn.Sequential(
            ConvBnAct(in_channels, ch5x5_reduce, 1, norm_layer=norm_layer),
            ConvBnAct(ch5x5_reduce, ch5x5, kernel_5x5, norm_layer=norm_layer),
        )
        self.branch_pool = nn.Sequential(
            nn.MaxPool2d(3, stride=1, padding=1),
            ConvBnAct(in_channels, pool_proj, 1, norm_layer=norm_layer),
        )

    def forward(self, x: Tensor) -> Tensor:
        """Return the concatenated branch outputs, (N, out_channels, H, W)."""
        branches = (self.branch1x1, self.branch3x3, self.branch5x5, self.branch_pool)
        return torch.cat([branch(x) for branch in branches], dim=1)
