"""Dense prediction with and without downsampling inside the network.

The lecture's two first answers to semantic segmentation, built on the same contract as every
cnnzoo segmenter (``forward(x) -> (N, num_classes, H, W)`` at the input's size):

* :class:`FullResolutionFCN` (``fullres_fcn``): a fully convolutional net that never
  downsamples. Every layer works at H x W, so the receptive field grows by only two pixels per
  3x3 layer and memory and compute grow with H x W x depth — "impractical" beyond toy sizes,
  which is the point it makes.
* :class:`EncoderDecoder` (``encdec``): "downsampling and upsampling inside the network".
  An encoder (any registered classification backbone, through ``features_only``) shrinks the
  image to its deepest stage map; a decoder of learned upsampling steps (x2 each, then a
  3x3 conv-BN-ReLU) brings it back to full resolution for a 1x1 classifier. The upsampling is
  selectable: a transposed convolution (bilinear-initialised, as in Long, Shelhamer & Darrell,
  CVPR 2015, sec. 3.3), or fixed bilinear / nearest interpolation.

Odd sizes: ``encdec`` zero-pads the input on the bottom and right to a multiple of the
encoder's total stride, then crops the logits back to H x W.
"""

from __future__ import annotations

import math
from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from cnnzoo.errors import CnnzooError
from cnnzoo.layers import ConvBnAct
from cnnzoo.layers.upsample import UPSAMPLE_MODES, Upsample
from cnnzoo.models.backbones import build_backbone
from cnnzoo.models.base import FeatureInfo, FeatureStage, init_weights_kaiming
from cnnzoo.registry import register_model

LECTURE_ENCDEC = (
    "Long, Shelhamer & Darrell, Fully Convolutional Networks for Semantic Segmentation, "
    "CVPR 2015 (learned upsampling); Noh, Hong & Han, Learning Deconvolution Network for "
    "Semantic Segmentation, ICCV 2015 (encoder-decoder)"
)
LECTURE_FULLRES = (
    "Long, Shelhamer & Darrell, Fully Convolutional Networks for Semantic Segmentation, "
    "CVPR 2015 (a fully convolutional net, here without any downsampling)"
)


def pad_to_multiple(x: Tensor, multiple: int) -> Tensor:
    """Zero-pad ``x`` on the bottom and right so that H and W are multiples of ``multiple``."""
    h, w = x.shape[-2:]
    pad_h, pad_w = -h % multiple, -w % multiple
    return F.pad(x, (0, pad_w, 0, pad_h)) if pad_h or pad_w else x


class UpsampleStep(nn.Sequential):
    """One decoder step: upsample x2 (``mode``), then a 3x3 conv-BN-ReLU to ``out_channels``."""

    def __init__(self, in_channels: int, out_channels: int, mode: str = "transposed") -> None:
        super().__init__()
        self.up = Upsample(in_channels, 2, mode)
        self.conv = ConvBnAct(in_channels, out_channels, 3)


