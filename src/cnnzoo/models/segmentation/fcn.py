"""Fully convolutional networks: FCN-32s, FCN-16s and FCN-8s.

Long, Shelhamer, Darrell, "Fully Convolutional Networks for Semantic Segmentation",
CVPR 2015 (Fig. 3, Sec. 4.2). A 1x1 "score" convolution turns the coarsest backbone map
(pool5, stride 32) into class scores; FCN-16s adds scores from pool4 (stride 16) after a 2x
learned upsampling, FCN-8s adds pool3 (stride 8) too; a final learned upsampling (x32, x16
or x8) brings the scores to the input size, where they are cropped to it.

Any registered classifier with ``feature_info`` serves as backbone: the score layers read
the deepest stage and the stages at half and a quarter of its stride (pool5/pool4/pool3 for
VGG and ResNet, strides 32/16/8). Departure from the paper: the convolutionalised fc6/fc7
of VGG are not kept (the backbone's classifier is dropped by ``features_only``), so the
stride-32 score layer reads the last convolutional stage directly.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from cnnzoo.errors import CnnzooError
from cnnzoo.layers.upsample import Upsample
from cnnzoo.models.backbones import build_backbone
from cnnzoo.registry import register_model

LONG_2015 = (
    "Long, Shelhamer, Darrell, Fully Convolutional Networks for Semantic Segmentation, CVPR 2015"
)


def crop_to(x: Tensor, size: Sequence[int]) -> Tensor:
    """Return ``x`` cropped (top-left aligned, as the paper's crop layers) to ``size``,
    or bilinearly resized to it where it is smaller."""
    h, w = size
    if x.shape[-2] >= h and x.shape[-1] >= w:
        return x[..., :h, :w]
    return F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False)


class FCN(nn.Module):
    """Backbone + 1x1 score layers + upsampling with skip fusion (Fig. 3).

    Args:
        num_classes: number of segmentation classes.
        in_channels: channels of the input image.
        backbone: name of a registered classifier.
        skips: 0 (FCN-32s), 1 (FCN-16s) or 2 (FCN-8s) finer stages fused in.
        upsample: ``"transposed"`` (the paper's learned, bilinear-initialised
            "deconvolution"), or fixed ``"bilinear"`` / ``"nearest"`` interpolation.
        **backbone_kwargs: options of the backbone builder.

    Attributes:
        backbone: the :class:`FeatureExtractor`; load classification weights into it.
        score: 1x1 scores of the coarsest map; ``score_skips`` those of the finer maps.
        up_skips: the 2x upsamplings before each fusion; ``up_final`` the last one.
    """

    def __init__(
        self,
        num_classes: int = 21,
        in_channels: int = 3,
        backbone: str = "vgg16_bn",
        skips: int = 2,
        upsample: str = "transposed",
        **backbone_kwargs: Any,
    ) -> None:
        super().__init__()
        if skips not in (0, 1, 2):
            raise CnnzooError(f"skips must be 0 (32s), 1 (16s) or 2 (8s), got {skips!r}")
        self.num_classes = num_classes
        strides = (None, 2, 4)[: skips + 1]
        self.backbone = build_backbone(backbone, in_channels, strides, **backbone_kwargs)
        channels = self.backbone.feature_info.channels()
        reductions = self.backbone.feature_info.reduction()
        self.score = nn.Conv2d(channels[0], num_classes, 1)
        self.score_skips = nn.ModuleList(nn.Conv2d(c, num_classes, 1) for c in channels[1:])
        # Sec. 4.2: the skip score layers start at zero, so training begins from the coarser
        # net's prediction and the finer layers only add to it.
        for layer in self.score_skips:
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)
        self.up_skips = nn.ModuleList(Upsample(num_classes, 2, upsample) for _ in range(skips))
        self.up_final = Upsample(num_classes, reductions[-1], upsample)

    def _up(self, up: Upsample, x: Tensor, size: Sequence[int]) -> Tensor:
        # A transposed convolution overshoots odd sizes: crop as the paper does. Fixed
        # interpolation goes to the size directly.
        if up.mode == "transposed":
            return crop_to(up(x), size)
        return up(x, tuple(size))

    def forward(self, x: Tensor) -> Tensor:
        """Return logits (N, num_classes, H, W) at the input's size."""
        maps = self.backbone(x)
        scores = self.score(maps[0])
        for up, score, skip in zip(self.up_skips, self.score_skips, maps[1:], strict=True):
            scores = self._up(up, scores, skip.shape[-2:]) + score(skip)
        return self._up(self.up_final, scores, x.shape[-2:])


def _register(name: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    return register_model(
        task="segmentation",
        paper=LONG_2015,
        input_size=(3, 128, 128),
        min_input_size=32,
        family="fcn",
        name=name,
    )


@_register("fcn32s")
def fcn32s(
    num_classes: int = 21,
    in_channels: int = 3,
    backbone: str = "vgg16_bn",
    upsample: str = "transposed",
    **backbone_kwargs: Any,
) -> FCN:
    """FCN-32s: scores of the stride-32 map, upsampled 32x in one step."""
    return FCN(num_classes, in_channels, backbone, 0, upsample, **backbone_kwargs)


@_register("fcn16s")
def fcn16s(
    num_classes: int = 21,
    in_channels: int = 3,
    backbone: str = "vgg16_bn",
    upsample: str = "transposed",
    **backbone_kwargs: Any,
) -> FCN:
    """FCN-16s: stride-32 scores upsampled 2x plus pool4 scores, then upsampled 16x."""
    return FCN(num_classes, in_channels, backbone, 1, upsample, **backbone_kwargs)


@_register("fcn8s")
def fcn8s(
    num_classes: int = 21,
    in_channels: int = 3,
    backbone: str = "vgg16_bn",
    upsample: str = "transposed",
    **backbone_kwargs: Any,
) -> FCN:
    """FCN-8s: FCN-16s's fused scores upsampled 2x plus pool3 scores, then upsampled 8x."""
    return FCN(num_classes, in_channels, backbone, 2, upsample, **backbone_kwargs)
