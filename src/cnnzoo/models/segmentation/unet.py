"""U-Net: a contracting path, an expanding path, and skip connections that concatenate.

Ronneberger, Fischer & Brox, "U-Net: Convolutional Networks for Biomedical Image
Segmentation", MICCAI 2015 (Fig. 1). Each level of the contracting path is two 3x3
convolutions + ReLU and a 2x2/2 max-pool that doubles the channels (64 -> 1024 over four
levels); each level of the expanding path is a 2x2 "up-convolution" that halves the
channels, a concatenation with the matching contracting map, and two 3x3 convolutions.
A 1x1 convolution maps the 64 channels to the classes.

Departures, both usual in re-implementations:

* 'same' padding: the paper's convolutions are unpadded ("valid"), so the output is smaller
  than the input (388x388 from 572x572) and the skip maps are cropped; here every 3x3
  convolution is padded, the skip maps fit as they are and the output has the input's size.
  To make odd sizes fit, the input is zero-padded on the bottom and right to a multiple of
  ``2 ** depth`` and the logits are cropped back.
* batch norm after every convolution (the paper predates its wide use).
* the up-convolution is selectable: ``"transposed"`` is the paper's 2x2/2 transposed
  convolution; ``"bilinear"`` / ``"nearest"`` interpolate then halve the channels with a 1x1
  convolution.

``unet(backbone=...)`` builds :class:`EncoderUNet`, a U-Net whose contracting path is a
classifier's stages: the lecture's "initialize with a network pre-trained on classification"
applied to U-Net (as TernausNet did with VGG11, and as segmentation_models_pytorch's
``Unet(encoder_name=...)`` does).

The expanding path is U-Net's (Fig. 1): at every stride from the deepest up to the input, a
2x2 up-convolution, the encoder's map of that stride concatenated, two 3x3 conv-BN-ReLU. The
levels mirror the encoder: each ends with the channels of the map it concatenates. Two
departures follow from reusing a classifier:

* a classifier has no full-resolution map (its first stage already pools), so a small stem
  (U-Net's first DoubleConv, ``width`` channels, trained from scratch) gives the stride-1
  skip that keeps the outlines sharp;
* a stride the classifier skips (AlexNet's first map is at stride 8) gets a level without a
  skip, of half the channels of the level below (at least ``width``); stride-1 stages (the
  CIFAR ResNets') are not used, the stem takes their place.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cnnzoo.errors import CnnzooError
from cnnzoo.layers import ConvBnAct
from cnnzoo.layers.upsample import UPSAMPLE_MODES, Upsample
from cnnzoo.models.backbones import build_backbone, stage_reductions
from cnnzoo.models.base import FeatureInfo, FeatureStage, init_weights_kaiming
from cnnzoo.models.segmentation.encdec import pad_to_multiple
from cnnzoo.registry import register_model

RONNEBERGER_2015 = (
    "Ronneberger, Fischer & Brox, U-Net: Convolutional Networks for Biomedical Image "
    "Segmentation, MICCAI 2015"
)


class DoubleConv(nn.Sequential):
    """Two 3x3 conv-BN-ReLU ('same' padding), the unit of both paths of Fig. 1."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(
            ConvBnAct(in_channels, out_channels), ConvBnAct(out_channels, out_channels)
        )