class EncoderDecoder(nn.Module):
    """Backbone encoder down to stride R, ``log2(R)`` :class:`UpsampleStep` back up, 1x1 head.

    Args:
        num_classes: classes predicted per pixel.
        in_channels: input image channels.
        backbone: registered classification model used as the encoder (its deepest stage).
        upsample: ``"transposed"``, ``"bilinear"`` or ``"nearest"``.
        decoder_width: channels after the first upsampling step (default: half the
            encoder's); each further step halves them, down to ``min_width``.
        min_width: the narrowest decoder step.
        **backbone_kwargs: options of the backbone builder (e.g. ``widths``).

    Raises:
        CnnzooError: for an unknown upsampling mode, or a backbone whose total stride is
            not a power of two.
    """

    def __init__(
        self,
        num_classes: int = 21,
        in_channels: int = 3,
        backbone: str = "resnet18",
        upsample: str = "transposed",
        decoder_width: int | None = None,
        min_width: int = 16,
        **backbone_kwargs: Any,
    ) -> None:
        super().__init__()
        if upsample not in UPSAMPLE_MODES:
            raise CnnzooError(f"unknown upsampling {upsample!r}; expected one of {UPSAMPLE_MODES}")
        self.num_classes = num_classes
        self.backbone = build_backbone(backbone, in_channels, (None,), **backbone_kwargs)
        channels = self.backbone.feature_info.channels()[-1]
        self.stride = self.backbone.feature_info.reduction()[-1]
        steps = round(math.log2(self.stride))
        if 2**steps != self.stride:
            raise CnnzooError(
                f"backbone {backbone!r} has total stride {self.stride}, not a power of two; "
                "pick a backbone that downsamples by 2 per stage"
            )
        width = decoder_width or max(channels // 2, min_width)
        decoder: list[nn.Module] = []
        for _ in range(steps):
            decoder.append(UpsampleStep(channels, width, upsample))
            channels, width = width, max(width // 2, min_width)
        self.decoder = nn.Sequential(*decoder)
        self.classifier = nn.Conv2d(channels, num_classes, 1)
        # Only Conv2d/BN: the transposed convs (not Conv2d) keep their bilinear start.
        init_weights_kaiming(self.decoder)
        init_weights_kaiming(self.classifier)

    def forward(self, x: Tensor) -> Tensor:
        """Return per-pixel logits (N, num_classes, H, W) at the input's size."""
        h, w = x.shape[-2:]
        features = self.backbone(pad_to_multiple(x, self.stride))[-1]
        logits = self.classifier(self.decoder(features))
        return logits[..., :h, :w]


class FullResolutionFCN(nn.Module):
    """``depth`` 3x3 conv-BN-ReLU layers of ``width`` channels at full resolution, 1x1 head.

    No pooling, no stride: the receptive field is only ``2 * depth + 1`` pixels.
    """

    def __init__(
        self, num_classes: int = 21, in_channels: int = 3, depth: int = 6, width: int = 32
    ) -> None:
        super().__init__()
        if depth < 1:
            raise CnnzooError(f"depth must be at least 1, got {depth}")
        self.num_classes = num_classes
        self.features = nn.Sequential(
            *(ConvBnAct(in_channels if i == 0 else width, width, 3) for i in range(depth))
        )
        self.classifier = nn.Conv2d(width, num_classes, 1)
        self.feature_info = FeatureInfo(
            FeatureStage(f"features.{i}", width, 1) for i in range(depth)
        )
        init_weights_kaiming(self)

    def forward(self, x: Tensor) -> Tensor:
        """Return per-pixel logits (N, num_classes, H, W); every layer keeps H x W."""
        return self.classifier(self.features(x))


@register_model(
    task="segmentation",
    paper=LECTURE_ENCDEC,
    input_size=(3, 128, 128),
    min_input_size=1,
    family="encdec",
)
def encdec(
    num_classes: int = 21,
    in_channels: int = 3,
    backbone: str = "resnet18",
    upsample: str = "transposed",
    decoder_width: int | None = None,
    min_width: int = 16,
    **backbone_kwargs: Any,
) -> EncoderDecoder:
    """Encoder-decoder: a registered backbone down, learned x2 upsampling steps back up."""
    return EncoderDecoder(
        num_classes, in_channels, backbone, upsample, decoder_width, min_width, **backbone_kwargs
    )


@register_model(
    task="segmentation",
    paper=LECTURE_FULLRES,
    input_size=(3, 128, 128),
    min_input_size=1,
    family="encdec",
)
def fullres_fcn(
    num_classes: int = 21, in_channels: int = 3, depth: int = 6, width: int = 32
) -> FullResolutionFCN:
    """The "impractical" fully convolutional net with no downsampling at all."""
    return FullResolutionFCN(num_classes, in_channels, depth, width)
