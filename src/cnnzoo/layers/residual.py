"""Residual blocks: ``BasicBlock`` and ``Bottleneck``, with or without the skip connection.

He, Zhang, Ren, Sun, "Deep Residual Learning for Image Recognition", CVPR 2016. Fig. 5
shows both blocks (left: two 3x3 convolutions; right: 1x1 - 3x3 - 1x1 bottleneck). With
``residual=False`` the same blocks build the paper's "plain" networks (Fig. 3, middle), so
the residual-versus-plain comparison differs in the skip connection only.

Shortcuts where the shape changes (Sec. 3.3): option A pads the identity with zero channels
(:class:`ZeroPadShortcut`, used for CIFAR, Sec. 4.2); option B projects it with a strided
1x1 convolution (:class:`ProjectionShortcut`, used for ImageNet, as torchvision does).

``dilation`` spaces the taps of the blocks' 3x3 convolutions (padding = dilation, so the
spatial size only depends on the stride): dilated ResNets (Yu, Koltun, Funkhouser, "Dilated
Residual Networks", CVPR 2017; PSPNet, DeepLab) trade a stage's stride for dilation to keep
resolution without shrinking the receptive field. 1x1 convolutions are never dilated.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cnnzoo.layers.conv import ConvBnAct

ShortcutLayer = Callable[[int, int, int], nn.Module]
"""Builds the shortcut of a block whose shape changes: ``(in_channels, out_channels, stride)``."""


class ProjectionShortcut(ConvBnAct):
    """Option B: a strided 1x1 convolution + BN matching the block's output shape."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__(in_channels, out_channels, 1, stride, padding=0, act_layer=None)


class ZeroPadShortcut(nn.Module):
    """Option A: parameter-free identity, subsampled by ``stride``, new channels zero-filled.

    He et al. 2016, Sec. 3.3 (A) and Sec. 4.2 ("all shortcuts are identity" on CIFAR-10).
    Taking every ``stride``-th pixel is the identity applied with stride, as the paper's
    "performed with a stride of 2" shortcut.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        if out_channels < in_channels:
            raise ValueError(
                f"zero-padding shortcut cannot shrink channels ({in_channels} -> "
                f"{out_channels}); use ProjectionShortcut instead"
            )
        self.extra_channels = out_channels - in_channels
        self.stride = stride

    def forward(self, x: Tensor) -> Tensor:
        if self.stride > 1:
            x = x[:, :, :: self.stride, :: self.stride]
        # F.pad pads the last dimensions first: (W, W, H, H, C_before, C_after).
        return F.pad(x, (0, 0, 0, 0, 0, self.extra_channels))

    def extra_repr(self) -> str:
        return f"extra_channels={self.extra_channels}, stride={self.stride}"


def _conv3x3(
    in_channels: int,
    out_channels: int,
    stride: int,
    dilation: int,
    act_layer: Callable[[], nn.Module] | None = nn.ReLU,
) -> ConvBnAct:
    """Return a 3x3 conv-BN(-act) with ``dilation``; padding = dilation keeps 'same' size."""
    if dilation < 1:
        raise ValueError(f"dilation must be a positive integer, got {dilation!r}")
    layer = ConvBnAct(in_channels, out_channels, 3, stride, padding=dilation, act_layer=act_layer)
    # ConvBnAct takes no dilation; Conv2d reads the attribute on every forward (and in its
    # repr), so setting it gives exactly nn.Conv2d(..., padding=dilation, dilation=dilation).
    layer.conv.dilation = (dilation, dilation)
    return layer


class _ResidualBlock(nn.Module):
    """Shared body of both blocks: ``act(F(x) + shortcut(x))``, or ``act(F(x))`` when plain.

    Subclasses build their convolutions, implement :meth:`branch` and :attr:`last_bn`, and
    call :meth:`_finish`.
    """

    expansion: int = 1

    def branch(self, x: Tensor) -> Tensor:
        """Return the residual function F(x): the block's convolutions, no final activation."""
        raise NotImplementedError

    @property
    def last_bn(self) -> nn.Module:
        """The BN closing :meth:`branch` (zeroed by ``zero_init_residual``)."""
        raise NotImplementedError

    def _finish(
        self,
        in_channels: int,
        out_channels: int,
        stride: int,
        residual: bool,
        shortcut_layer: ShortcutLayer,
        zero_init_residual: bool,
    ) -> None:
        self.residual = residual
        self.shortcut: nn.Module | None = None
        if residual:
            if stride != 1 or in_channels != out_channels:
                self.shortcut = shortcut_layer(in_channels, out_channels, stride)
            else:
                self.shortcut = nn.Identity()
        elif zero_init_residual:
            raise ValueError(
                "zero_init_residual=True with residual=False would zero every block's output; "
                "use zero_init_residual only with skip connections"
            )
        self.act = nn.ReLU(inplace=True)
        if zero_init_residual:
            self.zero_init_last_bn()

    def zero_init_last_bn(self) -> None:
        """Zero the last BN's scale so the block starts as the identity.

        Not in the paper: Goyal et al., "Accurate, Large Minibatch SGD", 2017,
        reported that it helps large-batch training (torchvision's ``zero_init_residual``).
        """
        nn.init.zeros_(self.last_bn.weight)

    def forward(self, x: Tensor) -> Tensor:
        out = self.branch(x)
        if self.shortcut is not None:
            out = out + self.shortcut(x)
        return self.act(out)