class UpConv(nn.Module):
    """x2 upsampling that halves the channels: the paper's 2x2 up-convolution, or
    interpolation (:class:`~cnnzoo.layers.upsample.Upsample`) followed by a 1x1 convolution."""

    def __init__(self, in_channels: int, out_channels: int, mode: str = "transposed") -> None:
        super().__init__()
        if mode == "transposed":
            self.up: nn.Module = nn.ConvTranspose2d(in_channels, out_channels, 2, stride=2)
            self.proj: nn.Module = nn.Identity()
        else:
            self.up = Upsample(in_channels, 2, mode)
            self.proj = nn.Conv2d(in_channels, out_channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(self.up(x))


class UNetUp(nn.Module):
    """One level of the expanding path: up-convolution, concatenate the skip, DoubleConv.

    ``skip_channels`` (default: ``out_channels``, as in Fig. 1) is the width of the map
    concatenated; 0 for a level without one (an encoder that has no map at that stride).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        mode: str = "transposed",
        skip_channels: int | None = None,
    ) -> None:
        super().__init__()
        skip = out_channels if skip_channels is None else skip_channels
        self.up = UpConv(in_channels, out_channels, mode)
        self.conv = DoubleConv(out_channels + skip, out_channels)

    def forward(self, x: Tensor, skip: Tensor | None) -> Tensor:
        x = self.up(x)
        if skip is None:
            return self.conv(x)
        if x.shape[-2:] != skip.shape[-2:]:
            # An encoder whose maps are not exact halvings (AlexNet's unpadded pools): the
            # paper crops the skip to fit; here the upsampled map is resized to the skip's.
            x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
        return self.conv(torch.cat([skip, x], dim=1))


class UNet(nn.Module):
    """U-Net of Fig. 1 with 'same' convolutions.

    Args:
        num_classes: classes predicted per pixel.
        in_channels: input image channels.
        width: channels of the first level (64 in the paper); level i has ``width * 2**i``.
        depth: number of down (and up) levels (4 in the paper).
        upsample: ``"transposed"`` (the paper's), ``"bilinear"`` or ``"nearest"``.

    Raises:
        CnnzooError: for an unknown upsampling mode or a depth below 1.
    """

    def __init__(
        self,
        num_classes: int = 21,
        in_channels: int = 3,
        width: int = 64,
        depth: int = 4,
        upsample: str = "transposed",
    ) -> None:
        super().__init__()
        if upsample not in UPSAMPLE_MODES:
            raise CnnzooError(f"unknown upsampling {upsample!r}; expected one of {UPSAMPLE_MODES}")
        if depth < 1:
            raise CnnzooError(f"depth must be at least 1, got {depth}")
        self.num_classes = num_classes
        self.depth = depth
        widths = [width * 2**i for i in range(depth + 1)]
        self.inc = DoubleConv(in_channels, widths[0])
        self.down = nn.ModuleList(
            nn.Sequential(nn.MaxPool2d(2), DoubleConv(widths[i], widths[i + 1]))
            for i in range(depth)
        )
        self.up = nn.ModuleList(
            UNetUp(widths[i + 1], widths[i], upsample) for i in reversed(range(depth))
        )
        self.classifier = nn.Conv2d(widths[0], num_classes, 1)
        # The contracting path's levels, shallow to deep (where explanations look).
        self.feature_info = FeatureInfo(
            [FeatureStage("inc", widths[0], 1)]
            + [FeatureStage(f"down.{i}", widths[i + 1], 2 ** (i + 1)) for i in range(depth)]
        )
        init_weights_kaiming(self)

    def forward(self, x: Tensor) -> Tensor:
        """Return per-pixel logits (N, num_classes, H, W) at the input's size."""
        h, w = x.shape[-2:]
        x = self.inc(pad_to_multiple(x, 2**self.depth))
        skips = [x]
        for down in self.down:
            x = down(x)
            skips.append(x)
        skips.pop()  # the bottom of the U is not a skip
        for up in self.up:
            x = up(x, skips.pop())
        return self.classifier(x)[..., :h, :w]


class EncoderUNet(nn.Module):
    """U-Net on a registered classifier's stages (one skip per stride the classifier has).

    Args:
        num_classes: classes predicted per pixel.
        in_channels: input image channels.
        backbone: a registered classifier with ``feature_info`` (``convnet``, ``resnet18``,
            ``vgg16_bn`` ...); load classification weights into ``self.backbone``.
        width: channels of the full-resolution stem (None: half the classifier's first
            stage, at least 8).
        upsample: ``"transposed"`` (the paper's 2x2 up-convolution), ``"bilinear"`` or
            ``"nearest"``.
        **backbone_kwargs: options of the backbone builder (e.g. ``widths=[32, 64, 128]``).

    Attributes:
        backbone: the :class:`~cnnzoo.models.features.FeatureExtractor`.
        stem: the stride-1 DoubleConv; ``up`` the expanding path, deepest level first.
        stride: the deepest map's reduction; inputs are zero-padded to a multiple of it.

    Raises:
        CnnzooError: for an unknown upsampling mode, or a backbone whose stage strides are
            not powers of two.
    """

    def __init__(
        self,
        num_classes: int = 21,
        in_channels: int = 3,
        backbone: str = "convnet",
        width: int | None = None,
        upsample: str = "transposed",
        **backbone_kwargs: Any,
    ) -> None:
        super().__init__()
        if upsample not in UPSAMPLE_MODES:
            raise CnnzooError(f"unknown upsampling {upsample!r}; expected one of {UPSAMPLE_MODES}")
        self.num_classes = num_classes
        # Stride-1 stages (CIFAR ResNets') are left to the stem, which plays their part.
        reductions = sorted(set(stage_reductions(backbone, in_channels, **backbone_kwargs)) - {1})
        if not reductions or any(2 ** round(math.log2(r)) != r for r in reductions):
            raise CnnzooError(
                f"backbone {backbone!r} has stages at strides {reductions}; a U-Net encoder "
                "needs strides that are powers of two (2, 4, 8 ...), such as convnet's or "
                "resnet18's"
            )
        self.stride = reductions[-1]
        # Deepest first, as build_backbone names them: None, then 1/k of the deepest.
        wanted = [None] + [self.stride // r for r in reversed(reductions[:-1])]
        self.backbone = build_backbone(backbone, in_channels, wanted, **backbone_kwargs)
        info = self.backbone.feature_info
        skips = dict(zip(info.reduction(), info.channels(), strict=True))
        width = width or max(info.channels()[-1] // 2, 8)
        self.stem = DoubleConv(in_channels, width)
        skips[1] = width
        levels = []
        channels = skips[self.stride]
        for step in reversed(range(round(math.log2(self.stride)))):
            reduction = 2**step
            out = skips.get(reduction, max(channels // 2, width))
            levels.append(UNetUp(channels, out, upsample, skip_channels=skips.get(reduction, 0)))
            channels = out
        self.up = nn.ModuleList(levels)
        self.classifier = nn.Conv2d(channels, num_classes, 1)
        # The classifier's weights are its own (or loaded); only the new parts are initialised.
        for part in (self.stem, self.up, self.classifier):
            init_weights_kaiming(part)
        self.feature_info = FeatureInfo(
            [FeatureStage("stem", width, 1)]
            + [
                FeatureStage(f"backbone.model.{s.module}", s.channels, s.reduction)
                for s in reversed(list(info))
            ]
        )

    def forward(self, x: Tensor) -> Tensor:
        """Return per-pixel logits (N, num_classes, H, W) at the input's size."""
        h, w = x.shape[-2:]
        x = pad_to_multiple(x, self.stride)
        maps = self.backbone(x)  # deepest first
        by_stride = {1: self.stem(x)}
        by_stride.update(zip(self.backbone.feature_info.reduction(), maps, strict=True))
        y = maps[0]
        reduction = self.stride
        for level in self.up:
            reduction //= 2
            y = level(y, by_stride.get(reduction))
        return self.classifier(y)[..., :h, :w]


@register_model(
    task="segmentation",
    paper=RONNEBERGER_2015,
    input_size=(3, 128, 128),
    min_input_size=1,
    family="unet",
)
def unet(
    num_classes: int = 21,
    in_channels: int = 3,
    width: int | None = None,
    depth: int | None = None,
    upsample: str = "transposed",
    backbone: str | None = None,
    **backbone_kwargs: Any,
) -> nn.Module:
    """U-Net (Fig. 1) with 'same' padding: 4 levels, 64-1024 channels, skip concatenation.

    ``backbone`` (a classifier's name, e.g. ``convnet`` or ``resnet18``) replaces the
    contracting path by that classifier's stages, so it can start from classification
    weights (:class:`EncoderUNet`); ``width`` is
    then the full-resolution stem's width and the depth is the backbone's.

    Returns:
        :class:`UNet`, or :class:`EncoderUNet`
        with a backbone.

    Raises:
        CnnzooError: for ``depth`` or backbone options together with the wrong encoder, an
            unknown upsampling mode, or a backbone whose strides are not powers of two.
    """
    if backbone is None:
        if backbone_kwargs:
            raise CnnzooError(
                f"unet options {sorted(backbone_kwargs)} are backbone options: pass a "
                "backbone (e.g. backbone='convnet') or drop them"
            )
        return UNet(num_classes, in_channels, width or 64, depth or 4, upsample)
    if depth is not None:
        raise CnnzooError(
            f"unet depth={depth} with backbone {backbone!r}: the depth is the backbone's "
            "(one level per stage); drop depth"
        )
    return EncoderUNet(num_classes, in_channels, backbone, width, upsample, **backbone_kwargs)
