"""PSPNet: a pyramid pooling module on a classification backbone, with an auxiliary head.

Zhao, Shi, Qi, Wang, Jia, "Pyramid Scene Parsing Network", CVPR 2017 (Fig. 3, Sec. 3.3-3.4).
The deepest backbone map goes through :class:`~cnnzoo.layers.PyramidPooling` (bins 1, 2, 3,
6), then a 3x3 conv-BN-ReLU, dropout and a 1x1 classifier; the logits are upsampled
bilinearly to the input size. An auxiliary classifier on the stage before the last (Sec.
3.4, "res4b22") adds deep supervision in training; the paper weights its loss by 0.4, which
is the training task's business, not the model's.

The paper's backbone is a dilated ResNet: the strides of its last two stages are replaced
by dilation 2 and 4 (output stride 8), and the auxiliary head reads the stage before the
last ("res4b22", also stride 8). ``dilated=True`` builds exactly that, for ResNet backbones
(``replace_stride_with_dilation=(False, True, True)``, see
:class:`~cnnzoo.models.classification.resnet.ResNet`); other backbones cannot be dilated.

Departure from the paper, by default: ``dilated=False`` keeps the backbone's strides, so the
pyramid reads the stride-32 map (stride 16 for the auxiliary head). Its last two stages then
run on 1/16 and 1/64 of the pixels, about 4x cheaper on CPU, at the cost of coarser maps.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from cnnzoo.layers import ConvBnAct, PyramidPooling
from cnnzoo.models.backbones import build_backbone
from cnnzoo.models.base import AuxOutput
from cnnzoo.registry import register_model

ZHAO_2017 = "Zhao, Shi, Qi, Wang, Jia, Pyramid Scene Parsing Network, CVPR 2017"


class SegmentationHead(nn.Sequential):
    """3x3 conv-BN-ReLU, dropout, 1x1 classifier: PSPNet's final (and auxiliary) layers."""

    def __init__(
        self, in_channels: int, hidden_channels: int, num_classes: int, dropout: float
    ) -> None:
        super().__init__()
        self.conv = ConvBnAct(in_channels, hidden_channels, 3)
        self.dropout = nn.Dropout2d(dropout)
        self.classifier = nn.Conv2d(hidden_channels, num_classes, 1)


class PSPNet(nn.Module):
    """Backbone, pyramid pooling, head; an auxiliary head on the stage before the last.

    Args:
        num_classes: number of segmentation classes.
        in_channels: channels of the input image.
        backbone: name of a registered classifier whose deepest stage has a stage at half
            its stride before it (``resnet18``, ``vgg16_bn``, ...).
        bins: the pyramid's grid sizes.
        head_channels: width of the 3x3 convolution after the pyramid (512 in the paper).
        aux: build the auxiliary head; in training mode ``forward`` then returns an
            :class:`AuxOutput`.
        aux_channels: width of the auxiliary head's 3x3 convolution (256 in the paper's code).
        dropout: dropout before each classifier (0.1 in the paper's code).
        dilated: dilate the backbone's last two stages instead of striding them, as the
            paper does (output stride 8 for the pyramid and the auxiliary head); ResNet
            backbones only. False (default): stride 32 and 16, about 4x cheaper.
        **backbone_kwargs: options of the backbone builder.

    Attributes:
        backbone: the :class:`~cnnzoo.models.features.FeatureExtractor`; load
            classification weights into it. ``backbone.feature_info`` gives the stride of
            the pyramid's input (first) and of the auxiliary head's input (second).

    Raises:
        CnnzooError: if the backbone lacks the needed stages, or with ``dilated=True`` if
            it is not a ResNet.
    """

    def __init__(
        self,
        num_classes: int = 21,
        in_channels: int = 3,
        backbone: str = "resnet18",
        bins: Sequence[int] = (1, 2, 3, 6),
        head_channels: int = 512,
        aux: bool = True,
        aux_channels: int = 256,
        dropout: float = 0.1,
        dilated: bool = False,
        **backbone_kwargs: Any,
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.dilated = dilated
        strides = (None, 2) if aux else (None,)
        self.backbone = build_backbone(backbone, in_channels, strides, dilated, **backbone_kwargs)
        channels = self.backbone.feature_info.channels()
        self.ppm = PyramidPooling(channels[0], bins)
        self.head = SegmentationHead(self.ppm.out_channels, head_channels, num_classes, dropout)
        self.aux_head = (
            SegmentationHead(channels[1], aux_channels, num_classes, dropout) if aux else None
        )

    def forward(self, x: Tensor) -> Tensor | AuxOutput:
        """Return logits (N, num_classes, H, W) at the input's size; in training mode with
        ``aux``, an :class:`AuxOutput` whose ``aux`` holds the auxiliary logits (same size)."""
        size = x.shape[-2:]
        maps = self.backbone(x)
        logits = self.head(self.ppm(maps[0]))
        logits = F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
        if self.aux_head is None or not self.training:
            return logits
        aux = F.interpolate(self.aux_head(maps[1]), size=size, mode="bilinear", align_corners=False)
        return AuxOutput(logits, (aux,))


@register_model(
    task="segmentation",
    paper=ZHAO_2017,
    input_size=(3, 128, 128),
    min_input_size=32,
    family="pspnet",
)
def pspnet(
    num_classes: int = 21,
    in_channels: int = 3,
    backbone: str = "resnet18",
    bins: Sequence[int] = (1, 2, 3, 6),
    head_channels: int = 512,
    aux: bool = True,
    aux_channels: int = 256,
    dropout: float = 0.1,
    dilated: bool = False,
    **backbone_kwargs: Any,
) -> PSPNet:
    """PSPNet with pyramid bins (1, 2, 3, 6) and an auxiliary head.

    ``dilated=True`` uses the paper's dilated ResNet (output stride 8); the default keeps
    the backbone's strides (32, aux 16). Raises CnnzooError for ``dilated=True`` with a
    backbone other than a ResNet.
    """
    return PSPNet(
        num_classes,
        in_channels,
        backbone,
        tuple(bins),
        head_channels,
        aux,
        aux_channels,
        dropout,
        dilated,
        **backbone_kwargs,
    )