class BasicBlock(_ResidualBlock):
    """Two 3x3 conv-BN layers with a skip around them (He et al. 2016, Fig. 5 left).

    Args:
        in_channels: channels of the block's input.
        channels: channels of both convolutions (the output has ``channels * expansion``).
        stride: stride of the first convolution (2 at the start of a downsampling stage).
        residual: add the shortcut; False builds the plain block (Fig. 3, middle).
        shortcut_layer: builds the shortcut when the shape changes (option A or B).
        zero_init_residual: start with the last BN's scale at zero (see
            :meth:`zero_init_last_bn`).
        dilation: dilation (and padding) of both 3x3 convolutions; 1 is the paper's block.
    """

    expansion = 1

    def __init__(
        self,
        in_channels: int,
        channels: int,
        stride: int = 1,
        residual: bool = True,
        shortcut_layer: ShortcutLayer = ProjectionShortcut,
        zero_init_residual: bool = False,
        dilation: int = 1,
    ) -> None:
        super().__init__()
        out_channels = channels * self.expansion
        self.conv1 = _conv3x3(in_channels, channels, stride, dilation)
        self.conv2 = _conv3x3(channels, out_channels, 1, dilation, act_layer=None)
        self._finish(
            in_channels, out_channels, stride, residual, shortcut_layer, zero_init_residual
        )

    def branch(self, x: Tensor) -> Tensor:
        return self.conv2(self.conv1(x))

    @property
    def last_bn(self) -> nn.Module:
        return self.conv2.bn


class Bottleneck(_ResidualBlock):
    """1x1 reduce, 3x3, 1x1 expand (x4), with a skip around them (He et al. 2016, Fig. 5 right).

    Args:
        in_channels: channels of the block's input.
        channels: width of the 1x1-reduced and 3x3 convolutions; the output has
            ``channels * expansion``.
        stride: stride of the 3x3 convolution (2 at the start of a downsampling stage).
        residual: add the shortcut; False builds the plain block.
        shortcut_layer: builds the shortcut when the shape changes (option A or B).
        zero_init_residual: start with the last BN's scale at zero.
        dilation: dilation (and padding) of the 3x3 convolution; 1 is the paper's block.
    """

    expansion = 4

    def __init__(
        self,
        in_channels: int,
        channels: int,
        stride: int = 1,
        residual: bool = True,
        shortcut_layer: ShortcutLayer = ProjectionShortcut,
        zero_init_residual: bool = False,
        dilation: int = 1,
    ) -> None:
        super().__init__()
        out_channels = channels * self.expansion
        self.conv1 = ConvBnAct(in_channels, channels, 1)
        # "ResNet v1.5": the stride sits on the 3x3 convolution, not on the first 1x1 as in
        # the paper (Sec. 3.4). A strided 1x1 discards 3/4 of its input; moving the stride
        # gains ~0.5 % top-1 (torchvision, NVIDIA's ResNet50 v1.5) at slightly more MACs.
        self.conv2 = _conv3x3(channels, channels, stride, dilation)
        self.conv3 = ConvBnAct(channels, out_channels, 1, act_layer=None)
        self._finish(
            in_channels, out_channels, stride, residual, shortcut_layer, zero_init_residual
        )

    def branch(self, x: Tensor) -> Tensor:
        return self.conv3(self.conv2(self.conv1(x)))

    @property
    def last_bn(self) -> nn.Module:
        return self.conv3.bn


class PrunableZeroPadShortcut(nn.Module):
    """Option-A shortcut with an explicit channel map, so channels can be removed on both sides.

    Output channel ``j`` is input channel ``source[j]``, or zero where ``source[j]`` equals
    ``in_channels``. Built from a :class:`~cnnzoo.layers.residual.ZeroPadShortcut` it
    computes the same function (``source = 0, 1, ..., in - 1, then in for the padding``).
    Removing input channel ``i`` turns the outputs it fed into zero channels; removing
    output channel ``j`` drops it from the map. The map is a buffer, saved with the weights.

    Args:
        in_channels: channels of the input.
        out_channels: channels of the output.
        stride: spatial subsampling, as in the original shortcut.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.stride = stride
        source = torch.full((out_channels,), in_channels, dtype=torch.long)
        n = min(in_channels, out_channels)
        source[:n] = torch.arange(n)
        self.register_buffer("source", source)

    @classmethod
    def from_zero_pad(cls, shortcut: nn.Module, in_channels: int) -> PrunableZeroPadShortcut:
        """Return the equivalent of ``shortcut`` (a ZeroPadShortcut with ``in_channels``)."""
        return cls(in_channels, in_channels + shortcut.extra_channels, shortcut.stride)

    def forward(self, x: Tensor) -> Tensor:
        if self.stride > 1:
            x = x[:, :, :: self.stride, :: self.stride]
        # one zero channel appended at index in_channels, then gathered into place
        return torch.nn.functional.pad(x, (0, 0, 0, 0, 0, 1)).index_select(1, self.source)

    def extra_repr(self) -> str:
        return f"{self.in_channels}, {self.out_channels}, stride={self.stride}"
