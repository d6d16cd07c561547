"""Convolution + normalisation + activation, the unit most CNNs are made of."""

from __future__ import annotations

import functools
from collections.abc import Callable

from torch import nn


class ConvBnAct(nn.Sequential):
    """``Conv2d -> BatchNorm2d -> activation``, with 'same' padding by default.

    The convolution has no bias when a norm layer follows (BN's shift makes it redundant).
    Children are named ``conv``, ``bn``, ``act`` so state-dict keys read like the papers.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        padding: int | None = None,
        groups: int = 1,
        norm_layer: Callable[[int], nn.Module] | None = nn.BatchNorm2d,
        act_layer: Callable[[], nn.Module] | None = nn.ReLU,
        bias: bool | None = None,
    ) -> None:
        padding = (kernel_size - 1) // 2 if padding is None else padding
        bias = norm_layer is None if bias is None else bias
        super().__init__()
        self.conv = nn.Conv2d(
            in_channels, out_channels, kernel_size, stride, padding, groups=groups, bias=bias
        )
        if norm_layer is not None:
            self.bn = norm_layer(out_channels)
        if act_layer is not None:
            self.act = act_layer(inplace=True) if act_layer in (nn.ReLU, nn.ReLU6) else act_layer()


DarknetAct = functools.partial(nn.LeakyReLU, 0.1, inplace=True)
"""Darknet's activation (leaky ReLU, slope 0.1), the YOLO heads' ``act_layer``."""


class ExtraLayer(nn.Sequential):
    """SSD's extra feature layer: a 1x1 bottleneck to half the width, then a 3x3 stride-2
    convolution to ``out_channels`` (both conv-BN-act), halving the map.

    Appended behind a backbone's deepest stage to add coarser maps (SSD's ``conv8_2`` ...,
    YOLOv3's coarser scales on a shallow backbone).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        act_layer: Callable[[], nn.Module] | None = nn.ReLU,
    ) -> None:
        mid = max(out_channels // 2, 1)
        super().__init__(
            ConvBnAct(in_channels, mid, 1, act_layer=act_layer),
            ConvBnAct(mid, out_channels, 3, 2, act_layer=act_layer),
        )
