"""U-Net whose contracting path is a classifier's stages: the lecture's "initialize with a
network pre-trained on classification" applied to U-Net (as TernausNet did with VGG11, and
as segmentation_models_pytorch's ``Unet(encoder_name=...)`` does).

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

from torch import Tensor, nn

from cnnzoo.errors import CnnzooError
from cnnzoo.layers.upsample import UPSAMPLE_MODES
from cnnzoo.models.backbones import build_backbone, stage_reductions
from cnnzoo.models.base import FeatureInfo, FeatureStage, init_weights_kaiming
from cnnzoo.models.segmentation.encdec import pad_to_multiple
from cnnzoo.models.segmentation.unet import DoubleConv, UNetUp


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
