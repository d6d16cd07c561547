"""Blocks of the efficient ("mobile") networks: 1x1 and depthwise convolutions, channel shuffle.

The lecture's "optimizing for embedded" recipe is to spend fewer multiply-accumulates per
layer by factorising the standard convolution:

- :class:`DepthwiseSeparableConv`: a 3x3 depthwise convolution (one filter per channel) then
  a 1x1 pointwise convolution that mixes channels. Howard et al., "MobileNets: Efficient
  Convolutional Neural Networks for Mobile Vision Applications", arXiv:1704.04861, 2017,
  Fig. 3 and Eq. 5: a cost of ``1/N + 1/9`` of a 3x3 convolution with N outputs.
- :class:`InvertedResidual`: 1x1 expansion, 3x3 depthwise, linear 1x1 projection, with the
  shortcut between the thin ends. Sandler et al., "MobileNetV2: Inverted Residuals and Linear
  Bottlenecks", CVPR 2018, Table 1 and Fig. 3b.
- :func:`channel_shuffle`: lets information cross the groups of grouped 1x1 convolutions.
  Zhang et al., "ShuffleNet: An Extremely Efficient Convolutional Neural Network for Mobile
  Devices", CVPR 2018, Fig. 1 and Section 3.1.
- :func:`make_divisible`: the channel rounding that width multipliers need.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor, nn

from cnnzoo.layers.conv import ConvBnAct

Activation = Callable[[], nn.Module]


def make_divisible(value: float, divisor: int = 8, min_value: int | None = None) -> int:
    """Round a channel count to the nearest multiple of ``divisor``, losing at most 10 %.

    This is the rounding of the MobileNet reference code (TensorFlow's ``slim``), kept so that
    scaled widths match the published networks (and torchvision's), e.g. ``32 * 0.35 -> 16``.

    Args:
        value: the unrounded channel count, e.g. ``width * 32``.
        divisor: the result is a multiple of it.
        min_value: the smallest result (default: ``divisor``).
    """
    min_value = divisor if min_value is None else min_value
    rounded = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:  # rounding down must not remove more than 10 % of the channels
        rounded += divisor
    return rounded


def channel_shuffle(x: Tensor, groups: int) -> Tensor:
    """Interleave the channels of ``groups`` equal groups (Zhang et al. 2018, Fig. 1c).

    Channel ``i * (C / groups) + j`` (group ``i``, position ``j``) moves to ``j * groups + i``:
    reshape to (groups, C / groups), transpose, flatten. After it, each group of the next
    grouped convolution holds channels from every group of the previous one. Shuffling with
    ``groups`` and then with ``C / groups`` restores the original order.

    Raises:
        ValueError: if the number of channels is not a multiple of ``groups``.
    """
    n, channels, height, width = x.shape
    if channels % groups:
        raise ValueError(f"cannot shuffle {channels} channels in {groups} equal groups")
    x = x.reshape(n, groups, channels // groups, height, width).transpose(1, 2)
    return x.reshape(n, channels, height, width)


class ChannelShuffle(nn.Module):
    """:func:`channel_shuffle` as a module, so that it shows in the model's printout."""

    def __init__(self, groups: int) -> None:
        super().__init__()
        self.groups = groups

    def forward(self, x: Tensor) -> Tensor:
        return channel_shuffle(x, self.groups)

    def extra_repr(self) -> str:
        return f"groups={self.groups}"


class DepthwiseSeparableConv(nn.Sequential):
    """3x3 depthwise conv-BN-act, then 1x1 pointwise conv-BN-act (Howard et al. 2017, Fig. 3).

    The depthwise convolution filters each input channel on its own (``groups=in_channels``);
    the pointwise one combines them. Children are ``depthwise`` and ``pointwise``
    (:class:`ConvBnAct` each).

    Args:
        in_channels: input channels (also the depthwise convolution's outputs).
        out_channels: outputs of the pointwise convolution.
        stride: stride of the depthwise convolution.
        kernel_size: size of the depthwise kernel.
        depthwise_act_layer: activation after the depthwise convolution; MobileNet has a ReLU
            there, ShuffleNet none (Zhang et al. 2018, Section 3.2, after Xception).
        act_layer: activation after the pointwise convolution (None: linear output).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        stride: int = 1,
        kernel_size: int = 3,
        depthwise_act_layer: Activation | None = nn.ReLU,
        act_layer: Activation | None = nn.ReLU,
    ) -> None:
        super().__init__()
        self.depthwise = ConvBnAct(
            in_channels,
            in_channels,
            kernel_size,
            stride,
            groups=in_channels,
            act_layer=depthwise_act_layer,
        )
        self.pointwise = ConvBnAct(in_channels, out_channels, 1, act_layer=act_layer)


class InvertedResidual(nn.Module):
    """MobileNetV2's bottleneck: expand (1x1), filter (3x3 depthwise), project (linear 1x1).

    Sandler et al. 2018, Table 1: the block widens its ``in_channels`` by ``expand_ratio``
    (t), filters the wide tensor depthwise, and projects it back to a thin one *without* a
    non-linearity, since a ReLU in a low-dimensional space destroys information (Section 3.2,
    "linear bottlenecks"). The shortcut joins the thin ends (Fig. 3b), where the shapes agree:
    stride 1 and ``in_channels == out_channels``.

    Children: ``expand`` (absent for t = 1, the first block), ``depthwise``, ``project``.

    Args:
        in_channels: channels of the input (thin end).
        out_channels: channels of the output (thin end).
        stride: stride of the depthwise convolution (1 or 2).
        expand_ratio: the expansion factor t; the hidden width is ``round(in_channels * t)``.
        act_layer: activation after the expansion and the depthwise convolution; the paper's
            ReLU6 keeps activations in a range that low-precision arithmetic represents well.

    Raises:
        ValueError: for a stride other than 1 or 2, or an ``expand_ratio`` below 1.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        stride: int,
        expand_ratio: float,
        act_layer: Activation = nn.ReLU6,
    ) -> None:
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"InvertedResidual takes stride 1 or 2, got {stride!r}")
        if expand_ratio < 1:
            raise ValueError(f"expand_ratio must be at least 1, got {expand_ratio!r}")
        hidden = round(in_channels * expand_ratio)
        self.use_residual = stride == 1 and in_channels == out_channels
        self.expand: nn.Module | None = None
        if expand_ratio != 1:
            self.expand = ConvBnAct(in_channels, hidden, 1, act_layer=act_layer)
        self.depthwise = ConvBnAct(hidden, hidden, 3, stride, groups=hidden, act_layer=act_layer)
        self.project = ConvBnAct(hidden, out_channels, 1, act_layer=None)

    def forward(self, x: Tensor) -> Tensor:
        out = x if self.expand is None else self.expand(x)
        out = self.project(self.depthwise(out))
        return x + out if self.use_residual else out
